"""Proposing labels from the proposal half: what sits beside a feature's firings, family by
family, and the offline explainer that turns it into candidate predicates.

Within a family the values are exclusive at a position, so a set's token-level counts are
sums: the F1-best set is a prefix of the values ordered by precision (`best_prefix`). The
detection-best set is grown greedily on a training sample of example windows drawn the
way detection scoring draws them (deciles and random non-activating windows), adding the
value that raises the weighted window-level balanced accuracy most, while it rises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sae.labels.detection import Sample
from sae.labels.positions import PositionTable
from sae.labels.predicates import Predicate

FAMILY_KIND = {"token@-2": ("token", -2), "token@-1": ("token", -1), "token@0": ("token", 0),
               "token@1": ("token", 1), "token@2": ("token", 2), "ngram2": ("ngram", 0), "ngram3": ("ngram", 0),
               "class@0": ("class", 0), "class@1": ("class", 1), "lexname": ("lexname", 0),
               "next_noun": ("next_noun", 0), "position": ("position", 0)}


@dataclass
class Candidates:
    """Values of one family beside a feature's firings in the proposal half, in order of
    precision: `counts[i]` firings with values[i] there, out of `base[i]` positions with it."""

    values: np.ndarray
    counts: np.ndarray
    base: np.ndarray


@dataclass
class FeatureEvidence:
    """What an explainer sees of one feature (proposal half only)."""

    feature: int
    fired: int
    positions: int
    families: dict[str, Candidates] = field(default_factory=dict)
    boosted: Candidates | None = None  # decoder's most-boosted tokens, in order of effect, counts at +1
    train: Sample | None = None  # example windows of the proposal half
    table: PositionTable | None = field(default=None, repr=False)
    firing_positions: np.ndarray | None = field(default=None, repr=False)


class Explainer(Protocol):
    """Proposes candidate labels for a feature from its proposal-half evidence. Every proposal
    is then chosen among and scored on held-out text the same way, whoever proposed it."""

    def propose(self, evidence: FeatureEvidence) -> list[Predicate]: ...


def best_prefix(c: np.ndarray, b: np.ndarray, fired: int, limit: int) -> int:
    """How many of the values, in the given order, maximise F1 = 2 sum(c) / (fired + sum(b));
    at most `limit`, at least 1."""
    cc, bb = np.cumsum(c[:limit]), np.cumsum(b[:limit])
    return int(np.argmax(2 * cc / np.maximum(fired + bb, 1))) + 1


def family_candidates(values: np.ndarray, base: np.ndarray, fire_pos: np.ndarray, min_count: int,
                      limit: int, min_precision: float = 0.0) -> Candidates | None:
    """The values a family takes at the firing positions, by precision (count breaks ties);
    only values where the feature fires at least `min_precision` of the time."""
    v = values[fire_pos]
    v = v[v >= 0]
    if not len(v):
        return None
    u, c = np.unique(v, return_counts=True)
    b = base[u]
    ok = (c >= min_count) & (c >= min_precision * b)
    u, c, b = u[ok], c[ok], b[ok]
    if not len(u):
        return None
    order = np.lexsort((-c, -c / np.maximum(b, 1)))[:limit]
    return Candidates(u[order], c[order], b[order])


def window_membership(table: PositionTable, family: str, sample: Sample, values: np.ndarray) -> np.ndarray:
    """"n_windows n_values" bool: value j occurs at a usable position of window i."""
    v = np.where(sample.usable, table.families[family].values[sample.positions], -1)
    order = np.argsort(values)
    sv = values[order]
    idx = np.clip(np.searchsorted(sv, v), 0, len(sv) - 1)
    hit = (sv[idx] == v) & (v >= 0)
    M = np.zeros((len(v), len(values)), bool)
    r = np.broadcast_to(np.arange(len(v))[:, None], v.shape)
    M[r[hit], order[idx[hit]]] = True
    return M


def greedy_detection(M: np.ndarray, sample: Sample, limit: int) -> list[int]:
    """Columns of M (in the order added) whose union maximises the weighted window-level
    balanced accuracy on the sample; empty when no value beats chance."""
    y, w = sample.active, sample.weight
    cover = np.zeros(len(y), bool)
    chosen: list[int] = []
    best = 0.5
    sign = np.where(y, w, -w)  # covering an activating window gains its weight, a quiet one loses it
    for _ in range(limit):
        gain = ((M & ~cover[:, None]) * sign[:, None]).sum(0)
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        if gain[j] <= 1e-9:
            break
        chosen.append(j)
        cover |= M[:, j]
        best += gain[j]
    return chosen


class StatisticalExplainer:
    """The offline explainer. Per family: the F1-best prefix of the values by precision, and
    the detection-best set grown on the training windows; the decoder's boosted tokens as a
    prefix in order of effect; at most `max_values` values (`max_positions` for positions)."""

    def __init__(self, max_values: int = 8, max_positions: int = 3):
        self.max_values, self.max_positions = max_values, max_positions

    def propose(self, ev: FeatureEvidence) -> list[Predicate]:
        out: list[Predicate] = []
        for fam, cand in ev.families.items():
            limit = self.max_positions if fam == "position" else self.max_values
            sets = [cand.values[:best_prefix(cand.counts, cand.base, ev.fired, limit)]]
            if ev.train is not None and fam != "position":
                M = window_membership(ev.table, fam, ev.train, cand.values)
                cols = greedy_detection(M, ev.train, limit)
                if cols:
                    sets.append(cand.values[cols])
            for ids in sets:
                p = make_predicate(ev.table, fam, ids)
                if p not in out:
                    out.append(p)
        if ev.boosted is not None and ev.boosted.counts.sum() > 0:
            c = ev.boosted
            n = best_prefix(c.counts, c.base, ev.fired, self.max_values)
            out.append(Predicate("boosts_output", tuple(int(t) for t in c.values[:n])))
        return out


def make_predicate(table: PositionTable, family: str, ids) -> Predicate:
    kind, offset = FAMILY_KIND[family]
    return Predicate(kind, tuple(table.natural_values(family, ids)), offset)
