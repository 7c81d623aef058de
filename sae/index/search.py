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
says which ids a text names; all of them are searched together).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from sae.errors import SaexError
from sae.index.reader import FeatureIndex

RANKS = ("precision", "recall", "lift", "count", "f1")


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
