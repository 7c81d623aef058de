"""sae/statistics.py against independent computations: brute-force enumeration of
relabellings with scipy's ranks, hand-computed Holm levels and empirical p-values, and the
calibration of the stratified clustered permutation test on null data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from sae.statistics import (
    Design,
    cluster_means,
    draws_for_level,
    empirical_p,
    frame_scores,
    holm,
    nearest_matches,
    permutation_test,
    stratified_auc,
)


def _brute_force_p(values: np.ndarray, frames, clusters, is_x_cluster: dict, block_of: dict) -> float:
    """Every relabelling of clusters within blocks, the statistic recomputed from scratch:
    scipy midranks within each frame / (frame size + 1), averaged per cluster, summed over
    the x-labelled clusters."""
    score = np.zeros(len(values))
    for fr in set(frames):
        rows = [i for i, f in enumerate(frames) if f == fr]
        score[rows] = rankdata(values[rows]) / (len(rows) + 1)
    names = list(dict.fromkeys(clusters))
    unit = {k: np.mean([score[i] for i, c in enumerate(clusters) if c == k]) for k in names}
    blocks = {}
    for k in names:
        blocks.setdefault(block_of[k], []).append(k)
    blocks = {b: ks for b, ks in blocks.items() if 0 < sum(is_x_cluster[k] for k in ks) < len(ks)}
    observed = sum(unit[k] for k in names if is_x_cluster[k] and block_of[k] in blocks)
    options = [[set(c) for c in itertools.combinations(ks, sum(is_x_cluster[k] for k in ks))]
               for ks in blocks.values()]
    hits = total = 0
    for choice in itertools.product(*options):
        t = sum(unit[k] for chosen in choice for k in chosen)
        hits += t >= observed - 1e-9
        total += 1
    return hits / total


def _small_case(seed: int):
    """Two blocks, clusters of one or two contexts in two frames, many exact zeros, and a
    third block with word clusters only (it must not count)."""
    rng = np.random.default_rng(seed)
    clusters, frames, block_of, is_x = [], [], {}, {}
    for b, (n_x, n_y) in {"riddle": (2, 4), "corpus": (3, 3), "user": (2, 0)}.items():
        for j in range(n_x + n_y):
            k = f"{b}{j}"
            block_of[k], is_x[k] = b, j < n_x
            for fr in ((f"{b}:called", f"{b}:known") if b == "riddle" else (f"{b}:text",)):
                clusters.append(k)
                frames.append(fr)
    values = np.maximum(rng.normal(0.2, 1.0, size=(len(clusters), 6)), 0)  # zero-inflated, like activations
    values[:, 5] = 0.0  # a latent that never fires: p must be 1
    return values, frames, clusters, is_x, block_of


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_p_equals_brute_force_enumeration(seed):
    values, frames, clusters, is_x, block_of = _small_case(seed)
    scores, names = cluster_means(frame_scores(torch.tensor(values), frames), clusters)
    design = Design([is_x[k] for k in names], [block_of[k] for k in names])
    assert design.relabellings == math.comb(6, 2) * math.comb(6, 3)
    got = permutation_test(scores, design, exact_limit=10_000)
    assert got["exact"] and got["min_p"] == pytest.approx(1 / 300)
    for f in range(values.shape[1]):
        want = _brute_force_p(values[:, f], frames, clusters, is_x, block_of)
        assert float(got["p"][f]) == pytest.approx(want, abs=1e-12)
    assert float(got["p"][5]) == 1.0


def test_monte_carlo_p_agrees_with_the_exact_one_and_is_never_below_its_floor():
    values, frames, clusters, is_x, block_of = _small_case(3)
    scores, names = cluster_means(frame_scores(torch.tensor(values), frames), clusters)
    design = Design([is_x[k] for k in names], [block_of[k] for k in names])
    exact = permutation_test(scores, design, exact_limit=10_000)["p"]
    draws = 40_000
    mc = permutation_test(scores, design, draws=draws, exact_limit=0, seed=1)
    assert not mc["exact"]
    se = (exact * (1 - exact) / draws).sqrt()
    assert bool(((mc["p"] - exact).abs() <= 4 * se + 2 / draws).all())
    assert bool((mc["p"] >= 1 / (draws + 1)).all())


def test_blocks_with_one_side_only_do_not_count_and_z_is_standardised():
    design = Design([True, False, True, True], ["a", "a", "b", "b"])
    assert design.counts() == {"a": [1, 1]} and design.relabellings == 2 and design.min_p == 0.5
    # one block of 2 x-units among 6: T's permutation mean and variance by enumeration
    s = torch.tensor([[0.1], [0.5], [0.2], [0.9], [0.4], [0.3]], dtype=torch.float64)
    d = Design([True, True, False, False, False, False], ["b"] * 6)
    sums = [float(s[list(c)].sum()) for c in itertools.combinations(range(6), 2)]
    got = permutation_test(s, d)
    assert float(got["z"][0]) == pytest.approx((0.6 - np.mean(sums)) / np.std(sums))


def test_stratified_auc_by_hand():
    v = torch.tensor([[3.0], [1.0], [1.0], [0.0], [5.0], [2.0]])
    d = Design([True, False, False, True, False, True], ["a", "a", "a", "b", "b", "b"])
    # block a: x=3 vs {1, 1}: 2 wins; block b: x in {0, 2} vs {5}: 0 wins; 4 + 2 pairs
    assert float(stratified_auc(v, d)[0]) == pytest.approx(2 / 4)


def test_null_data_confirms_at_most_alpha_of_the_time():
    """The family-wise error of 'any of 5 latents passes Holm' on data with no effect, 400
    simulated studies of 8 word clusters against 12 controls in 2 blocks."""
    rng = np.random.default_rng(0)
    false = 0
    n_sim = 400
    for _ in range(n_sim):
        labels = [True] * 4 + [False] * 6 + [True] * 4 + [False] * 6
        blocks = ["r"] * 10 + ["c"] * 10
        v = np.maximum(rng.normal(0, 1, size=(20, 5)), 0)
        v[10:] *= 3  # blocks differ in scale: stratification must absorb it
        d = Design(labels, blocks)
        scores = frame_scores(torch.tensor(v), blocks)
        p = permutation_test(scores, d, draws=2000, exact_limit=0, seed=int(rng.integers(1 << 30)))["p"].tolist()
        false += any(h["passed"] for h in holm(p, 0.05))
    rate = false / n_sim
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n_sim)


def test_holm_levels_and_decisions_by_hand():
    got = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert [g["level"] for g in got] == pytest.approx([0.05 / 3, 0.05 / 1, 0.05 / 2, 0.05 / 4])
    assert [g["passed"] for g in got] == [True, False, False, True]  # 0.03 > 0.05 / 2: it and 0.04 stop
    got = holm([0.01, 0.04, 0.03, 0.02], 0.05)  # 0.01 <= .0125, 0.02 > .0167: stop there
    assert [g["passed"] for g in got] == [True, False, False, False]


def test_empirical_p_and_the_size_that_reaches_a_level():
    nulls = torch.tensor([-0.3, -0.1, 0.0, 0.2, 0.5])
    assert empirical_p(-0.2, nulls, lower=True) == pytest.approx(2 / 6)
    assert empirical_p(0.5, nulls, lower=False) == pytest.approx(2 / 6)  # a tie counts as extreme
    assert empirical_p(-1.0, nulls, lower=True) == pytest.approx(1 / 6)
    n = draws_for_level(0.05 / 6)
    assert 1 / (1 + n) <= 0.05 / 6 < 1 / n


def test_nearest_matches_scale_each_trait_by_its_spread():
    traits = torch.tensor([[0.5, 0.0], [0.5, 10.0], [0.6, 0.0], [0.0, 0.0], [0.5, 1.0]])
    allowed = torch.tensor([False, True, True, True, True])
    assert nearest_matches(traits, 0, 2, allowed) == [4, 2]


def test_onset_is_one_rule_for_one_feature_or_many_and_for_numpy_or_torch():
    """Bonferroni over 3 offsets: z = 2.128 one-sided; with se 1 on both sides a difference must
    pass 2.128 * sqrt(2) = 3.01. A difference of 5 at the last offset is an onset, 2 is not."""
    import numpy as np

    from sae.statistics import onset

    offsets = [-2, -1, 0]
    base = {"mean": np.zeros(3), "se": np.ones(3), "n": np.full(3, 10)}
    one = {"mean": np.array([0.0, 0.0, 5.0]), "se": np.ones(3), "n": np.full(3, 10)}
    assert onset(one, base, offsets) == 0
    assert onset({**one, "mean": np.array([0.0, 0.0, 2.0])}, base, offsets) is None
    assert onset({**one, "n": np.array([10, 10, 1])}, base, offsets) is None  # too few on one side
    many = {"mean": torch.tensor([[0.0, 4.0], [0.0, 4.0], [5.0, 2.0]]), "se": torch.ones(3, 2),
            "n": torch.full((3, 2), 10)}
    base2 = {k: torch.as_tensor(np.stack([v, v], 1)) for k, v in base.items()}
    assert onset(many, base2, offsets) == [0, -2]
