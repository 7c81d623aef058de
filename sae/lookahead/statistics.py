"""Lookahead analysis of SAE features around an indefinite article.

- Statistics of the behaviour: logit(" an") - logit(" a") per prompt, the an-noun minus
  a-noun gap with a bootstrap interval, and how much of that gap an edit removes.
- Article-aligned profiles: each feature's activation at offsets -k..+2 from the article
  token (0) in texts where an article precedes a known noun, mean and interval per group
  (an-noun vs a-noun texts, one noun vs the rest), and the onset: the earliest offset where
  a group's mean is reliably above the other group's (its baseline).
- Candidate ranking: activation at and before the article, the decoder's direct logit
  effect on the noun and on " an" vs " a", and gradient x activation attribution.
- Corpus occurrences of "a/an + noun" for profiles on natural text.

Offsets count tokens: -1 is the token before the article (whose output chooses it),
+1 the noun's first token. BOS/special and sink positions are left out of profiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from statistics import NormalDist

import torch

from sae.data.prompts import Prompt, pronounce
from sae.lookahead.interventions import Attribution, Prepared
from sae.statistics import Z95

# The effect size the report checks the chosen features against: half of the an-vs-a gap removed.
TARGET_FRACTION = 0.5

# --------------------------------------------------------------------------- behaviour statistics


def bootstrap_gap(ld: torch.Tensor, is_an: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(ld | an-noun) - mean(ld | a-noun), with a 95% percentile bootstrap interval
    (each group resampled on its own)."""
    an, a = ld[is_an].double(), ld[~is_an].double()
    out = {"n_an": len(an), "n_a": len(a), "mean_an": _float(an.mean()) if len(an) else None,
           "mean_a": _float(a.mean()) if len(a) else None, "value": None, "ci": [None, None]}
    if len(an) == 0 or len(a) == 0:
        return out
    g = torch.Generator().manual_seed(seed)
    boot = (an[torch.randint(len(an), (n_boot, len(an)), generator=g)].mean(1)
            - a[torch.randint(len(a), (n_boot, len(a)), generator=g)].mean(1))
    out["value"] = _float(an.mean() - a.mean())
    out["ci"] = [_float(boot.quantile(0.025)), _float(boot.quantile(0.975))]
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
           "delta_ld_an": _float((edited - clean)[an].mean()) if len(an) else None,
           "delta_ld_a": _float((edited - clean)[a].mean()) if len(a) else None}
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
    out |= {"gap_clean": _float(g_clean), "gap_edited": _float(g_edit), "removed": _float(g_clean - g_edit),
            "removed_ci": [_float(removed.quantile(0.025)), _float(removed.quantile(0.975))]}
    if g_clean > 0:
        frac = removed / b_clean.where(b_clean > 0, torch.full_like(b_clean, float("nan")))
        frac = frac[torch.isfinite(frac)]
        out["fraction_removed"] = _float((g_clean - g_edit) / g_clean)
        if len(frac):
            out["fraction_ci"] = [_float(frac.quantile(0.025)), _float(frac.quantile(0.975))]
    return out


def behaviour_summary(ld: torch.Tensor, logp_a: torch.Tensor, logp_an: torch.Tensor, is_an: torch.Tensor,
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """The gap plus how often the model prefers the right article."""
    right = torch.where(is_an, ld > 0, ld < 0)
    p_article = torch.where(is_an, logp_an, logp_a).exp()
    return {"gap": bootstrap_gap(ld, is_an, n_boot, seed),
            "right_article_preferred": _float(right.double().mean()),
            "an_preferred_an_nouns": _float((ld[is_an] > 0).double().mean()) if bool(is_an.any()) else None,
            "an_preferred_a_nouns": _float((ld[~is_an] > 0).double().mean()) if bool((~is_an).any()) else None,
            "mean_p_right_article": _float(p_article.mean()),
            "mean_p_a": _float(logp_a.exp().mean()), "mean_p_an": _float(logp_an.exp().mean())}


def _float(x) -> float:
    return float(x)


# --------------------------------------------------------------------------- aligned profiles


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


def onset(group: dict[str, torch.Tensor], baseline: dict[str, torch.Tensor], offsets: Sequence[int],
          alpha: float = 0.05) -> list[int | None]:
    """Per feature, the earliest offset where the group's mean exceeds the baseline's by
    more than a one-sided z bound, Bonferroni-corrected over the offsets (so a single
    lucky early offset does not count), with at least two texts on each side; None when
    it never does."""
    z = NormalDist().inv_cdf(1 - alpha / len(offsets))
    diff = group["mean"] - baseline["mean"]
    se = (group["se"] ** 2 + baseline["se"] ** 2).sqrt()
    enough = (group["n"] >= 2) & (baseline["n"] >= 2)
    above = enough & torch.isfinite(se) & (diff - z * se > 0)
    out = []
    for f in range(diff.shape[-1]):
        hits = above[:, f].nonzero()
        out.append(int(offsets[int(hits[0])]) if len(hits) else None)
    return out


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
            "top": [{"feature": int(f), "mean_an": _float(sa["mean"][j, f]), "mean_a": _float(sb["mean"][j, f]),
                     "z": _float(z[f]), "onset_an_over_a": on_an[f], "onset_a_over_an": on_a[f]} for f in order]}


def _clean(xs: list[float]) -> list[float | None]:
    return [None if x != x else round(x, 6) for x in xs]  # NaN -> null in JSON


# --------------------------------------------------------------------------- candidate ranking


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
        return {"feature": f, "attribution": _float(attr[f]), "attribution_at_sinks": _float(sink_attr[f]),
                "act_at": _float(at_n[f]), "act_at_rest": _float(at_r[f]), "act_before": _float(bf_n[f]),
                "act_before_rest": _float(bf_r[f]), "dla_noun": _float(effects[f, 0]),
                "dla_an_minus_a": _float(effects[f, 1] - effects[f, 2])}

    by_act = (at_n - at_r).argsort(descending=True)[:top]
    return {"by_attribution": [row(int(f)) for f in order], "by_activation_at": [row(int(f)) for f in by_act]}


# --------------------------------------------------------------------------- corpus occurrences

_OCCURRENCE = re.compile(r"(?<=\s)(a|an) ([a-z]{3,})\b")


def article_occurrences(docs: Iterable, nouns: set[str], n_per_article: int, max_per_noun: int = 3,
                        context_chars: int = 200, only: set[str] | None = None) -> tuple[list[Prompt], list[str]]:
    """Texts where "a"/"an" precedes one of `nouns` (and the article fits the noun's
    pronunciation): Prompt(prompt=the text before the article, noun, article) and the text
    right after the noun (for offsets past it). Up to `n_per_article` of each article, at
    most `max_per_noun` per noun, in document order; `only` restricts to those nouns."""
    prompts: list[Prompt] = []
    tails: list[str] = []
    count = {"a": 0, "an": 0}
    per_noun: dict[str, int] = {}
    for d in docs:
        if min(count.values()) >= n_per_article:
            break
        for m in _OCCURRENCE.finditer(d.text):
            art, noun = m.group(1), m.group(2)
            if noun not in nouns or (only is not None and noun not in only):
                continue
            if count[art] >= n_per_article or per_noun.get(noun, 0) >= max_per_noun:
                continue
            if pronounce(noun).article != art:
                continue  # "an historic", "a hour": old or odd spellings
            head = d.text[max(0, m.start() - context_chars):m.start()].rstrip()
            if m.start() > context_chars:
                head = head.split(" ", 1)[-1]  # no cut word at the left edge
            if len(head.split()) < 3:
                continue
            tail = re.match(r"\S*(\s+\S+)?", d.text[m.end():]).group(0)
            prompts.append(Prompt(head, noun, art, "corpus", source=f"{d.source}:{d.id}"))
            tails.append(tail)
            count[art] += 1
            per_noun[noun] = per_noun.get(noun, 0) + 1
    return prompts, tails
