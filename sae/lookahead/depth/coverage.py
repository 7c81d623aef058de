"""Where an SAE loses the article signal: how much of what the article probe reads at -1,
and of the causal an-vs-a gap, the SAE's latents carry and how much its error term does.

The residual at -1 splits exactly into the reconstruction and the error term, h = x_hat + e,
so along the probe's unit direction u the an-vs-a separation splits exactly too:
mean_an(u.h) - mean_a(u.h) = [the same for u.x_hat] + [the same for u.e]. Its latents'
part is a sum over latents, Delta(a_i) * (u . d_i) (d_i: latent i's decoder direction in
residual space), which says whether a few latents carry it or it is spread over many.
Probes retrained on x_hat alone and on e alone say whether either still holds the article
for held-out nouns in any direction. Causally, at -1 of the held-out riddles, the error term
is set to its training mean (latents kept) or every latent is (error term kept), and the
change in the gap is measured as the depth sweep's other edits are.
"""

from __future__ import annotations

import torch

from sae.lookahead.depth.config import DepthConfig
from sae.lookahead.depth.probes import article_probe
from sae.lookahead.interventions import decoder_directions

HALF, MOST = 0.5, 0.9  # shares of the latents' separation whose latent counts are reported


def _separation(s: torch.Tensor, is_an: torch.Tensor) -> torch.Tensor:
    """s "... prompt" -> "...": mean over an-noun prompts minus mean over a-noun prompts."""
    return s[..., is_an].mean(-1) - s[..., ~is_an].mean(-1)


def _latent_counts(contrib: torch.Tensor, total: float) -> dict:
    """Fewest latents, largest contributions first, whose sum reaches HALF and MOST of `total`."""
    if total <= 0:
        return {"half": None, "most": None}
    cum = contrib.sort(descending=True).values.cumsum(0)
    out = {}
    for name, share in (("half", HALF), ("most", MOST)):
        hit = (cum >= share * total).nonzero()
        out[name] = int(hit[0]) + 1 if len(hit) else None
    return out


def probe_split(sae, h: torch.Tensor, is_an: torch.Tensor, u: torch.Tensor, chosen: list[int], n_boot: int,
                seed: int) -> dict:
    """The separation along the unit direction u of h "prompt d" (held-out prompts), of its
    reconstruction and of its error term; the latents' share with a bootstrap interval; how many
    latents carry it; the share of the `chosen` features."""
    acts = sae.encode(h).cpu()
    x_hat = sae.decode(acts).cpu()
    err = h - x_hat
    s = torch.stack([h @ u, x_hat @ u, err @ u]).double()  # "3 prompt"
    total, latents, error = (float(v) for v in _separation(s, is_an))
    g = torch.Generator().manual_seed(seed)
    an, a = is_an.nonzero().squeeze(1), (~is_an).nonzero().squeeze(1)
    ia = an[torch.randint(len(an), (n_boot, len(an)), generator=g)]
    ib = a[torch.randint(len(a), (n_boot, len(a)), generator=g)]
    boot = s[:, ia].mean(-1) - s[:, ib].mean(-1)  # "3 boot"
    ok = boot[0].abs() > 1e-12
    share = (boot[1][ok] / boot[0][ok])
    contrib = (_separation(acts.T.double(), is_an) * (decoder_directions(sae).cpu().double() @ u.double())).float()
    counts = _latent_counts(contrib, latents)
    share_of = (lambda x: x / total) if abs(total) > 1e-12 else (lambda x: None)
    return {"separation": total, "latents": latents, "error": error,
            "latents_share": share_of(latents), "error_share": share_of(error),
            "latents_share_ci": ([float(share.quantile(0.025)), float(share.quantile(0.975))] if len(share)
                                 else [None, None]),
            "latents_for_half": counts["half"], "latents_for_most": counts["most"],
            "n_latents_contributing": int((contrib > 0).sum()),
            "top_latents": [{"feature": int(i), "contribution": float(contrib[i])}
                            for i in contrib.argsort(descending=True)[:10]],
            "chosen_share": share_of(float(contrib[chosen].sum())) if chosen else None}


def sae_coverage(sae, h_tr: torch.Tensor, y_tr: torch.Tensor, nouns_tr: list[str], h_te: torch.Tensor,
                 y_te: torch.Tensor, u: torch.Tensor, chosen: list[int], cfg: DepthConfig,
                 seed: int) -> tuple[torch.Tensor, dict]:
    """Residuals "test 2 d" at -1 with (0) the error term set to its training mean, latents kept,
    and (1) the reconstruction set to its training mean, error term kept; and what the SAE's
    latents and error term carry of the article probe's signal (see the module's docstring)."""
    x_tr, x_te = sae.reconstruct(h_tr).cpu(), sae.reconstruct(h_te).cpu()
    e_tr, e_te = h_tr - x_tr, h_te - x_te
    edits = torch.stack([x_te + e_tr.mean(0), x_tr.mean(0).expand_as(e_te) + e_te], 1)
    info = {"probe_direction": probe_split(sae, h_te, y_te.bool(), u, chosen, cfg.bootstrap, seed),
            "retrained_probe": {}}
    for name, a, b in (("reconstruction", x_tr, x_te), ("error", e_tr, e_te)):
        res, _ = article_probe(a, y_tr, nouns_tr, b, y_te, cfg, seed + 1)
        info["retrained_probe"][name] = {k: res[k] for k in ("accuracy", "ci", "p_binomial", "control_mean",
                                                            "above_chance", "n_test")}
    info["relative_error"] = float((e_te.norm(dim=1) / h_te.norm(dim=1).clamp_min(1e-12)).mean())
    return edits, info
