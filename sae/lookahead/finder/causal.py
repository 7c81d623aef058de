"""Does the model use a confirmed feature to say the word? A lookahead-specific causal test.

Edits touch only positions before the article (offsets <= -1), with the SAE's error term
kept, so whatever moves the word's probability moved it through what the model computed
before it chose the article. Per feature, three tests:

- ablation on the held-out word contexts (clusters never used for ranking):
  - Δ[log P(word) - mean log P(alternatives)] at the article, the alternatives being the
    first tokens of same-category nouns of the same article (other control nouns where the
    word has no category): the word, not its category, loses probability;
  - Δlog P(right article) at -1: the lookahead signature, the article chosen because of
    what is planned;
- steering up (adding `steer` x the feature's typical activation) in neutral frames: the
  same relative Δ for the word. Steering alone shows the feature sufficient, not necessary.

The null for each candidate is its own set of random features, matched on the same held-out
contexts in activity (the share of contexts where they fire before the article), in edit size
(mean |activation| x decoder norm where they fire) and in log firing density, edited the
same way. Each test's p is its rank among them, (1 + as extreme) / (1 + n); n is chosen so
that the smallest p reaches the first Holm level over every test run. Where the SAE has too
few active latents for that, the test says its level is unreachable. Each test also states the
smallest mean effect that would have passed its level against those nulls (`detectable`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sae.statistics import bootstrap_mean, draws_for_level, empirical_p, holm, nearest_matches

NEUTRAL_FRAMES = ("I saw", "There was", "She told me about", "It was", "He is", "We met", "This is", "Look at")
TESTS = (("ablation", "word"), ("ablation", "article"), ("steering", "word"))


def alternative_ids(tokenizer, word: str, nouns: Sequence[str]) -> list[int]:
    """Distinct first tokens of ' noun' for `nouns`, without the word's own first token."""
    own = tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]
    out = []
    for n in nouns:
        t = tokenizer(" " + n, add_special_tokens=False)["input_ids"][0]
        if t != own and t not in out:
            out.append(t)
    return out


def traits(prepared, sae_directions: torch.Tensor, log_density: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ "d_sae 3": activity (share of contexts where a latent fires before the article),
    log10 of its mean edit size where it fires (|activation| x decoder norm), log10 density;
    and "d_sae" whether it fires at all here."""
    d = sae_directions.shape[0]
    fired_ctx = torch.zeros(d, dtype=torch.float64)
    size = torch.zeros(d, dtype=torch.float64)
    count = torch.zeros(d, dtype=torch.float64)
    for b in prepared.batches:
        mask = (b.ordinary & (b.offsets <= -1)).unsqueeze(-1)
        a = (b.acts.abs() * mask).cpu().double()
        fired_ctx += (a > 0).any(1).double().sum(0)
        size += a.sum((0, 1))
        count += (a > 0).double().sum((0, 1))
    norms = sae_directions.norm(dim=1).double().cpu()
    mean_size = torch.where(count > 0, size / count.clamp_min(1), torch.zeros_like(size)) * norms
    activity = fired_ctx / max(prepared.n, 1)
    out = torch.stack([activity, torch.log10(mean_size + 1e-6), log_density.double().cpu()], 1)
    return out, fired_ctx > 0


@torch.no_grad()
def edit_many(iv, prepared, features: Sequence[int], directions: torch.Tensor, word_id: int, alt_ids: Sequence[int],
              ablate: bool = False, values: dict[int, float] | None = None, chunk: int = 64) -> dict[int, tuple]:
    """Per feature, per context: the change in log P(word) - mean log P(alternatives) at the
    article and in log P(right article) at -1 when the feature alone is ablated (h - a_f d_f)
    or steered (h + v_f d_f) at every ordinary position before the article, the SAE's error
    term kept. Single-feature edits of many features run as one batch of (context, feature)
    rows; an ablation leaves a context where the feature never fires before the article
    untouched, so only those rows run. Returns f -> (d_word "n", d_article "n", rows run)."""
    from sae.lookahead.interventions import position_mask

    n = prepared.n
    out = {f: (torch.zeros(n), torch.zeros(n)) for f in features}
    fired = dict.fromkeys(features, 0)
    alts = torch.tensor(list(alt_ids), dtype=torch.long)
    start = 0
    for b in prepared.batches:
        dev = b.ids.device
        mask = position_mask(b, "prompt")  # ordinary positions, offset <= -1
        art = b.article_pos
        a_ids, an_ids = b.article_ids(dev)
        is_an = torch.tensor([e.prompt.article == "an" for e in b.items], device=dev)
        right_ids = torch.where(is_an, an_ids, a_ids)
        pos = torch.stack([art - 1, art], 1)

        def read(ids, h, rows):
            logp = iv.upper.logits_at(ids, h, pos[rows]).log_softmax(-1)
            word = logp[:, 1, word_id]
            if len(alts):
                word = word - logp[:, 1, alts.to(dev)].mean(-1)
            return word, logp[:, 0].gather(-1, right_ids[rows, None]).squeeze(-1)

        every = torch.arange(len(b.items), device=dev)
        clean_word, clean_art = read(b.ids, b.h, every)
        pairs = []
        for f in features:
            hit = ((b.acts[..., f] != 0) & mask).any(1).nonzero().squeeze(-1).tolist() if ablate else every.tolist()
            pairs += [(r, f) for r in hit]
        for k in range(0, len(pairs), chunk):
            part = pairs[k:k + chunk]
            rows = torch.tensor([r for r, _ in part], device=dev)
            feats = torch.tensor([f for _, f in part], device=dev)
            if ablate:
                coef = -b.acts[rows, :, feats].float()
            else:
                coef = torch.tensor([values[f] for _, f in part], device=dev)[:, None].expand(-1, b.ids.shape[1])
            coef = coef * mask[rows].float()
            h = b.h[rows] + coef[..., None] * directions[feats][:, None, :].to(b.h.dtype)
            word, artp = read(b.ids[rows], h, rows)
            for j, (r, f) in enumerate(part):
                out[f][0][start + r] = float(word[j] - clean_word[r])
                out[f][1][start + r] = float(artp[j] - clean_art[r])
                fired[f] += 1
        start += len(b.items)
    return {f: (out[f][0], out[f][1], fired[f]) for f in features}


def causal_tests(iv, held, frames, candidates: Sequence[int], word_id: int, alt_ids: Sequence[int],
                 log_density: torch.Tensor, typical: dict[int, float] | None, steer: float, alpha: float,
                 n_boot: int, seed: int, batch_size: int = 16) -> dict:
    """Every test of TESTS for each candidate, against its matched random features, with Holm
    over all of them. `held`: prepared held-out word contexts; `frames`: prepared neutral frames."""
    from sae.lookahead.finder.power import detectable_effect
    from sae.lookahead.interventions import decoder_directions, typical_activation

    candidates = [int(f) for f in candidates]
    if not candidates or held.n == 0:
        return {"features": {}, "tests": [], "random": {}, "held_out_contexts": held.n}
    directions = decoder_directions(iv.sae).float()
    m = len(TESTS) * len(candidates)
    n_null = draws_for_level(alpha / m)
    tr, active = traits(held, directions, log_density)
    allowed = active.clone()
    allowed[candidates] = False
    matched = {f: nearest_matches(tr, f, n_null, allowed) for f in candidates}
    pool = sorted({r for rs in matched.values() for r in rs})
    everything = candidates + pool
    typical = typical or {}
    dose = typical_activation(held, everything).tolist()
    values = {f: steer * typical.get(f, dose[j]) for j, f in enumerate(everything)}

    abl = edit_many(iv, held, everything, directions, word_id, alt_ids, ablate=True, chunk=batch_size * 4)
    ste = edit_many(iv, frames, everything, directions, word_id, alt_ids, values=values, chunk=batch_size * 4)
    effect = {("ablation", "word"): {f: abl[f][0] for f in everything},
              ("ablation", "article"): {f: abl[f][1] for f in everything},
              ("steering", "word"): {f: ste[f][0] for f in everything}}
    rows, pvals = [], []
    for f in candidates:
        null = matched[f]
        for op, target in TESTS:
            per_ctx = effect[(op, target)][f]
            est = bootstrap_mean(per_ctx, n_boot, seed)
            nulls = torch.tensor([float(effect[(op, target)][r].mean()) for r in null], dtype=torch.float64)
            lower = op == "ablation"
            p = empirical_p(est["mean"], nulls, lower=lower) if len(nulls) else 1.0
            rows.append({"feature": f, "op": op, "target": target, "mean": est["mean"], "ci": est["ci"],
                         "n": est["n"], "contexts_fired": abl[f][2] if op == "ablation" else None,
                         "null_mean": float(nulls.mean()) if len(nulls) else None,
                         "null_sd": float(nulls.std()) if len(nulls) > 1 else None,
                         "n_null": len(nulls), "null_values": [round(float(v), 6) for v in nulls], "p": p,
                         "min_p": 1 / (1 + len(nulls)),
                         "direction": "lowers" if lower else "raises"})
            pvals.append(p)
    for r, h in zip(rows, holm(pvals, alpha)):
        # an effect in the wrong direction never passes, whatever its rank
        ok = r["ci"][0] is not None and ((r["ci"][1] < 0) if r["direction"] == "lowers" else (r["ci"][0] > 0))
        r["level"] = h["level"]
        r["passed"] = bool(h["passed"] and ok)
        r["reachable"] = r["min_p"] <= h["level"] + 1e-12
        r["detectable"] = detectable_effect(r["null_values"], h["level"], r["direction"] == "lowers")
    features = {}
    for f in candidates:
        mine = {(r["op"], r["target"]): r for r in rows if r["feature"] == f}
        t = tr[f]
        near = tr[matched[f]] if matched[f] else tr[:0]
        features[str(f)] = {"tests": [mine[k] for k in TESTS],
                       "ablation_word": mine[("ablation", "word")]["passed"],
                       "ablation_article": mine[("ablation", "article")]["passed"],
                       "steering_word": mine[("steering", "word")]["passed"],
                       "reachable": all(r["reachable"] for r in mine.values()),
                       "steer_added": values[f],
                       "match": {"activity": float(t[0]), "log10_edit_size": float(t[1]),
                                 "log10_density": float(t[2]),
                                 "null_activity": [float(near[:, 0].min()), float(near[:, 0].max())] if len(near)
                                 else None,
                                 "null_log10_edit_size": [float(near[:, 1].min()), float(near[:, 1].max())]
                                 if len(near) else None}}
    return {"features": features, "tests": rows, "held_out_contexts": held.n, "frames": frames.n,
            "random": {"per_candidate": n_null, "features": {str(f): matched[f] for f in candidates},
                       "pool": len(pool), "tests_in_family": m,
                       "first_holm_level": alpha / m, "smallest_p": 1 / (1 + n_null)},
            "alpha": alpha}
