"""Causal tests: the probe's direction set to its mean, SAE features ablated, against random."""

from __future__ import annotations

import torch

from sae.lookahead.depth.config import DepthConfig
from sae.statistics import empirical_p, gap_change

# --------------------------------------------------------------------------- causal tests


def _gap(ld: torch.Tensor, is_an: torch.Tensor) -> torch.Tensor:
    return ld[is_an].mean(0) - ld[~is_an].mean(0)


def compare_to_random(clean: torch.Tensor, edited: torch.Tensor, random: torch.Tensor, is_an: torch.Tensor,
                      cfg: DepthConfig, seed: int) -> dict:
    """clean, edited "prompt"; random "prompt set": the gap removed by the edit, with paired
    bootstrap intervals, against the random edits' (z score, permutation p)."""
    g_clean = float(_gap(clean, is_an))
    change = gap_change(clean, edited, is_an, cfg.bootstrap, seed)
    if random.shape[1] == 0:  # too few other latents fire for a random set of the same size
        return change | {"random": {"n": 0, "removed_mean": None, "removed_sd": None, "fraction_removed_mean": None,
                                    "removed_q95": None, "z": None, "p_permutation": None}}
    removed_random = (g_clean - _gap(random, is_an)).double()
    removed = change["removed"]
    sd = float(removed_random.std()) if len(removed_random) > 1 else 0.0
    mean = float(removed_random.mean())
    return change | {
        "random": {"n": int(random.shape[1]), "removed_mean": mean, "removed_sd": sd,
                   "fraction_removed_mean": mean / g_clean if g_clean > 0 else None,
                   "removed_q95": float(removed_random.quantile(0.95)),
                   "z": (removed - mean) / sd if sd > 0 else None,
                   "p_permutation": empirical_p(removed, removed_random, lower=False)}}


def _random_units(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g)
    return u / u.norm(dim=1, keepdim=True)


def _project_out(h: torch.Tensor, mean: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """h "n d", units "v d" -> "n v d": the component along each unit set to its value at `mean`."""
    coef = (h - mean) @ units.T  # "n v"
    return h[:, None, :] - coef[:, :, None] * units[None]


def sae_edits(sae, h_tr: torch.Tensor, is_an_tr: torch.Tensor, h_te: torch.Tensor, cfg: DepthConfig,
              seed: int) -> tuple[torch.Tensor, dict]:
    """The top features by separation at -1 on the training riddles, and random sets of as
    many features that fire there: residuals "n (1 + sets) d" with each set ablated
    (error term kept), and what was chosen."""
    a_tr = sae.encode(h_tr).cpu()
    mu_an, mu_a = a_tr[is_an_tr].mean(0), a_tr[~is_an_tr].mean(0)
    sd = ((a_tr[is_an_tr].var(0) + a_tr[~is_an_tr].var(0)) / 2).sqrt()
    sep = (mu_an - mu_a) / (sd + 1e-6)
    fired = (a_tr > 0).any(0)
    sep = torch.where(fired, sep, torch.zeros_like(sep))
    chosen = sep.abs().argsort(descending=True)[:cfg.sae_features]
    chosen = chosen[fired[chosen]]
    pool = fired.nonzero().squeeze(1)
    pool = pool[~torch.isin(pool, chosen)]
    g = torch.Generator().manual_seed(seed)
    n_f = len(chosen)
    sets = [chosen] + ([pool[torch.randperm(len(pool), generator=g)[:n_f]] for _ in range(cfg.random_directions)]
                       if len(pool) >= n_f and n_f else [])
    a_te = sae.encode(h_te).cpu()
    base = sae.decode(a_te).cpu()
    out = [h_te]
    for s in sets:
        edited = a_te.clone()
        edited[:, s] = 0
        out.append(h_te + (sae.decode(edited).cpu() - base))
    info = {"features": [{"feature": int(f), "separation": float(sep[f]), "mean_an": float(mu_an[f]),
                          "mean_a": float(mu_a[f])} for f in chosen],
            "n_firing": int(fired.sum()), "n_random_sets": len(sets) - 1}
    return torch.stack(out, 1), info
