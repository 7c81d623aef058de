"""Article-aligned activation profiles: every feature's mean activation at offsets
-before..+after around the article tokens " a" / " an" (and " A" / " An") of the indexed text.

Streamed with the rest of the index (`sae.index.stats.FeatureStats` calls `ArticleProfile.add`
on each chunk of whole windows). For each article form g, offset o and feature f it keeps

- `aligned_count` "G O": article occurrences whose position + o lies inside the same window
  and is an indexed (ordinary) position; the same for every feature;
- `aligned_fired`, `aligned_sum`, `aligned_sumsq` "F G O": of those, how many the feature
  fired at, and the sum and sum of squares of its activation there (0 where it did not fire).

Offset 0 is the article itself, -1 the token whose output chooses it. Positions outside the
window, special tokens and norm outliers are not counted (they are never encoded). Sums are
kept per form so that forms can be pooled by adding them up (`pooled`); the reader turns them
into means with a normal-approximation 95% interval (`sae.statistics.stats_from_moments`) and
finds the earliest offset at which one article's mean exceeds the other's beyond a
Bonferroni-corrected one-sided z bound (`sae.statistics.onset`, the lookahead report's statistic).
"""

from __future__ import annotations

import numpy as np

# The forms looked for, and the article each one counts for when forms are pooled.
FORMS = (" a", " an", " A", " An")
ARTICLE_OF = {" a": "a", " an": "an", " A": "a", " An": "an"}
REQUIRED = (" a", " an")
FILE = "aligned.safetensors"


def article_forms(tokenizer) -> tuple[dict[str, int], dict[str, str]]:
    """({form: token id} of the article forms that are single tokens, {form: why it was left
    out}). Empty ids when " a" or " an" is not a single token (the profile is then skipped)."""
    ids, left_out = {}, {}
    for form in FORMS:
        try:
            enc = list(tokenizer.encode(form, add_special_tokens=False))
        except Exception as e:  # a tokenizer that cannot encode it at all
            left_out[form] = f"the tokenizer cannot encode it ({type(e).__name__})"
            continue
        if len(enc) != 1:
            left_out[form] = f"{len(enc)} tokens {enc}"
        else:
            ids[form] = int(enc[0])
    if len(set(ids.values())) != len(ids):  # e.g. a lower-casing tokenizer: " A" is " a"
        seen: dict[int, str] = {}
        for form in list(ids):
            if ids[form] in seen:
                left_out[form] = f"the same token as {seen[ids[form]]!r}"
                del ids[form]
            else:
                seen[ids[form]] = form
    if any(f not in ids for f in REQUIRED):
        return {}, left_out
    return ids, left_out


class ArticleProfile:
    """The streaming sums (see the module docstring); `add` folds in one chunk of whole windows."""

    def __init__(self, d_sae: int, context_size: int, forms: dict[str, int], before: int = 8, after: int = 2):
        self.F, self.T = d_sae, context_size
        self.forms = list(forms)
        self.ids = np.array([forms[f] for f in self.forms], np.int64)
        self.offsets = np.arange(-before, after + 1)
        self._order = np.argsort(self.ids)

    def init_state(self) -> dict[str, np.ndarray]:
        G, NO, F = len(self.forms), len(self.offsets), self.F
        return {"aligned_count": np.zeros((G, NO), np.int64), "aligned_fired": np.zeros((F, G, NO), np.int64),
                "aligned_sum": np.zeros((F, G, NO), np.float64), "aligned_sumsq": np.zeros((F, G, NO), np.float64)}

    def add(self, state: dict, tok: np.ndarray, ordinary: np.ndarray, f: np.ndarray, p: np.ndarray,
            v: np.ndarray) -> None:
        """tok: the chunk's flat token ids (whole windows); ordinary: flat positions that were
        encoded; (f, p, v): firings (feature, flat position, activation)."""
        G, NO, F, T = len(self.forms), len(self.offsets), self.F, self.T
        N = len(tok)
        sorted_ids = self.ids[self._order]
        j = np.searchsorted(sorted_ids, tok)
        hit = (j < len(sorted_ids)) & (sorted_ids[np.minimum(j, len(sorted_ids) - 1)] == tok)
        a = np.flatnonzero(hit)
        if len(a) == 0:
            return
        g = self._order[j[a]]
        encoded = np.zeros(N, bool)
        encoded[ordinary] = True
        q = a[:, None] + self.offsets[None, :]  # "article offset"
        ok = (q >= 0) & (q < N) & (q // T == (a // T)[:, None])
        ok[ok] = encoded[q[ok]]
        go = (g[:, None] * NO + np.arange(NO)[None, :])[ok]
        q = q[ok]
        state["aligned_count"] += np.bincount(go, minlength=G * NO).reshape(G, NO)
        # Join the firings with the (position, form-offset) targets they land on.
        order = np.argsort(q, kind="stable")
        q, go = q[order], go[order]
        lo, hi = np.searchsorted(q, p, "left"), np.searchsorted(q, p, "right")
        n = hi - lo
        if not n.any():
            return
        src = np.repeat(np.arange(len(p)), n)
        start = np.repeat(np.cumsum(n) - n, n)
        tgt = lo[src] + np.arange(len(src)) - start
        key = np.asarray(f, np.int64)[src] * (G * NO) + go[tgt]
        val = np.asarray(v, np.float64)[src]
        size = F * G * NO
        state["aligned_fired"] += np.bincount(key, minlength=size).reshape(F, G, NO)
        state["aligned_sum"] += np.bincount(key, weights=val, minlength=size).reshape(F, G, NO)
        state["aligned_sumsq"] += np.bincount(key, weights=val * val, minlength=size).reshape(F, G, NO)

    def arrays(self, state: dict) -> dict[str, np.ndarray]:
        """What goes into aligned.safetensors."""
        out = {k: state[k] for k in ("aligned_count", "aligned_fired", "aligned_sum", "aligned_sumsq")}
        return out | {"aligned_offsets": self.offsets.astype(np.int64), "aligned_token": self.ids.copy()}

    def describe(self, left_out: dict[str, str]) -> dict:
        """The manifest's `aligned` entry."""
        return {"file": FILE, "offsets": self.offsets.tolist(),
                "forms": {f: int(i) for f, i in zip(self.forms, self.ids)},
                "articles": {art: [f for f in self.forms if ARTICLE_OF[f] == art] for art in ("a", "an")},
                "left_out": left_out, "note": None}
