"""What the SAE's latents do on prepared prompts, shared by the analyses: activations aligned
to the article (offset 0; -1 is the token whose output chooses it, +1 the noun's first
token; BOS/special and sink positions left out), their profiles per group with onsets, the
latents that separate an-noun from a-noun texts at one offset, and each latent's firing
density."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import torch

from sae.lookahead.interventions import Prepared
from sae.runs.files import SPARSITY_FILE
from sae.statistics import group_stats, onset


def aligned_activations(prepared: Prepared, offsets: Sequence[int], features: Sequence[int] | None = None,
                        include_sinks: bool = False) -> torch.Tensor:
    """ "text offset feature": each feature's activation at article position + offset.
    NaN where that position is outside the text, padding, BOS/special, or a sink (unless
    `include_sinks`: then only outside/padding/BOS stay NaN)."""
    offsets = list(offsets)
    rows = []
    for b in prepared.batches:
        acts = b.acts if features is None else b.acts[..., torch.as_tensor(list(features), dtype=torch.long)]
        keep = (b.valid & ~b.special) if include_sinks else b.ordinary
        art = b.article_pos
        n, width = b.ids.shape
        out = torch.full((n, len(offsets), acts.shape[-1]), float("nan"))
        for j, o in enumerate(offsets):
            pos = art + o
            inside = (pos >= 0) & (pos < width)
            r = inside.nonzero().squeeze(-1)
            p = pos[r]
            ok = keep[r, p]
            out[r[ok].cpu(), j] = acts[r[ok], p[ok]].float().cpu()
        rows.append(out)
    return torch.cat(rows)


def profile_report(acts: torch.Tensor, groups: dict[str, torch.Tensor], features: Sequence[int],
                   offsets: Sequence[int], contrast: tuple[str, str] | None = None) -> dict:
    """JSON for the profiles of `features` (columns of `acts`) per group, with onsets of the
    first contrast group against the second (its baseline)."""
    stats = {name: group_stats(acts, m) for name, m in groups.items()}
    onsets = onset(stats[contrast[0]], stats[contrast[1]], offsets) if contrast else [None] * len(features)
    out = {"offsets": list(offsets), "n_texts": {k: int(m.sum()) for k, m in groups.items()},
           "contrast": f"{contrast[0]} vs {contrast[1]}" if contrast else None, "features": {}}
    for j, f in enumerate(features):
        entry = {name: {k: _clean(s[k][:, j].tolist()) for k in ("mean", "lo", "hi")} | {"n": s["n"][:, j].tolist()}
                 for name, s in stats.items()}
        entry["onset"] = onsets[j]
        out["features"][str(int(f))] = entry
    return out


def separating_features(acts: torch.Tensor, is_an: torch.Tensor, offsets: Sequence[int], at: int = -1,
                        top: int = 10, alpha: float = 0.05) -> dict:
    """Which latents differ between an-noun and a-noun texts at offset `at`, over every
    latent (columns of `acts`): Welch z of the difference, how many pass a Bonferroni
    bound over all latents, and the `top` by |z| with their onsets."""
    j = list(offsets).index(at)
    sa, sb = group_stats(acts, is_an), group_stats(acts, ~is_an)
    diff = sa["mean"][j] - sb["mean"][j]
    se = (sa["se"][j] ** 2 + sb["se"][j] ** 2).sqrt()
    z = torch.where(se > 0, diff / se, torch.zeros_like(diff)).nan_to_num(0.0)
    bound = NormalDist().inv_cdf(1 - alpha / (2 * acts.shape[-1]))
    order = z.abs().argsort(descending=True)[:top]
    on_an, on_a = onset(sa, sb, offsets), onset(sb, sa, offsets)
    return {"offset": at, "bonferroni_z": bound, "n_latents": acts.shape[-1],
            "n_beyond_bound": int((z.abs() > bound).sum()),
            "top": [{"feature": int(f), "mean_an": float(sa["mean"][j, f]), "mean_a": float(sb["mean"][j, f]),
                     "z": float(z[f]), "onset_an_over_a": on_an[f], "onset_a_over_an": on_a[f]} for f in order]}


def _clean(xs: list[float]) -> list[float | None]:
    return [None if x != x else round(x, 6) for x in xs]  # NaN -> null in JSON


def log_densities(sae, prepared: Prepared) -> tuple[torch.Tensor, str]:
    """log10 firing density per latent: the run's sparsity.safetensors (training), else the
    firing rate on the given prompts."""
    from safetensors.torch import load_file

    path = Path(sae.path) / SPARSITY_FILE
    if path.exists():
        try:
            d = load_file(str(path))
            if "sparsity" in d and d["sparsity"].shape == (sae.d_sae,):
                return d["sparsity"].float(), "training density (sparsity.safetensors)"
        except Exception:  # a damaged file: measure instead
            pass
    fired = torch.zeros(sae.d_sae)
    n = 0
    for b in prepared.batches:
        a = b.acts[b.ordinary].cpu()
        fired += (a != 0).float().sum(0)
        n += len(a)
    return torch.log10(fired / max(n, 1) + 1e-10), "firing rate on the selection prompts (no sparsity.safetensors)"
