"""Evaluating any predicate on the held-out store: where it holds, its token-level counts in
a half, and its verdict on example windows."""

from __future__ import annotations

import numpy as np

from sae.labels.detection import FuzzSample, Sample, detection_scores, fuzzing_scores, token_scores
from sae.labels.heldout import Split
from sae.labels.positions import PositionTable
from sae.labels.predicates import COMPOUND, Predicate


class PredicateScorer:
    def __init__(self, table: PositionTable, split: Split):
        self.table, self.split = table, split
        self.usable = [split.usable(0), split.usable(1)]
        self.n = [len(u) for u in self.usable]
        self._base: dict[str, np.ndarray] = {}
        self._ids: dict[Predicate, np.ndarray] = {}

    def base(self, family: str) -> np.ndarray:
        """"2 n_values": how many usable positions of each half take each value."""
        if family not in self._base:
            f = self.table.families[family]
            out = np.zeros((2, f.n_values), np.int64)
            for h in (0, 1):
                v = f.values[self.usable[h]]
                out[h] = np.bincount(v[v >= 0], minlength=f.n_values)
            self._base[family] = out
        return self._base[family]

    def ids(self, p: Predicate) -> np.ndarray:
        if p not in self._ids:
            if len(self._ids) > 100_000:
                self._ids.clear()
            ids = self.table.encode_values(p.family, list(p.values))
            self._ids[p] = np.unique(ids[ids >= 0])
        return self._ids[p]

    def holds(self, p: Predicate, positions: np.ndarray) -> np.ndarray:
        """Whether p holds at each of the flattened positions."""
        if p.kind == "and":
            return self.holds(p.parts[0], positions) & self.holds(p.parts[1], positions)
        if p.kind == "or":
            return self.holds(p.parts[0], positions) | self.holds(p.parts[1], positions)
        fam = self.table.families[p.family]
        lut = np.zeros(fam.n_values + 1, bool)  # the last entry answers value -1 (undefined)
        lut[self.ids(p)] = True
        return lut[fam.values[positions]]

    def n_pred(self, p: Predicate, h: int) -> int:
        """Usable positions of half h where p holds."""
        if p.kind in COMPOUND:
            return int(self.holds(p, self.usable[h]).sum())
        return int(self.base(p.family)[h][self.ids(p)].sum())

    def token(self, p: Predicate, fire_pos: np.ndarray, h: int) -> dict[str, float]:
        """Token-level scores in half h, given the feature's firing positions there."""
        tp = int(self.holds(p, fire_pos).sum())
        return token_scores(tp, self.n_pred(p, h), len(fire_pos), self.n[h])

    def window_verdicts(self, p: Predicate, sample: Sample, h: int) -> np.ndarray:
        """Whether p holds at some usable position of each sampled window."""
        return (self.holds(p, sample.positions) & sample.usable).any(1)

    def detection(self, p: Predicate, sample: Sample, h: int) -> dict[str, float]:
        return detection_scores(self.window_verdicts(p, sample, h), sample)

    def weighted_ba(self, p: Predicate, sample: Sample, h: int) -> float:
        """Balanced accuracy with the sample's weights (each decile equal): the training criterion."""
        v = self.window_verdicts(p, sample, h)
        return float(0.5 + (np.where(sample.active, sample.weight, -sample.weight) * v).sum())

    def fuzzing(self, p: Predicate, fuzz: FuzzSample) -> dict[str, float]:
        held = self.holds(p, fuzz.positions) & fuzz.marked
        return fuzzing_scores(held.sum(1) / np.maximum(fuzz.marked.sum(1), 1), fuzz)
