"""The statistics every analysis shares: one implementation of each null and interval.

- Intervals: percentile bootstrap of a mean.
- A two-sample test on many columns at once (rows are units, columns latents): the
  stratified, clustered permutation test that the word finder gates on. Clusters (all
  contexts from one definition or one document) carry a label; labels are shuffled only
  among clusters of the same block (same kind of frame, article, capitalisation), and the
  statistic is van Elteren's, a sum of within-frame normalised ranks. Its p is exact (every
  relabelling enumerated) when there are few relabellings, else a Monte Carlo p,
  (1 + hits) / (1 + draws), which is valid at any draw count. The smallest p a design
  allows, 1 / (number of relabellings), is reported so a level that cannot be reached is
  said to be unreachable, not silently missed.
- Nulls from comparison sets: the empirical p of a value among null values; random feature
  sets matched in firing density (the lookahead), nearest matches on several traits
  (density, activity, edit size: the word finder) for random-feature nulls.
- Multiplicity: Holm's step-down levels.
- Two groups of prompts (an-nouns vs a-nouns): the gap between their means with a bootstrap
  interval, and how much of it an edit removes (paired bootstrap).
- Profiles over offsets: mean and normal interval per offset, from raw values with NaN
  (`group_stats`) or streamed moments (`stats_from_moments`), and the onset, the first offset
  where one group is reliably above another.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import torch

from sae.errors import SaexError

Z95 = NormalDist().inv_cdf(0.975)
"""The two-sided 95% normal quantile (1.95996...), for every normal interval in the project."""


def pct(x, digits: int = 0) -> str:
    """A fraction as a percentage ("43%"); "n/a" for None or NaN, which every answer prints alike."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"

# --------------------------------------------------------------------------- intervals


def bootstrap_mean(x: torch.Tensor, n_boot: int, seed: int) -> dict:
    """Mean of `x` with a 95% percentile bootstrap interval."""
    x = x.double()
    if len(x) == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    g = torch.Generator().manual_seed(seed)
    boot = x[torch.randint(len(x), (n_boot, len(x)), generator=g)].mean(1)
    return {"mean": float(x.mean()), "ci": [float(boot.quantile(0.025)), float(boot.quantile(0.975))], "n": len(x)}


# --------------------------------------------------------------------------- rank tests


def midranks(values: torch.Tensor) -> torch.Tensor:
    """ "n f" -> per column, the rank of each value (1..n), ties sharing their mean rank."""
    cols = values.double().T.contiguous()
    ordered = cols.sort(-1).values
    left = torch.searchsorted(ordered, cols, right=False)
    right = torch.searchsorted(ordered, cols, right=True)
    return ((left + 1 + right).double() / 2).T


def frame_scores(values: torch.Tensor, frames: Sequence[str]) -> torch.Tensor:
    """ "context f" -> van Elteren's within-frame scores: each value's midrank among the
    contexts of its frame, divided by (contexts in the frame + 1), so every frame weighs the
    same whatever its size. NaN (a missing position) counts as 0."""
    values = values.double().nan_to_num(0.0)
    out = torch.zeros_like(values)
    for frame in dict.fromkeys(frames):
        rows = torch.tensor([i for i, f in enumerate(frames) if f == frame])
        out[rows] = midranks(values[rows]) / (len(rows) + 1)
    return out


def cluster_means(scores: torch.Tensor, clusters: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """ "context f" -> "cluster f": the mean score of each cluster's contexts, clusters in
    first-seen order (returned with the result)."""
    names = list(dict.fromkeys(clusters))
    index = {c: i for i, c in enumerate(names)}
    idx = torch.tensor([index[c] for c in clusters])
    total = torch.zeros(len(names), scores.shape[1], dtype=scores.dtype).index_add_(0, idx, scores)
    count = torch.zeros(len(names), dtype=scores.dtype).index_add_(0, idx, torch.ones(len(idx), dtype=scores.dtype))
    return total / count[:, None], names


class Design:
    """Units (clusters) with a label (True: the word's side) and a block each: labels are
    exchangeable only among units of one block. Blocks holding one side only say nothing
    and are left out."""

    def __init__(self, is_x: Sequence[bool], blocks: Sequence[str]):
        self.is_x = torch.tensor([bool(v) for v in is_x])
        self.blocks = list(blocks)
        groups: dict[str, list[int]] = {}
        for i, b in enumerate(self.blocks):
            groups.setdefault(b, []).append(i)
        self.groups = {b: idx for b, idx in groups.items() if 0 < int(self.is_x[idx].sum()) < len(idx)}
        self.used = sorted(i for idx in self.groups.values() for i in idx)

    @property
    def relabellings(self) -> int:
        """How many label assignments keep every block's count of x-units."""
        return math.prod(math.comb(len(idx), int(self.is_x[idx].sum())) for idx in self.groups.values())

    @property
    def min_p(self) -> float:
        """The smallest p any statistic can reach on this design."""
        return 1.0 / self.relabellings if self.groups else 1.0

    def counts(self) -> dict[str, list[int]]:
        """block -> [x-units, other units], for the blocks that count."""
        return {b: [int(self.is_x[idx].sum()), len(idx) - int(self.is_x[idx].sum())] for b, idx in self.groups.items()}

    def all_labellings(self) -> torch.Tensor:
        """ "relabelling unit": every assignment (the observed one included)."""
        per_block = []
        for idx in self.groups.values():
            m = int(self.is_x[idx].sum())
            per_block.append([frozenset(c) for c in itertools.combinations(idx, m)])
        out = torch.zeros(self.relabellings, len(self.is_x))
        for r, choice in enumerate(itertools.product(*per_block)):
            for chosen in choice:
                out[r, list(chosen)] = 1.0
        return out

    def random_labellings(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """ "n unit": labels shuffled within each block."""
        out = torch.zeros(n, len(self.is_x))
        for idx in self.groups.values():
            m = int(self.is_x[idx].sum())
            order = torch.rand(n, len(idx), generator=generator).argsort(1)
            out[:, idx] = (order < m).float()  # a uniformly random subset of size m per draw
        return out


def permutation_test(scores: torch.Tensor, design: Design, draws: int = 20_000, exact_limit: int = 20_000,
                     seed: int = 0, chunk: int = 4096) -> dict[str, torch.Tensor | bool | int | float]:
    """One-sided test, per column of `scores` ("unit f"), that x-units score higher than the
    others of their blocks: T = sum of x-units' scores. Exact when the design has at most
    `exact_limit` relabellings, else `draws` Monte Carlo relabellings. Also the
    standardised statistic z = (T - E T) / SD T under the permutation null (for ranking)."""
    scores = scores.double()
    f = scores.shape[1]
    if not design.groups:
        zero = torch.zeros(f, dtype=torch.float64)
        return {"p": zero + 1.0, "z": zero, "t": zero, "exact": True, "draws": 0, "min_p": 1.0}
    x = torch.zeros(len(design.is_x), dtype=torch.float64)
    x[design.used] = design.is_x[design.used].double()  # units of one-sided blocks are constant: left out
    t_obs = x @ scores
    mean = torch.zeros(f, dtype=torch.float64)
    var = torch.zeros(f, dtype=torch.float64)
    for idx in design.groups.values():
        s = scores[idx]
        n, m = len(idx), float(x[idx].sum())
        mean += m * s.mean(0)
        var += m * (n - m) / max(n - 1, 1) * s.var(0, unbiased=False)
    z = torch.where(var > 1e-18, (t_obs - mean) / var.clamp_min(1e-300).sqrt(), torch.zeros_like(mean))
    tol = 1e-9 * (1 + t_obs.abs())  # equal sums computed in another order still count as ties
    exact = design.relabellings <= exact_limit
    hits = torch.zeros(f, dtype=torch.float64)
    if exact:
        labels = design.all_labellings().double()
        for s in range(0, len(labels), chunk):
            hits += ((labels[s:s + chunk] @ scores) >= t_obs - tol).sum(0).double()
        p = hits / len(labels)
        n_draws = len(labels)
    else:
        g = torch.Generator().manual_seed(seed)
        for s in range(0, draws, chunk):
            labels = design.random_labellings(min(chunk, draws - s), g).double()
            hits += ((labels @ scores) >= t_obs - tol).sum(0).double()
        p = (1 + hits) / (1 + draws)
        n_draws = draws
    return {"p": p, "z": z, "t": t_obs, "exact": exact, "draws": n_draws, "min_p": design.min_p}


def stratified_auc(values: torch.Tensor, design: Design, frames_of_unit: Sequence[str] | None = None) -> torch.Tensor:
    """ "unit f" -> per column, the probability that an x-unit's value beats another unit's of
    the same block (ties count half), pooled over blocks weighted by their pair counts."""
    values = values.double()
    num = torch.zeros(values.shape[1], dtype=torch.float64)
    pairs = 0
    for idx in design.groups.values():
        xi = [i for i in idx if design.is_x[i]]
        yi = [i for i in idx if not design.is_x[i]]
        a, b = values[xi][:, None], values[yi][None]
        num += ((a > b).double() + 0.5 * (a == b).double()).sum((0, 1))
        pairs += len(xi) * len(yi)
    return num / max(pairs, 1)


# --------------------------------------------------------------------------- nulls from comparison sets


def empirical_p(value: float, nulls: torch.Tensor, lower: bool) -> float:
    """(1 + null values at least as extreme) / (1 + nulls): valid for any number of nulls,
    never below 1 / (1 + nulls)."""
    nulls = nulls.double()
    beyond = (nulls <= value + 1e-12) if lower else (nulls >= value - 1e-12)
    return (1 + int(beyond.sum())) / (1 + len(nulls))


def density_matched_sets(log_density: torch.Tensor, target: Sequence[int], n_sets: int, seed: int = 0,
                         tolerance: float = 0.1, min_pool: int = 8) -> tuple[list[list[int]], float]:
    """`n_sets` random feature sets, each with one feature per target feature whose log10
    firing density lies within `tolerance` of that target's (the `min_pool` nearest when
    fewer qualify). Target features are never drawn, nor a feature twice in one set, nor a
    never-firing one for a firing target. Returns the sets and the largest |log10 density
    difference| of any drawn feature from its target."""
    target = [int(f) for f in target]
    ld = log_density.double().cpu()
    dead = ld <= -9.5  # log10(0 + 1e-10): never fired in training
    excluded = torch.zeros(len(ld), dtype=torch.bool)
    excluded[target] = True
    pools = []
    for f in target:
        dist = (ld - ld[f]).abs()
        dist[excluded | (dead & ~dead[f])] = float("inf")
        pool = (dist <= tolerance).nonzero().squeeze(-1)
        if len(pool) < min_pool:
            pool = dist.argsort()[:min_pool]
            pool = pool[torch.isfinite(dist[pool])]
        if len(pool) == 0:
            raise SaexError("no feature is left to match a target feature's density", "use a larger SAE")
        pools.append(pool)
    g = torch.Generator().manual_seed(seed)
    sets, worst = [], 0.0
    for _ in range(n_sets):
        chosen: list[int] = []
        for f, pool in zip(target, pools):
            free = pool[~torch.isin(pool, torch.tensor(chosen, dtype=torch.long))] if chosen else pool
            pick = int(free[torch.randint(len(free), (1,), generator=g)]) if len(free) else int(pool[0])
            chosen.append(pick)
            worst = max(worst, float((ld[pick] - ld[f]).abs()))
        sets.append(chosen)
    return sets, worst


def nearest_matches(traits: torch.Tensor, target: int, n: int, allowed: torch.Tensor) -> list[int]:
    """The `n` rows of `traits` ("row trait") nearest to row `target` in traits scaled by
    their spread over the allowed rows, among rows where `allowed` is True."""
    t = traits.double()
    pool = allowed.nonzero().squeeze(-1)
    if len(pool) == 0:
        return []
    spread = t[pool].std(0).clamp_min(1e-9) if len(pool) > 1 else torch.ones(t.shape[1], dtype=torch.float64)
    dist = (((t[pool] - t[target]) / spread) ** 2).sum(1)
    return [int(pool[i]) for i in dist.argsort()[:n]]


# --------------------------------------------------------------------------- multiplicity


def holm(pvalues: Sequence[float], alpha: float) -> list[dict]:
    """Holm's step-down procedure: per test (in the given order) its level, alpha / (tests
    not yet rejected when it is reached), and whether it passes. Holds the family-wise
    error at `alpha`."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [{"level": alpha / max(m, 1), "passed": False} for _ in range(m)]
    still = True
    for step, i in enumerate(order):
        level = alpha / (m - step)
        # a p of exactly the level passes: 1 / (1 + n) from draws_for_level must not fail on rounding
        out[i] = {"level": level, "passed": bool(still and pvalues[i] <= level * (1 + 1e-9))}
        still = out[i]["passed"]
    return out


def draws_for_level(level: float) -> int:
    """Comparison-set size whose smallest empirical p, 1 / (1 + n), reaches `level`."""
    return max(1, math.ceil(1.0 / level - 1 - 1e-9))


# --------------------------------------------------------------------------- two groups of prompts


def bootstrap_gap(ld: torch.Tensor, is_an: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(ld | an-noun) - mean(ld | a-noun), with a 95% percentile bootstrap interval
    (each group resampled on its own)."""
    an, a = ld[is_an].double(), ld[~is_an].double()
    out = {"n_an": len(an), "n_a": len(a), "mean_an": float(an.mean()) if len(an) else None,
           "mean_a": float(a.mean()) if len(a) else None, "value": None, "ci": [None, None]}
    if len(an) == 0 or len(a) == 0:
        return out
    g = torch.Generator().manual_seed(seed)
    boot = (an[torch.randint(len(an), (n_boot, len(an)), generator=g)].mean(1)
            - a[torch.randint(len(a), (n_boot, len(a)), generator=g)].mean(1))
    out["value"] = float(an.mean() - a.mean())
    out["ci"] = [float(boot.quantile(0.025)), float(boot.quantile(0.975))]
    return out


def gap_change(clean: torch.Tensor, edited: torch.Tensor, is_an: torch.Tensor, n_boot: int = 2000,
               seed: int = 0) -> dict:
    """How much of the clean gap an edit removes (removed = gap_clean - gap_edited), and as a
    fraction of the clean gap, with paired bootstrap intervals (the same resampled prompts
    for clean and edited)."""
    clean, edited = clean.double(), edited.double()
    an, a = is_an.nonzero().squeeze(-1), (~is_an).nonzero().squeeze(-1)
    out = {"gap_clean": None, "gap_edited": None, "removed": None, "removed_ci": [None, None],
           "fraction_removed": None, "fraction_ci": [None, None],
           "delta_ld_an": float((edited - clean)[an].mean()) if len(an) else None,
           "delta_ld_a": float((edited - clean)[a].mean()) if len(a) else None}
    if len(an) == 0 or len(a) == 0:
        return out

    def gaps(x, ia, ib):
        return x[ia].mean(-1) - x[ib].mean(-1)

    g = torch.Generator().manual_seed(seed)
    ia = an[torch.randint(len(an), (n_boot, len(an)), generator=g)]
    ib = a[torch.randint(len(a), (n_boot, len(a)), generator=g)]
    g_clean, g_edit = gaps(clean, an, a), gaps(edited, an, a)
    b_clean, b_edit = gaps(clean, ia, ib), gaps(edited, ia, ib)
    removed = b_clean - b_edit
    out |= {"gap_clean": float(g_clean), "gap_edited": float(g_edit), "removed": float(g_clean - g_edit),
            "removed_ci": [float(removed.quantile(0.025)), float(removed.quantile(0.975))]}
    if g_clean > 0:
        frac = removed / b_clean.where(b_clean > 0, torch.full_like(b_clean, float("nan")))
        frac = frac[torch.isfinite(frac)]
        out["fraction_removed"] = float((g_clean - g_edit) / g_clean)
        if len(frac):
            out["fraction_ci"] = [float(frac.quantile(0.025)), float(frac.quantile(0.975))]
    return out


def behaviour_summary(ld: torch.Tensor, logp_a: torch.Tensor, logp_an: torch.Tensor, is_an: torch.Tensor,
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """The gap plus how often the model prefers the right article."""
    right = torch.where(is_an, ld > 0, ld < 0)
    p_article = torch.where(is_an, logp_an, logp_a).exp()
    return {"gap": bootstrap_gap(ld, is_an, n_boot, seed),
            "right_article_preferred": float(right.double().mean()),
            "an_preferred_an_nouns": float((ld[is_an] > 0).double().mean()) if bool(is_an.any()) else None,
            "an_preferred_a_nouns": float((ld[~is_an] > 0).double().mean()) if bool((~is_an).any()) else None,
            "mean_p_right_article": float(p_article.mean()),
            "mean_p_a": float(logp_a.exp().mean()), "mean_p_an": float(logp_an.exp().mean())}


def group_stats(acts: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, 95% interval (normal approximation) and count per offset and feature over the
    texts in `mask`, ignoring NaN."""
    x = acts[mask]
    n = (~torch.isnan(x)).sum(0)
    mean = torch.nansum(x, 0) / n.clamp_min(1)
    var = torch.nansum((x - mean) ** 2, 0) / (n - 1).clamp_min(1)
    se = (var / n.clamp_min(1)).sqrt()
    mean = mean.where(n > 0, torch.full_like(mean, float("nan")))
    se = se.where(n > 1, torch.full_like(se, float("nan")))
    return {"mean": mean, "lo": mean - Z95 * se, "hi": mean + Z95 * se, "se": se, "n": n}


# --------------------------------------------------------------------------- profiles over offsets


def stats_from_moments(count, fired, s, s2) -> dict[str, np.ndarray]:
    """Mean activation (over all occurrences, 0 where it did not fire), its standard error
    and a normal-approximation 95% interval, from the count, sum and sum of squares
    (arrays of one shape; NaN where count < 2 for se/lo/hi, and where count = 0 for the mean)."""
    count = np.asarray(count, np.float64)
    s, s2 = np.asarray(s, np.float64), np.asarray(s2, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, s / count, np.nan)
        var = np.where(count > 1, np.maximum(s2 - count * np.nan_to_num(mean) ** 2, 0) / (count - 1), np.nan)
        se = np.sqrt(var / count)
    return {"mean": mean, "se": se, "lo": mean - Z95 * se, "hi": mean + Z95 * se,
            "n": count.astype(np.int64), "fired": np.asarray(fired, np.int64)}


def onset(group: dict, baseline: dict, offsets: Sequence[int], alpha: float = 0.05):
    """The earliest offset where the group's mean exceeds the baseline's by more than a
    one-sided z bound, Bonferroni-corrected over the offsets (so a single lucky early offset
    does not count), with at least two observations on each side; None when it never does.
    group/baseline: "mean", "se", "n" over offsets ("offset") or per feature ("offset
    feature"), as `group_stats` or `stats_from_moments` give them; one answer for the first
    shape, a list of one per feature for the second."""
    offsets = list(offsets)
    z = NormalDist().inv_cdf(1 - alpha / max(len(offsets), 1))
    g, b = ({k: _numpy(d[k]) for k in ("mean", "se", "n")} for d in (group, baseline))
    diff = g["mean"] - b["mean"]
    se = np.sqrt(g["se"] ** 2 + b["se"] ** 2)
    with np.errstate(invalid="ignore"):
        above = (g["n"] >= 2) & (b["n"] >= 2) & np.isfinite(se) & (diff - z * se > 0)

    def first(column) -> int | None:
        hits = np.flatnonzero(column)
        return int(offsets[hits[0]]) if len(hits) else None

    return first(above) if above.ndim == 1 else [first(above[:, f]) for f in range(above.shape[1])]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
