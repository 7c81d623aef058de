"""Planned, or baked into the prompt? Where the noun's identity appears before the article, and
what the article and the noun lose when it is taken away there.

- Onset: the named-to-implied identity probe (trained where the noun is named, tested where
  a gloss only implies it; depth/probes.py) fitted at every offset -K..-1 and layer, so the
  report can say at which prompt token and layer the implied noun first becomes readable.
- Ablation: at each layer where that probe reads the implied noun at -1, on the
  implied-frame prompts (riddle, question, dialogue) of the identity nouns, the residual at -1
  has its component in the probe's subspace (the directions that tell the nouns apart, r of
  them) set to its mean, and the model is rerun from there with the right article fed after
  the prompt. Read: the an-vs-a gap at -1 (does the article depend on the represented noun?)
  and log P(noun's first token | prompt, article) (is it the noun the model goes on to say?),
  each against random r-dimensional subspaces set to their mean the same way. The subspace
  holds whatever tells an-nouns from a-nouns, so it is also ablated without the article
  probe's own direction: what it removes then comes from the noun code beyond one article
  direction. A share of a gap whose interval reaches zero means nothing (a model that does
  not choose the article from the noun can show 150% of 0.07 logits), so the answer reads the
  ablation only where the clean gap on these prompts is reliably above zero.
"""

from __future__ import annotations

import torch

from sae.lookahead.depth.causal import _gap, compare_to_random
from sae.lookahead.depth.config import IMPLIED, DepthConfig
from sae.lookahead.depth.probes import named_to_implied
from sae.statistics import bootstrap_gap, bootstrap_mean, empirical_p, gap_change


def identity_onset(feats: torch.Tensor, valid: torch.Tensor, nouns: list[str], frames: list[str], layers: list[int],
                   at_minus1: dict, seed: int) -> dict:
    """feats "prompt layer offset d", valid "prompt offset" -> {layer: {offset: transfer result}}: the
    named-to-implied probe at every offset before -1 and layer, with `at_minus1` ({layer: frames}, the
    identity probe's own fit at -1) for offset -1."""
    k = feats.shape[2]
    out = {}
    for j, L in enumerate(layers):
        per = {}
        for o in range(k - 1):
            res = named_to_implied(feats[:, j, o] * valid[:, o, None], nouns, frames, seed + 100 * L + o)
            if res is not None:
                per[str(o - k)] = res[0]["frames"]
        if L in at_minus1:
            per["-1"] = at_minus1[L]
        out[str(L)] = per
    return out


def _random_subspaces(n: int, d: int, r: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))[0].float() for _ in range(n)]


def identity_ablation(reader, ids: list[list[int]], layer: int, h: torch.Tensor, basis: torch.Tensor,
                      is_an: torch.Tensor, article_ids: list[int], noun_ids: list[int], cfg: DepthConfig,
                      seed: int, article_direction: torch.Tensor | None = None) -> dict:
    """h "prompt d" at -1 after block `layer` of the implied-frame prompts `ids`; basis "d r" the
    identity probe's subspace. The article gap and log P(noun | article) with that subspace set
    to its mean over these prompts, against `cfg.random_directions` random subspaces of r dims."""
    mean = h.mean(0)
    own = [basis]
    if article_direction is not None:  # the same subspace without the article probe's direction
        u = article_direction.float() / article_direction.norm()
        rest = basis - u[:, None] * (u @ basis)[None]
        q, sv, _ = torch.linalg.svd(rest.double(), full_matrices=False)
        own.append(q[:, sv > sv[0] * 1e-6].float())
    bases = own + _random_subspaces(cfg.random_directions, h.shape[1], basis.shape[1], seed)
    variants = [h] + [h - ((h - mean) @ b) @ b.T for b in bases]
    ld, logp = reader.rerun_last(ids, layer, torch.stack(variants, 1), then=article_ids, targets=noun_ids)
    clean_ld, clean_lp = ld[:, 0], logp[:, 0]
    r0 = 1 + len(own)  # first random variant
    article = compare_to_random(clean_ld, ld[:, 1], ld[:, r0:], is_an, cfg, seed)
    without = (gap_change(clean_ld, ld[:, 2], is_an, cfg.bootstrap, seed) if len(own) > 1 else None)
    d_noun = logp[:, 1] - clean_lp
    d_random = (logp[:, r0:] - clean_lp[:, None]).mean(0).double()
    est = bootstrap_mean(d_noun, cfg.bootstrap, seed)
    sd = float(d_random.std()) if len(d_random) > 1 else 0.0
    noun = est | {"clean_mean": float(clean_lp.mean()),
                  "random": {"n": len(d_random), "mean": float(d_random.mean()), "sd": sd,
                             "z": (est["mean"] - float(d_random.mean())) / sd if sd > 0 else None,
                             "p_permutation": empirical_p(est["mean"], d_random, lower=True)}}
    return {"dims": int(basis.shape[1]), "prompts": len(ids), "frames": list(IMPLIED),
            "clean_gap": float(_gap(clean_ld, is_an)),
            "clean_gap_ci": bootstrap_gap(clean_ld, is_an, cfg.bootstrap, seed)["ci"], "article": article, "noun": noun,
            "article_without_probe_direction": without}
