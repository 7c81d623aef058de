"""Find features in a feature index.

- `by_current_token(index, " stars")`: features that fire on that token;
- `by_upcoming_token(index, " astronomer", offset=1)`: features that fire `offset` tokens
  before the token appears (the lookahead search), ranked by precision: the fraction of
  the feature's firings followed by it (for one token and offset this orders features as
  lift does, the base rate being the same for all);
- `by_output_token(index, " an")`: features whose decoder direction boosts the token's logit;
- `by_label(labels, "astronomy")`: features whose annotation matches a text;
- `neighbours(index, 17)`: features whose decoder directions are closest to feature 17's.

A token is given by id or by its exact text, leading space included (`index.token_ids`
says which ids a text names; all of them are searched together). A word that is several
tokens is searched on its first piece: `first_piece(index, " astronomer", tokenizer)` splits
it (with the model's tokenizer, `model_tokenizer(spec)`, or else greedily on the index's
vocabulary) and says so; `no_hits_sentence` explains an empty result with its numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from sae.errors import SaexError
from sae.index.reader import FeatureIndex

RANKS = ("precision", "recall", "lift", "count", "f1")


# --------------------------------------------------------------------------- words of several tokens


@dataclass
class Piece:
    """What a token search runs on: `query` (an id, or a token's exact text) and, for a word
    of several tokens, the pieces it splits into and a note saying the first one is used."""

    text: str
    query: int | str
    ids: list[int]
    pieces: list[str]
    note: str | None = None


def model_tokenizer(spec: str | None):
    """The tokenizer of a model spec loaded alone (no weights), from local files only: the
    built-in model's cached folder, a model folder, a .gguf file, or the HF cache for a hub
    id. None when it cannot be had that way (callers fall back on the index's vocabulary)."""
    if not spec:
        return None
    try:
        from pathlib import Path

        from transformers import AutoTokenizer

        from sae.data.models import _BUILTIN
        from sae.fsutil import cache_dir

        if spec.lower() in _BUILTIN:
            folder = cache_dir() / "models" / spec.lower() / "hf"
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True) \
                if (folder / "saex_source.json").exists() else None
        path = Path(spec).expanduser()
        if spec.endswith(".gguf") and path.is_file():
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else spec, local_files_only=True)
    except Exception:  # no local tokenizer files: transformers raises many types
        return None


def _greedy_pieces(index: FeatureIndex, text: str) -> list[int]:
    """Split text into the longest vocabulary strings that prefix what is left."""
    by_text = index._ids_by_text
    longest = max((len(t) for t in by_text), default=0)
    ids, rest = [], text
    while rest:
        for n in range(min(len(rest), longest), 0, -1):
            if rest[:n] in by_text:
                ids.append(by_text[rest[:n]][0])
                rest = rest[n:]
                break
        else:
            raise SaexError(f"{text!r} cannot be split into tokens of the index's vocabulary (at {rest[:10]!r})",
                            "give a token's exact text or its id")
    return ids


def first_piece(index: FeatureIndex, text: int | str, tokenizer=None) -> Piece:
    """The token to search for `text`: itself when it is one token (an id, or a token's exact
    text); else the first of the tokens it splits into, with a note such as "' astronomer' is
    2 tokens (' astr', 'onomer'); searching on the first, ' astr'". Split by `tokenizer` (the
    model's: what the model reads) when given, else greedily by the longest vocabulary string
    that prefixes what is left (which may differ from the model's split: the note says so)."""
    if isinstance(text, (int, np.integer)):
        ids = index.token_ids(int(text))
        return Piece(str(text), ids[0], ids, [index.text(ids[0])])
    if not text:
        raise SaexError("no token given", "type a word or token (leading space included), or a token id")
    if text in index._ids_by_text:
        return Piece(text, text, index.token_ids(text), [text])
    if tokenizer is not None:
        ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]
        how = "by the model's tokenizer"
        if not ids or max(ids) >= index.vocab_size:
            raise SaexError(f"the tokenizer turns {text!r} into {ids}, outside this index's vocabulary",
                            "check that the index was built for this model")
    else:
        ids = _greedy_pieces(index, text)
        how = "by the index's vocabulary, longest piece first: the model's tokenizer may split it differently"
    pieces = [index.text(i) for i in ids]
    if len(ids) == 1:
        return Piece(text, ids[0], ids, pieces, f"{text!r} is the token {pieces[0]!r} (id {ids[0]})")
    note = (f"{text!r} is {len(ids)} tokens ({', '.join(map(repr, pieces))}); searching on the first, "
            f"{pieces[0]!r} (split {how})")
    if not text.startswith(" ") and " " + text in index._ids_by_text:
        note += f". With its leading space, {' ' + text!r} is a single token"
    return Piece(text, ids[0], ids, pieces, note)


def no_hits_sentence(index: FeatureIndex, token: int | str, offset: int, min_count: int) -> str:
    """Why a token search found nothing, in one sentence with the numbers: how often the
    token occurs at that offset in the indexed text, against the minimum count."""
    ids = index.token_ids(token)
    name = repr(index.text(ids[0]))
    j = index.offsets.index(offset) if offset in index.offsets else None
    if j is None:
        return f"offset {offset} is not in this index (it has {index.offsets})"
    n = int(index.array("token_count")[j][ids].sum())
    stored = int(index.manifest["settings"]["min_pair_count"])
    where = (f"in the {index.tokens_indexed:,} indexed tokens" if offset == 0 else
             f"at distance {offset} after an indexed token ({index.tokens_indexed:,} indexed tokens)")
    times = "once" if n == 1 else f"{n:,} times"
    if n == 0:
        return (f"{name} never occurs {where}, so no feature can be found for it; index more text "
                f"(e.g. the training store: saex index RUN --store STORE --out RUN/index-train).")
    before = "on it" if offset == 0 else f"{offset} token{'s' if offset > 1 else ''} before it"
    rule = (f"a feature needs to fire {before} at least {min_count} times to be listed (the index stores pairs "
            f"seen at least {stored} times)")
    if n < min_count:
        return f"{name} occurs only {times} {where}: fewer than the minimum, since {rule}."
    return f"{name} occurs {times} {where}, but no feature passes the minimum: {rule}."


@dataclass
class Hit:
    """One search result. For token searches: count = co-occurrences, precision = count /
    the feature's firings (with room for the offset), recall = count / occurrences of the
    token (at that offset), lift = precision / the token's base rate."""

    feature: int
    score: float
    count: int | None = None
    precision: float | None = None
    recall: float | None = None
    lift: float | None = None
    detail: dict = field(default_factory=dict)


def _co_occurrence(index: FeatureIndex, token: int | str, offset: int, min_count: int, rank: str,
                   top: int) -> list[Hit]:
    if rank not in RANKS:
        raise SaexError(f"unknown ranking {rank!r}", f"use one of {', '.join(RANKS)}")
    stored = int(index.manifest["settings"]["min_pair_count"])
    if min_count < stored:
        raise SaexError(f"min_count {min_count} is below the index's min_pair_count ({stored}): rarer pairs "
                        "were not stored", f"use min_count >= {stored}, or rebuild with --min-pair-count {min_count}")
    ids = index.token_ids(token)
    j = index.offsets.index(offset) if offset in index.offsets else None
    if j is None:
        raise SaexError(f"offset {offset} is not in this index (it has {index.offsets})",
                        f"rebuild with --lookahead {offset} or more")
    feats, counts = [], []
    for t in ids:
        f, c = index.pairs(offset, t)
        feats.append(f.astype(np.int64))
        counts.append(c)
    f, c = np.concatenate(feats), np.concatenate(counts)
    if len(ids) > 1:  # the same text under several ids: add their counts up
        uniq, inv = np.unique(f, return_inverse=True)
        f, c = uniq, np.bincount(inv, weights=c).astype(np.int64)
    ok = c >= min_count
    f, c = f[ok], c[ok]
    fires = index.array("fires_at")[j][f]
    occurrences = int(index.array("token_count")[j][ids].sum())
    positions = int(index.array("positions_at")[j])
    precision = c / np.maximum(fires, 1)
    recall = c / max(occurrences, 1)
    lift = precision / max(occurrences / max(positions, 1), 1e-300)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
    score = {"precision": precision, "recall": recall, "lift": lift, "count": c.astype(float), "f1": f1}[rank]
    order = np.lexsort((f, -c, -score))[:top]  # ties: more evidence first, then lower id
    return [Hit(int(f[i]), float(score[i]), int(c[i]), float(precision[i]), float(recall[i]), float(lift[i]),
                {"offset": offset, "token_occurrences": occurrences, "feature_fires": int(fires[i])})
            for i in order]


def by_upcoming_token(index: FeatureIndex, token: int | str, offset: int = 1, top: int = 20, min_count: int = 3,
                      rank: str = "precision") -> list[Hit]:
    """Features that fire `offset` tokens before `token` appears (e.g. one token before
    " astronomer"), best first; pairs seen fewer than `min_count` times are ignored."""
    if offset < 1:
        raise SaexError(f"offset must be at least 1 for an upcoming token, got {offset}",
                        "use by_current_token for the token a feature fires on")
    return _co_occurrence(index, token, offset, min_count, rank, top)


def by_current_token(index: FeatureIndex, token: int | str, top: int = 20, min_count: int = 3,
                     rank: str = "f1") -> list[Hit]:
    """Features that fire on `token`. The default rank, F1 of precision (share of the
    feature's firings on this token) and recall (share of the token's occurrences on which
    it fires), favours features both specific to the token and reliable on it."""
    return _co_occurrence(index, token, 0, min_count, rank, top)


def by_output_token(index: FeatureIndex, token: int | str, top: int = 20) -> list[Hit]:
    """Features whose decoder direction, through the final norm and unembedding, raises
    `token`'s logit most (relative to the vocabulary mean; see sae.index.output_effects)."""
    ids = index.token_ids(token)
    rows = [index.output_features(t) for t in ids]
    feats = np.concatenate([r[0] for r in rows]).astype(np.int64)
    vals = np.concatenate([r[1] for r in rows])
    best: dict[int, float] = {}
    for f, v in zip(feats.tolist(), vals.tolist()):
        best[f] = max(v, best.get(f, -np.inf))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [Hit(f, v, detail={"tokens": ids}) for f, v in ranked]


def neighbours(index: FeatureIndex, feature: int, top: int = 10) -> list[Hit]:
    """The features whose decoder directions have the highest cosine with `feature`'s."""
    ids, cos = index.neighbours(feature)
    return [Hit(int(f), float(c)) for f, c in list(zip(ids, cos))[:top]]


Labels = Iterable[tuple[int, str]] | Callable[[], Iterable[tuple[int, str]]]


def by_label(labels: Labels, query: str, top: int = 20) -> list[Hit]:
    """Features whose label contains every word of `query` (case-insensitive).

    `labels`: (feature_id, label) pairs, or a callable returning them (e.g. a function of
    the annotation store, so this module does not depend on it). Score: 3 for a label equal
    to the query, 2 for one starting with it, 1 otherwise; ties by shorter label, then id."""
    words = query.lower().split()
    if not words:
        raise SaexError("empty label query", "give one or more words to look for")
    q = " ".join(words)
    hits = []
    for fid, label in (labels() if callable(labels) else labels):
        text = " ".join(str(label).lower().split())
        if all(w in text for w in words):
            score = 3.0 if text == q else 2.0 if text.startswith(q) else 1.0
            hits.append(Hit(int(fid), score, detail={"label": label}))
    hits.sort(key=lambda h: (-h.score, len(h.detail["label"]), h.feature))
    return hits[:top]
