"""Delphi's detection scoring with predicates in place of an LLM scorer, and token-level scores.

Detection (as EleutherAI's delphi samples it): the text is cut into example windows of 32
tokens. For one feature and one half, the *activating* windows (the feature fires at some
position) are sorted by their largest activation and cut into 10 deciles; 5 are drawn from
each decile (50), and 50 windows where the feature never fires are drawn at random. The
label predicts "active" for a window when its predicate holds at some position of it.
Balanced accuracy = (share of activating windows predicted active + share of non-activating
windows predicted inactive) / 2; precision and recall at the window level as delphi reports
them. Weak firings count as much as strong ones, as in delphi.

Token level: the predicate is the prediction and the firing (activation > 0) the truth at
every usable position of the half: precision = P(fires | predicate), recall = P(predicate |
fires), F1.

The draws depend only on (seed, feature, half), so any subset of features, in any order,
gets the same samples: a resumed run scores exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sae.labels.heldout import Firings, Split

DECILES = 10


@dataclass
class Sample:
    """Example windows of one feature in one half: `windows` (ids), `active` (the truth) and
    `weight` (each decile, and the non-activating set, weigh equally: half the total each)."""

    windows: np.ndarray
    active: np.ndarray
    weight: np.ndarray
    decile: np.ndarray
    positions: np.ndarray  # "n example_len" flattened positions of the windows
    usable: np.ndarray  # "n example_len": the position belongs to the sample's half


def window_maxima(split: Split, pos: np.ndarray, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(example windows where the feature fires, their largest activation)."""
    ex = split.example[pos]
    ok = ex >= 0
    ex, a = ex[ok], act[ok]
    if not len(ex):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.lexsort((-a, ex))
    ex, a = ex[order], a[order]
    first = np.r_[True, ex[1:] != ex[:-1]]
    return ex[first], a[first]


def draw(split: Split, pos: np.ndarray, act: np.ndarray, h: int, rng: np.random.Generator,
         per_decile: int, non_activating: int, min_examples: int, usable_examples: np.ndarray) -> Sample | None:
    """Delphi's detection sample of one feature in half h (None when there are too few windows)."""
    wins, mx = window_maxima(split, pos, act)
    keep = split.example_half[wins] == h
    wins, mx = wins[keep], mx[keep]
    pool = usable_examples[split.example_half[usable_examples] == h]
    non = np.setdiff1d(pool, wins, assume_unique=True)
    if len(wins) < min_examples or len(non) < min_examples:
        return None
    order = np.argsort(mx, kind="stable")
    chosen, dec, weight = [], [], []
    bins = [b for b in np.array_split(wins[order], DECILES) if len(b)]
    for i, b in enumerate(bins):
        pick = rng.choice(b, min(per_decile, len(b)), replace=False)
        chosen.append(pick)
        dec.append(np.full(len(pick), i))
        weight.append(np.full(len(pick), 0.5 / (len(bins) * len(pick))))
    neg = rng.choice(non, min(non_activating, len(non)), replace=False)
    windows = np.concatenate(chosen + [neg])
    P = split.positions_of(windows)
    return Sample(windows, np.r_[np.ones(len(windows) - len(neg), bool), np.zeros(len(neg), bool)],
                  np.concatenate(weight + [np.full(len(neg), 0.5 / len(neg))]),
                  np.concatenate(dec + [np.full(len(neg), -1)]), P, split.half[P] == h)


def detection_scores(pred_active: np.ndarray, sample: Sample) -> dict[str, float]:
    """Window-level balanced accuracy, precision, recall of predictions on a sample (unweighted
    within each class, as delphi counts)."""
    y, p = sample.active, np.asarray(pred_active, bool)
    tp = int((p & y).sum())
    recall = tp / max(int(y.sum()), 1)
    tnr = int((~p & ~y).sum()) / max(int((~y).sum()), 1)
    precision = tp / int(p.sum()) if p.any() else float("nan")
    return {"balanced_accuracy": (recall + tnr) / 2, "precision": precision, "recall": recall,
            "n_activating": int(y.sum()), "n_non_activating": int((~y).sum())}


def token_scores(tp: float, n_pred: float, n_fired: float, n: float) -> dict[str, float]:
    """Token-level precision, recall, F1 and balanced accuracy from counts (NaN where undefined)."""
    nan = float("nan")
    precision = tp / n_pred if n_pred > 0 else nan
    recall = tp / n_fired if n_fired > 0 else nan
    f1 = 2 * tp / (n_fired + n_pred) if n_fired + n_pred > 0 else nan
    tnr = (n - n_fired - n_pred + tp) / (n - n_fired) if n - n_fired > 0 else nan
    return {"f1": f1, "precision": precision, "recall": recall, "balanced_accuracy": (recall + tnr) / 2}


def feature_rng(seed: int, feature: int, h: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, feature, h, salt])


def firings_in(firings: Firings, split: Split, f: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    pos, act = firings.of(f)
    keep = split.half[pos] == h
    return pos[keep], act[keep]


@dataclass
class FuzzSample:
    """Delphi's fuzzing, offline: the activating windows of a detection sample, each read twice,
    once with the feature's own firing positions marked and once with as many other usable
    positions of the same window marked at random. Row i of `positions` is the window of
    reading i, `marked[i]` its marks, `correct[i]` whether they are the true firings."""

    positions: np.ndarray
    marked: np.ndarray
    correct: np.ndarray


def fuzz_sample(sample: Sample, fire_pos: np.ndarray, rng: np.random.Generator) -> FuzzSample | None:
    P, usable = sample.positions[sample.active], sample.usable[sample.active]
    true = np.isin(P, fire_pos) & usable
    other = usable & ~true
    n_true, n_other = true.sum(1), other.sum(1)
    ok = (n_true > 0) & (n_other > 0)
    if not ok.any():
        return None
    P, true, other = P[ok], true[ok], other[ok]
    k = np.minimum(n_true[ok], n_other[ok])
    # k random other positions per row: the k smallest random keys among the allowed ones
    keys = np.where(other, rng.random(other.shape), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    fake = other & (rank < k[:, None])
    n = len(P)
    return FuzzSample(np.concatenate([P, P]), np.concatenate([true, fake]),
                      np.r_[np.ones(n, bool), np.zeros(n, bool)])


def fuzzing_scores(holds_share: np.ndarray, fuzz: FuzzSample) -> dict[str, float]:
    """A reading is judged 'correctly marked' when the label holds at half or more of its marks."""
    p = np.asarray(holds_share) >= 0.5
    y = fuzz.correct
    recall = float((p & y).sum() / max(int(y.sum()), 1))
    tnr = float((~p & ~y).sum() / max(int((~y).sum()), 1))
    return {"balanced_accuracy": (recall + tnr) / 2, "recall": recall,
            "precision": float((p & y).sum() / p.sum()) if p.any() else float("nan")}
