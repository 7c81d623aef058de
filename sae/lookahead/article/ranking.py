"""Candidate ranking for the a/an experiment: activation at and before the article, the
decoder's direct logit effect on the noun and on " an" vs " a", and gradient x activation
attribution to the an-vs-a gap."""

from __future__ import annotations

import torch

from sae.lookahead.interventions import Attribution, Prepared


def gap_attribution(attr: Attribution, is_an: torch.Tensor) -> torch.Tensor:
    """ "d_sae": mean over an-noun prompts minus mean over a-noun prompts of each latent's
    grad x activation (summed over ordinary prompt positions). Ablating a latent moves
    logit(an) - logit(a) by about minus its attribution, so this is about how much of the
    an-vs-a gap ablating it would remove."""
    per_prompt = attr.attr.sum(1)
    return per_prompt[is_an].mean(0) - per_prompt[~is_an].mean(0)


def logit_effects(directions: torch.Tensor, unembed: torch.Tensor) -> torch.Tensor:
    """ "d_sae k": direct logit effect of one unit of each latent on each token."""
    return directions.float() @ unembed.to(directions.device).T


def mean_activation(prepared: Prepared, select: str) -> torch.Tensor:
    """ "prompt d_sae": per prompt, the mean activation at offset -1 ("at") or over the
    ordinary positions before it ("before"); 0 where there is none."""
    rows = []
    for b in prepared.batches:
        mask = b.ordinary & ((b.offsets == -1) if select == "at" else (b.offsets <= -2))
        m = mask.unsqueeze(-1).float()
        rows.append(((b.acts * m).sum(1) / m.sum(1).clamp_min(1)).cpu())
    return torch.cat(rows)


def rank_for_noun(noun_prep: Prepared, noun_attr: Attribution, rest_prep: Prepared, effects: torch.Tensor,
                  article: str, top: int = 10) -> dict:
    """Candidate features for one noun. effects: "d_sae 3" direct logit effects on the noun's
    first token, " an" and " a". Ranked by attribution toward the noun's article."""
    at_n, at_r = mean_activation(noun_prep, "at").mean(0), mean_activation(rest_prep, "at").mean(0)
    bf_n, bf_r = mean_activation(noun_prep, "before").mean(0), mean_activation(rest_prep, "before").mean(0)
    attr = noun_attr.attr.sum(1).mean(0)
    sink_attr = noun_attr.sink_attr.mean(0)
    toward = attr if article == "an" else -attr
    order = toward.argsort(descending=True)[:top]

    def row(f: int) -> dict:
        return {"feature": f, "attribution": float(attr[f]), "attribution_at_sinks": float(sink_attr[f]),
                "act_at": float(at_n[f]), "act_at_rest": float(at_r[f]), "act_before": float(bf_n[f]),
                "act_before_rest": float(bf_r[f]), "dla_noun": float(effects[f, 0]),
                "dla_an_minus_a": float(effects[f, 1] - effects[f, 2])}

    by_act = (at_n - at_r).argsort(descending=True)[:top]
    return {"by_attribution": [row(int(f)) for f in order], "by_activation_at": [row(int(f)) for f in by_act]}
