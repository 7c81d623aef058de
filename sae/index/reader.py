"""Read a feature index (RUN/index/, written by `saex index`) lazily.

`FeatureIndex(run)` opens the files memory-mapped: `feature(i)` reads only feature i's
slices (a page of the explorer costs a few kilobytes of reads, whatever the SAE's size),
and the overview arrays (density, mean and max activation) are read when first asked for.
The layout is documented in docs/formats.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from sae.errors import SaexError
from sae.index.aligned import ARTICLE_OF
from sae.index.aligned import FILE as ALIGNED_FILE
from sae.runs.files import INDEX_DIR
from sae.runs.files import INDEX_MANIFEST_FILE as MANIFEST_FILE
from sae.statistics import onset, stats_from_moments

INDEX_FORMAT = 2
FEATURES_FILE = "features.safetensors"
SEARCH_FILE = "search.safetensors"
VOCAB_FILE = "vocab.json"


def index_dir(run: str | Path) -> Path:
    """RUN/index, or the folder itself when it is already an index folder."""
    p = Path(run).expanduser()
    return p if (p / MANIFEST_FILE).exists() and (p / FEATURES_FILE).exists() else p / INDEX_DIR


@dataclass
class Example:
    """A window of text around one firing: `tokens[center]` is the firing token."""

    window: int
    position: int  # of the firing token in its window
    value: float
    tokens: list[int]
    text: list[str]
    acts: list[float]  # the feature's activation at each token (0 = did not fire)
    center: int


@dataclass
class Band:
    """Examples from one activation-quantile band of the sampled firings (0 = highest)."""

    band: int
    low: float
    high: float
    examples: list[Example]


@dataclass
class TokenStat:
    """How often `token` sits `offset` positions after a firing of the feature.

    precision: fraction of the feature's firings (with room for the offset) followed by it;
    lift: precision / the token's base rate at that offset over all indexed positions."""

    token: int
    text: str
    count: int
    precision: float
    lift: float


@dataclass
class ArticleRow:
    """A feature's activation around one article (or one article form), per offset:
    n = occurrences with that offset inside the window on an indexed token, fired = how
    many of them the feature fired at, mean over all n (0 where it did not fire), lo/hi its
    95% interval (normal approximation; NaN with fewer than 2 occurrences)."""

    article: str
    forms: list[str]
    n: list[int]
    fired: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]


@dataclass
class AlignedProfile:
    """A feature's activation at offsets around " a" / " an" (0 = the article, -1 = the token
    whose output chooses it). `articles`: "a" and "an", each pooling its forms (" a" + " A",
    " an" + " An", those that are single tokens); `forms`: each form alone. Onsets: the
    earliest offset where one article's mean exceeds the other's beyond a one-sided z bound,
    Bonferroni-corrected over the offsets (None if never)."""

    offsets: list[int]
    articles: dict[str, ArticleRow]
    forms: dict[str, ArticleRow]
    onset_an_over_a: int | None
    onset_a_over_an: int | None


@dataclass
class Feature:
    """Everything the index holds about one feature."""

    id: int
    fires: int
    density: float
    mean_activation: float  # over the tokens where it fires
    max_activation: float
    hist_edges: np.ndarray
    hist_counts: np.ndarray
    top_examples: list[Example]
    bands: list[Band]
    boosted: list[tuple[int, str, float]]  # (token, text, output effect)
    suppressed: list[tuple[int, str, float]]
    neighbours: list[tuple[int, float]]  # (feature, decoder cosine)
    following: dict[int, list[TokenStat]] = field(default_factory=dict)  # offset -> by count
    following_by_lift: dict[int, list[TokenStat]] = field(default_factory=dict)  # offset -> by lift
    aligned: AlignedProfile | None = None  # None: the index has no article-aligned profiles (see aligned_note)


class FeatureIndex:
    """A complete feature index, read lazily."""

    def __init__(self, run: str | Path):
        from safetensors import safe_open

        self.path = index_dir(run)
        mpath = self.path / MANIFEST_FILE
        if not mpath.exists():
            partial = self.path.exists() and any(self.path.iterdir())
            raise SaexError(f"{Path(run)} has no complete feature index"
                            + (" (its build did not finish)" if partial else ""),
                            f"build it: saex index {run}" + (" (rerun to resume)" if partial else ""))
        try:
            self.manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SaexError(f"{mpath} is not readable JSON ({e})",
                            f"rebuild the index: saex index {run} --force yes") from None
        if self.manifest.get("format") != INDEX_FORMAT:
            raise SaexError(f"{self.path} has index format {self.manifest.get('format')}, "
                            f"this version reads {INDEX_FORMAT}",
                            f"rebuild it: saex index {run} --force yes")
        try:
            self._f = safe_open(str(self.path / FEATURES_FILE), framework="np")
            self._s = safe_open(str(self.path / SEARCH_FILE), framework="np")
        except Exception as e:
            raise SaexError(f"the feature index in {self.path} is damaged ({e})",
                            f"rebuild it: saex index {run} --force yes") from None
        self._cache: dict[str, np.ndarray] = {}
        self._a, self._a_small = None, {}
        if (self.path / ALIGNED_FILE).exists():
            try:
                self._a = safe_open(str(self.path / ALIGNED_FILE), framework="np")
            except Exception as e:
                raise SaexError(f"the feature index in {self.path} is damaged ({e})",
                                f"rebuild it: saex index {run} --force yes") from None
        self._run = run

    # ------------------------------------------------------------------ basics

    @property
    def d_sae(self) -> int:
        return int(self.manifest["d_sae"])

    @property
    def offsets(self) -> list[int]:
        return list(self.manifest["offsets"])

    @property
    def tokens_indexed(self) -> int:
        return int(self.manifest["tokens_indexed"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["model"]["vocab_size"])

    def array(self, name: str) -> np.ndarray:
        """A whole array (cached): e.g. density, fires, mean_activation, max_activation."""
        if name not in self._cache:
            src = self._f if name in self._f.keys() else self._s
            self._cache[name] = src.get_tensor(name)
        return self._cache[name]

    def _row(self, name: str, i: int, src=None) -> np.ndarray:
        return (src or self._f).get_slice(name)[i:i + 1][0]

    @property
    def aligned_note(self) -> str | None:
        """Why the index has no article-aligned profiles (None when it has them)."""
        if self._a is not None:
            return None
        entry = self.manifest.get("aligned")
        if entry is None:
            return (f"this index was built before article-aligned profiles existed: rebuild it with "
                    f"`saex index {self._run} --force yes`")
        return entry.get("note") or "this index has no article-aligned profiles"

    def aligned(self, i: int) -> AlignedProfile | None:
        """Feature i's activation profile around the articles (None: see `aligned_note`)."""
        if self._a is None:
            return None
        i = self._check(i)
        if not self._a_small:
            self._a_small.update({n: self._a.get_tensor(n) for n in ("aligned_offsets", "aligned_count")})
        offsets = self._a_small["aligned_offsets"].tolist()
        count = self._a_small["aligned_count"]  # "G O"
        fired, s, s2 = (self._a.get_slice(n)[i:i + 1][0] for n in ("aligned_fired", "aligned_sum", "aligned_sumsq"))
        names = list(self.manifest["aligned"]["forms"])

        def row(article, idx):
            st = stats_from_moments(count[idx].sum(0), fired[idx].sum(0), s[idx].sum(0), s2[idx].sum(0))
            return st, ArticleRow(article, [names[j] for j in idx], st["n"].tolist(), st["fired"].tolist(),
                                  *(np.round(st[k], 6).tolist() for k in ("mean", "lo", "hi")))

        forms = {name: row(name, [j])[1] for j, name in enumerate(names)}
        pooled = {art: row(art, [j for j, n in enumerate(names) if ARTICLE_OF[n] == art]) for art in ("a", "an")}
        return AlignedProfile(offsets, {k: v[1] for k, v in pooled.items()}, forms,
                              onset(pooled["an"][0], pooled["a"][0], offsets),
                              onset(pooled["a"][0], pooled["an"][0], offsets))

    def _search_slice(self, name: str, lo: int, hi: int) -> np.ndarray:
        return self._s.get_slice(name)[lo:hi]

    @cached_property
    def vocab(self) -> list[str]:
        """Token strings by id (as the tokenizer decodes each id alone)."""
        return json.loads((self.path / VOCAB_FILE).read_text())["tokens"]

    @cached_property
    def _ids_by_text(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.vocab):
            out.setdefault(s, []).append(i)
        return out

    def text(self, token: int) -> str:
        return self.vocab[token] if 0 <= token < len(self.vocab) else ""

    def token_ids(self, token: int | str) -> list[int]:
        """Ids of a token given as an id or as its exact text (e.g. " astronomer")."""
        if isinstance(token, (int, np.integer)):
            if not 0 <= int(token) < self.vocab_size:
                raise SaexError(f"token id {token} is outside the vocabulary (0..{self.vocab_size - 1})",
                                "give a token id of the model, or the token's text")
            return [int(token)]
        ids = self._ids_by_text.get(token, [])
        if not ids:
            near = [repr(s) for s in self.vocab if s.strip() and s.strip().lower() == token.strip().lower()][:5]
            raise SaexError(f"{token!r} is not a single token of {self.manifest['model']['spec']}",
                            "give one token's exact text, leading space included" +
                            (f"; close: {', '.join(near)}" if near else " (a word may be split into several tokens)"))
        return ids

    # ------------------------------------------------------------------ one feature

    def _check(self, i: int) -> int:
        if not 0 <= int(i) < self.d_sae:
            raise SaexError(f"feature {i} does not exist (this SAE has {self.d_sae})", f"give 0..{self.d_sae - 1}")
        return int(i)

    def _examples(self, prefix: str, i: int) -> list:
        vals, wins, poss = (self._row(f"{prefix}_{k}", i) for k in ("value", "window", "position"))
        toks, acts = self._row(f"{prefix}_tokens", i), self._row(f"{prefix}_acts", i)
        before = int(self.manifest["settings"].get("context_before", 10))

        def make(j) -> Example | None:
            if wins[j] < 0:
                return None
            ok = toks[j] >= 0
            t = toks[j][ok].tolist()
            first = int(np.argmax(ok))
            return Example(window=int(wins[j]), position=int(poss[j]), value=float(vals[j]), tokens=t,
                           text=[self.text(x) for x in t], acts=acts[j][ok].astype(float).tolist(),
                           center=before - first)

        return make, vals.shape

    def feature(self, i: int) -> Feature:
        """Feature i's page, read from its own slices only."""
        i = self._check(i)
        top_make, (K,) = self._examples("top", i)
        band_make, (B, S) = self._examples("band", i)
        lows, highs = self._row("band_low", i), self._row("band_high", i)
        bands = []
        for b in range(B):
            ex = [e for j in range(S) if (e := band_make((b, j))) is not None]
            if ex:
                bands.append(Band(b, float(lows[b]), float(highs[b]), ex))

        def toks(name):
            ids, vals = self._row(f"{name}_token", i), self._row(f"{name}_value", i)
            return [(int(t), self.text(int(t)), float(v)) for t, v in zip(ids, vals)]

        fires = int(self._row("fires", i))
        return Feature(
            id=i, fires=fires, density=float(self._row("density", i)),
            mean_activation=float(self._row("mean_activation", i)),
            max_activation=float(self._row("max_activation", i)),
            hist_edges=self.array("hist_edges"), hist_counts=self._row("hist", i),
            top_examples=[e for j in range(K) if (e := top_make(j)) is not None], bands=bands,
            boosted=toks("boost"), suppressed=toks("suppress"),
            neighbours=[(int(a), float(c)) for a, c in zip(self._row("neighbour", i), self._row("neighbour_cos", i))],
            following=self._profile("follow", i), following_by_lift=self._profile("follow_by_lift", i),
            aligned=self.aligned(i))

    def _profile(self, name: str, i: int) -> dict[int, list[TokenStat]]:
        ids, counts, lifts = (self._row(f"{name}_{k}", i) for k in ("token", "count", "lift"))
        fires_at = self.array("fires_at")[:, i]
        out = {}
        for j, d in enumerate(self.offsets):
            out[d] = [TokenStat(int(t), self.text(int(t)), int(c), float(c / max(fires_at[j], 1)), float(lf))
                      for t, c, lf in zip(ids[j], counts[j], lifts[j]) if t >= 0]
        return out

    # ------------------------------------------------------------------ search tables

    def neighbours(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, decoder cosines) of feature i's nearest neighbours, closest first."""
        i = self._check(i)
        return self._row("neighbour", i), self._row("neighbour_cos", i)

    def output_features(self, token: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, output effects) of the features that boost `token` most, best first."""
        return self._row("token_feature", int(token), self._s), self._row("token_feature_value", int(token), self._s)

    def pairs(self, offset: int, token: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, counts) of the features that fired `offset` tokens before `token`
        (pairs seen at least min_pair_count times)."""
        if offset not in self.offsets:
            raise SaexError(f"offset {offset} is not in this index (it has {self.offsets})",
                            f"rebuild with --lookahead {offset} or more")
        ptr = self._s.get_slice("pair_ptr")
        j = self.offsets.index(offset) * self.vocab_size + int(token)
        lo, hi = (int(x) for x in ptr[j:j + 2])
        return self._search_slice("pair_feature", lo, hi), self._search_slice("pair_count", lo, hi)
