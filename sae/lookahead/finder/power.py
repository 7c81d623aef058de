"""How large a word feature the finder could have found on this word's contexts: its power,
estimated on the same design and the same tests as the answer.

A "null" is worth something only when the tests could have seen a real feature. For each ask,
a latent is planted in simulation into the activations at -1, as a word feature of graded
strength would look: it fires before a share `rate` of the word's independent sources (every
context of a source together, since near-copies fire together) and before `control_rate` of
the other sources (controls and category nouns alike). It then goes through what the real
feature would: the ranking half must put it among the latents tested (against the SAE's own
latents' z on that half, ties broken at random), and the held-out half must confirm it by the
same permutation test and Holm over the same family (the other tested latents keep the p's they
got). The share of draws confirmed is the power at that rate; the smallest rate confirmed in 80%
of draws is the smallest effect the design detects.

Where the power at `reference_rate` is short of 80%, the same simulation on designs grown by
extra sources of the word says how many more independent sources would reach it. Each new source
comes with new controls in the same proportion as now, all copies of the block's control sources
(one relabelled as the word: under the null a latent behaves on a new source of the word as on a
control). There the other
tested latents' p's are unknown and taken as 1, so the planted latent meets Holm's first level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from sae.lookahead.finder.activation import _units
from sae.lookahead.finder.contexts import Context
from sae.statistics import holm, permutation_test

RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TARGET = 0.8
EXTRA = (2, 4, 8, 16, 32, 64)


def _rows(contexts: Sequence[Context], half: dict[str, str], article: str, which: str) -> list[int]:
    return [i for i, c in enumerate(contexts) if c.prompt.article == article and c.role in ("word", "control")
            and half[c.cluster] == which]


def planted_values(contexts: Sequence[Context], rate: float, control_rate: float, sims: int,
                   generator: torch.Generator) -> torch.Tensor:
    """ "context sims": per draw, 1.0 on every context of each word source that fires (each with
    probability `rate`) and of each other source that fires (probability `control_rate`), else 0."""
    names = list(dict.fromkeys(c.cluster for c in contexts))
    index = {k: i for i, k in enumerate(names)}
    word = {c.cluster for c in contexts if c.role == "word"}
    p = torch.tensor([rate if k in word else control_rate for k in names], dtype=torch.float64)
    fires = (torch.rand(sims, len(names), generator=generator, dtype=torch.float64) < p).double()
    return fires[:, [index[c.cluster] for c in contexts]].T.contiguous()


def _ranking_z(values: torch.Tensor, contexts: Sequence[Context], rows: list[int]) -> torch.Tensor:
    scores, design, _ = _units(values, contexts, rows, "word")
    return permutation_test(scores, design, draws=1, exact_limit=0)["z"]


def _selected(z_planted: torch.Tensor, z_others: torch.Tensor, k: int) -> torch.Tensor:
    """Probability that each planted z is among the `k` tested: ahead of every latent with a
    smaller z, tied ones in random order, and only when z > 0 (as activation_tests does)."""
    if k <= 0:
        return torch.zeros_like(z_planted)
    eps = 1e-9
    zs = z_others.double().sort().values
    greater = len(zs) - torch.searchsorted(zs, z_planted + eps, right=True)
    ties = torch.searchsorted(zs, z_planted + eps, right=True) - torch.searchsorted(zs, z_planted - eps, right=False)
    slots = (k - greater).double()
    return torch.where(z_planted > 0, (slots / (ties + 1).double()).clamp(0, 1), torch.zeros_like(slots))


def _power_at(contexts, half, article, z_others, other_p: list[float], k: int, alpha: float,
              rate: float, control_rate: float, sims: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    v = planted_values(contexts, rate, control_rate, sims, g)
    rank_rows, check_rows = _rows(contexts, half, article, "rank"), _rows(contexts, half, article, "check")
    sel = _selected(_ranking_z(v, contexts, rank_rows), z_others, k)
    scores, design, _ = _units(v, contexts, check_rows, "word")
    p = permutation_test(scores, design, draws=2000, exact_limit=20_000, seed=seed + 1)["p"]
    others = list(other_p[:max(k - 1, 0)])
    passed = torch.tensor([holm([float(x)] + others, alpha)[0]["passed"] for x in p], dtype=torch.float64)
    return float((sel * passed).mean())


def _augmented(contexts: Sequence[Context], values: torch.Tensor, half: dict[str, str], extra: int,
               seed: int) -> tuple[list[Context], torch.Tensor, dict[str, str]]:
    """The design grown by `extra` sources of the word, spread over the blocks (origin and frames)
    as the word's sources are, each with as many new control sources as the word's sources of that
    block have now: copies of that block's control sources, one relabelled as the word. Ranking and
    held-out halves alternate, as split_clusters does."""
    from sae.lookahead.finder.activation import cluster_blocks

    blocks = cluster_blocks(contexts)
    word_clusters = sorted({c.cluster for c in contexts if c.role == "word"})
    controls: dict[str, list[str]] = {}
    for k in sorted({c.cluster for c in contexts if c.role == "control"}):
        controls.setdefault(blocks[k], []).append(k)
    cycle = [blocks[k] for k in word_clusters if blocks[k] in controls]
    if not cycle:
        return list(contexts), values, dict(half)
    rows_of: dict[str, list[int]] = {}
    for i, c in enumerate(contexts):
        rows_of.setdefault(c.cluster, []).append(i)
    g = torch.Generator().manual_seed(seed)
    new_ctx, new_rows, new_half = list(contexts), [], dict(half)
    toggle = {"word": 0, "control": 0}

    def add(source: str, role: str, name: str) -> None:
        new_half[name] = ("rank", "check")[toggle[role]]
        toggle[role] ^= 1
        for i in rows_of[source]:
            new_ctx.append(replace(contexts[i], role=role, cluster=name))
            new_rows.append(i)

    for j in range(extra):
        block = cycle[j % len(cycle)]
        pool = controls[block]
        per_word = max(1, round(len(pool) / sum(b == block for b in cycle)))
        picks = torch.randint(len(pool), (1 + per_word,), generator=g).tolist()
        add(pool[picks[0]], "word", f"extra source {j}")
        for n, i in enumerate(picks[1:]):
            add(pool[i], "control", f"extra control {j}.{n}")
    return new_ctx, torch.cat([values, values[new_rows]]), new_half


def activation_power(values: torch.Tensor, contexts: Sequence[Context], article: str, half: dict[str, str],
                     act: dict, confirm: int, alpha: float, seed: int, control_rate: float = 0.05,
                     reference_rate: float = 0.5, sims: int = 200) -> dict:
    """The power of the activation tests on this word's design, per planted firing rate; the
    smallest rate detected in `TARGET` of draws; and, where even the strongest is not, the
    extra sources that would detect one firing before `reference_rate` of them."""
    k = len(act["check"]["tested"]) if act["check"]["tested"] else min(confirm, act["check"]["resolvable"])
    tested = act["check"]["tested"]
    other_p = sorted(act["confirmation"][f]["p"] for f in tested[:max(len(tested) - 1, 0)])
    z_others = act["z"].double()
    curve = {}
    for j, r in enumerate(RATES):
        curve[r] = (_power_at(contexts, half, article, z_others, other_p, k, alpha, r, control_rate, sims,
                              seed + 17 * j) if k > 0 else 0.0)
    detectable = next((r for r in RATES if curve[r] >= TARGET), None)
    out = {"rates": list(RATES), "power": [round(curve[r], 3) for r in RATES], "target": TARGET,
           "control_rate": control_rate, "reference_rate": reference_rate, "sims": sims, "tested": k,
           "detectable_rate": detectable,
           "power_at_reference": round(_interp(curve, reference_rate), 3),
           "sources": {"ranking": len({c.cluster for c in contexts if c.role == "word" and half[c.cluster] == "rank"}),
                       "held_out": len({c.cluster for c in contexts if c.role == "word"
                                        and half[c.cluster] == "check"})},
           "extra_sources": None, "extra_power": None, "extra_tried": None}
    if out["power_at_reference"] >= TARGET:
        return out
    for extra in EXTRA:
        ctx2, val2, half2 = _augmented(contexts, values, half, extra, seed)
        if len(ctx2) == len(contexts):
            break
        rank_rows = _rows(ctx2, half2, article, "rank")
        z2 = _ranking_z(val2, ctx2, rank_rows)
        _, d2, _ = _units(val2[:, :1], ctx2, _rows(ctx2, half2, article, "check"), "word")
        k2 = max(0, min(confirm, int(math.floor(alpha * d2.relabellings + 1e-9)))) if d2.groups else 0
        pw = _power_at(ctx2, half2, article, z2, [1.0] * max(k2 - 1, 0), k2, alpha, reference_rate,
                       control_rate, sims, seed + 1000 + extra) if k2 else 0.0
        out["extra_tried"] = extra
        if pw >= TARGET:
            out["extra_sources"], out["extra_power"] = extra, round(pw, 3)
            break
    return out


def _interp(curve: dict[float, float], rate: float) -> float:
    rates = sorted(curve)
    if rate <= rates[0]:
        return curve[rates[0]]
    for lo, hi in zip(rates, rates[1:]):
        if lo <= rate <= hi:
            return curve[lo] + (curve[hi] - curve[lo]) * (rate - lo) / (hi - lo)
    return curve[rates[-1]]


def detectable_effect(null_values: Sequence[float], level: float, lower: bool) -> float | None:
    """The causal test's smallest detectable mean effect: the value beyond which an effect's
    empirical p, (1 + nulls as extreme) / (1 + n), reaches `level` (None where no value can)."""
    n = len(null_values)
    c = int(math.floor(level * (1 + n) - 1 + 1e-9))
    if n == 0 or c < 0:
        return None
    ordered = sorted(null_values) if lower else sorted(null_values, reverse=True)
    return float(ordered[min(c, n - 1)])
