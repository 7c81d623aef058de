"""Does a feature fire before the word more than before other nouns? Tests at the article's
choice (offset -1), with the design the contexts allow:

- Units are clusters (one definition's riddles and chat questions, one corpus document),
  never single contexts, so near-copies of one text do not count as independent evidence.
- Clusters of the word and of the general controls are split into two halves, alternately
  within each block (same origin, article, frames), in a seeded order: variants of one
  definition are never on both sides.
- Discovery (ranking half): for every latent, van Elteren's stratified rank statistic of the
  word's clusters against the controls of the same article, frame by frame, standardised
  (z). The best `confirm` latents by z go on; nothing is gated here.
- Confirmation (held-out half): the same statistic on clusters not used for ranking, with
  an exact or Monte Carlo permutation p (labels shuffled among clusters of one block), and
  Holm over the latents confirmed. The family-wise error over all latents is held at alpha:
  a latent can pass only by being confirmed on data that did not pick it. As many latents
  are confirmed as the held-out design can resolve: when even one cannot reach its level,
  the answer is "inconclusive".
- Specificity (held-out half): the word against nouns of its own WordNet category, and that
  category against the general controls, for every confirmed latent: "about to say a
  noun.person noun" is a verdict of its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from sae.lookahead.finder.contexts import Context
from sae.statistics import Design, cluster_means, frame_scores, holm, permutation_test, stratified_auc


def cluster_blocks(contexts: Sequence[Context]) -> dict[str, str]:
    """cluster -> its block: origin, article and the frames its contexts use. Only clusters
    of one block are exchangeable (same kinds of text, same article written the same ways)."""
    frames: dict[str, set[str]] = {}
    origin: dict[str, str] = {}
    for c in contexts:
        frames.setdefault(c.cluster, set()).add(c.frame)
        origin[c.cluster] = c.origin
    return {k: f"{origin[k]} || " + " + ".join(sorted(v)) for k, v in frames.items()}


def split_clusters(contexts: Sequence[Context], seed: int) -> dict[str, str]:
    """cluster -> "rank" or "check": alternately within each block per role, in a seeded
    order, the alternation carried across blocks so that single clusters spread over both
    halves. Category clusters all go to "check" (they never rank anything)."""
    rng = random.Random(f"saex-find-split-{seed}")
    blocks = cluster_blocks(contexts)
    role = {c.cluster: c.role for c in contexts}
    out: dict[str, str] = {}
    for r in ("word", "control"):
        toggle = 0
        by_block: dict[str, list[str]] = {}
        for k in dict.fromkeys(c.cluster for c in contexts if c.role == r):
            by_block.setdefault(blocks[k], []).append(k)
        for b in sorted(by_block):
            ks = sorted(by_block[b])
            rng.shuffle(ks)
            for k in ks:
                out[k] = ("rank", "check")[toggle]
                toggle ^= 1
    for k, r in role.items():
        out.setdefault(k, "check")
    return out


def shuffle_roles(contexts: Sequence[Context], seed: int) -> list[Context]:
    """A control run: the word and general-control labels shuffled among the clusters of each
    block (of the word's article). Any feature found this way is a false positive."""
    from dataclasses import replace

    rng = random.Random(f"saex-find-shuffle-{seed}")
    blocks = cluster_blocks(contexts)
    role = {c.cluster: c.role for c in contexts}
    new = dict(role)
    by_block: dict[str, list[str]] = {}
    for k, r in role.items():
        if r in ("word", "control"):
            by_block.setdefault(blocks[k], []).append(k)
    for b in sorted(by_block):
        ks = sorted(by_block[b])
        labels = [role[k] for k in ks]
        rng.shuffle(labels)
        new.update(zip(ks, labels))
    return [replace(c, role=new[c.cluster]) for c in contexts]


def _units(values: torch.Tensor, contexts: Sequence[Context], rows: Sequence[int], x_role: str,
           columns: torch.Tensor | None = None) -> tuple[torch.Tensor, Design, list[str]]:
    """Cluster scores ("cluster f") and the design for contexts `rows`: x-units are clusters
    of `x_role`, the rest the comparison."""
    ctx = [contexts[i] for i in rows]
    v = values[list(rows)]
    if columns is not None:
        v = v[:, columns]
    if not rows:
        return v.double(), Design([], []), []
    scores = frame_scores(v, [c.frame for c in ctx])
    unit_scores, names = cluster_means(scores, [c.cluster for c in ctx])
    blocks = cluster_blocks(ctx)
    role = {c.cluster: c.role for c in ctx}
    return unit_scores, Design([role[k] == x_role for k in names], [blocks[k] for k in names]), names


def _raw_units(values: torch.Tensor, contexts: Sequence[Context], rows: Sequence[int], columns) -> torch.Tensor:
    v = values[list(rows)][:, columns].double().nan_to_num(0.0)
    means, _ = cluster_means(v, [contexts[i].cluster for i in rows])
    return means


def activation_tests(values: torch.Tensor, contexts: Sequence[Context], article: str, half: dict[str, str],
                     confirm: int, alpha: float, seed: int) -> dict:
    """values: "context d_sae" activations at -1 for `contexts` (word, controls, category).
    Returns the discovery ranking, the confirmed latents, specificity, and the designs."""
    same = [i for i, c in enumerate(contexts) if c.prompt.article == article]
    rank_rows = [i for i in same if contexts[i].role in ("word", "control") and half[contexts[i].cluster] == "rank"]
    check_rows = [i for i in same if contexts[i].role in ("word", "control") and half[contexts[i].cluster] == "check"]
    word_check = [i for i in check_rows if contexts[i].role == "word"]
    ctrl_check = [i for i in check_rows if contexts[i].role == "control"]
    cat_rows = [i for i in same if contexts[i].role == "category"]

    scores, design, _ = _units(values, contexts, rank_rows, "word")
    disc = permutation_test(scores, design, draws=2000, exact_limit=2000, seed=seed)
    z = disc["z"]

    _, check_design, _ = _units(values, contexts, check_rows, "word", torch.arange(1))  # the design alone
    resolvable = int(math.floor(alpha * check_design.relabellings + 1e-9)) if check_design.groups else 0
    k = max(0, min(confirm, resolvable))
    ranked = z.argsort(descending=True)
    order = ranked[z[ranked] > 0].tolist()
    selected = order[:k]
    out = {"discovery": {"design": design.counts(), "relabellings": design.relabellings, "min_p": design.min_p,
                         "exact": bool(disc["exact"]), "draws": int(disc["draws"])},
           "check": {"design": check_design.counts(), "relabellings": check_design.relabellings,
                     "min_p": check_design.min_p, "resolvable": resolvable, "tested": selected},
           "alpha": alpha, "z": z, "p_rank": disc["p"], "order": order,
           "strongest": {"feature": order[0] if order else int(z.argmax()),
                         "z": float(z.max()), "p": float(disc["p"][int(z.argmax())])}}
    tests: dict[int, dict] = {}
    if selected:
        cols = torch.tensor(selected)
        s, d, _ = _units(values, contexts, check_rows, "word", cols)
        res = permutation_test(s, d, draws=20_000, exact_limit=20_000, seed=seed + 1)
        auc = stratified_auc(_raw_units(values, contexts, check_rows, cols), d)
        verdicts = holm(res["p"].tolist(), alpha)
        for j, f in enumerate(selected):
            tests[f] = {"p": float(res["p"][j]), "z": float(res["z"][j]), "auc": float(auc[j]),
                        "exact": bool(res["exact"]), "level": verdicts[j]["level"], "passed": verdicts[j]["passed"]}
        out["check"]["exact"] = bool(res["exact"])
        out["check"]["draws"] = int(res["draws"])
    out["confirmation"] = tests
    confirmed = [f for f in selected if tests[f]["passed"]]
    out["confirmed"] = confirmed
    out["specificity"] = _specificity(values, contexts, word_check, cat_rows, ctrl_check, confirmed, alpha, seed)
    return out


def _specificity(values, contexts, word_rows, cat_rows, ctrl_rows, features: list[int], alpha: float,
                 seed: int) -> dict:
    """Per confirmed latent: word > its category's nouns (held-out word clusters against the
    category controls), and category > general controls (held-out controls), each one-sided,
    Holm over the latents within each family."""
    out: dict = {"features": {f: {"word_vs_category": None, "category_vs_controls": None, "kind": "not checked"}
                              for f in features}, "word_vs_category": None, "category_vs_controls": None}
    if not features or not cat_rows:
        return out
    cols = torch.tensor(features)
    families = {}
    for name, rows, x_role in (("word_vs_category", word_rows + cat_rows, "word"),
                               ("category_vs_controls", cat_rows + ctrl_rows, "category")):
        s, d, _ = _units(values, contexts, rows, x_role, cols)
        if not d.groups:
            continue
        res = permutation_test(s, d, draws=20_000, exact_limit=20_000, seed=seed + 2)
        auc = stratified_auc(_raw_units(values, contexts, rows, cols), d)
        levels = holm(res["p"].tolist(), alpha)
        families[name] = {f: {"p": float(res["p"][j]), "auc": float(auc[j]), "level": levels[j]["level"],
                              "passed": levels[j]["passed"]} for j, f in enumerate(features)}
        out[name] = {"design": d.counts(), "relabellings": d.relabellings, "min_p": d.min_p}
    for f in features:
        wc = families.get("word_vs_category", {}).get(f)
        cc = families.get("category_vs_controls", {}).get(f)
        if wc is None:
            kind = "not checked"
        elif wc["passed"]:
            kind = "word"
        elif cc is not None and cc["passed"]:
            kind = "category"
        else:
            kind = "unresolved"
        out["features"][f] = {"word_vs_category": wc, "category_vs_controls": cc, "kind": kind}
    return out
