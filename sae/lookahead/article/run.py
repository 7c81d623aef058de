"""`saex lookahead RUN`: which SAE features carry the a/an choice, when they turn on
relative to the article, and whether ablating them moves the choice more than random
features of the same firing density. Writes RUN/lookahead/report.json and PNG plots.

The steps, each reported with numbers and intervals:
1. behaviour on every prompt set: logit(an) - logit(a) and the an-noun minus a-noun gap;
2. selection, on the selection set only: latents ranked by gradient x activation
   attribution to the gap, the best candidates ablated one at a time, the
   `n_features` that remove most of the gap kept;
3. test, on a disjoint set (other nouns, other glosses): the kept features ablated
   together, against `random_sets` density-matched random sets (z-score and permutation
   p-value), each feature alone, by position (last token / earlier ones), at BOS and
   sink positions only (reported apart), on the explicit-word and noun-in-context
   controls, and steered (activations multiplied by each dose) for a dose-response curve;
4. article-aligned profiles of the kept features on completed test riddles and corpus
   text, an-noun vs a-noun, with onsets, and which of all latents separate the two at -1;
5. a target noun (astronomer by default): its candidate features and their profiles;
6. the answer in sentences (`answer`), null results stated as such.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from sae.data.occurrences import article_occurrences
from sae.data.prompts import (
    Prompt,
    chat_articles_ok,
    chat_prompt,
    controls,
    corpus_nouns,
    load_prompt_file,
    noun_prompts,
    riddle_question,
    riddle_set,
    wordnet_nouns,
    write_prompt_file,
)
from sae.errors import SaexError
from sae.fsutil import ensure_writable_dir, write_json_atomic
from sae.index.output_effects import token_directions
from sae.lookahead.activity import aligned_activations, log_densities, profile_report, separating_features
from sae.lookahead.article.answer import answer
from sae.lookahead.article.config import REPORT_FORMAT, LookaheadConfig
from sae.lookahead.article.plots import plot_report
from sae.lookahead.article.ranking import gap_attribution, logit_effects, rank_for_noun
from sae.lookahead.interventions import (
    Edit,
    Intervener,
    Outcome,
    Prepared,
    decoder_directions,
    encode_prompts,
    sink_threshold,
    typical_activation,
)
from sae.report import Clock, Report
from sae.runs.files import LOOKAHEAD_DIR, REPORT_FILE
from sae.statistics import behaviour_summary, bootstrap_gap, density_matched_sets, empirical_p, gap_change

# --------------------------------------------------------------------------- inputs


def _load(cfg: LookaheadConfig):
    from sae.runs.load import load_model_and_sae

    return load_model_and_sae(cfg.run, cfg.model, cfg.device)


def prompt_sets(cfg: LookaheadConfig, tokenizer) -> tuple[dict[str, list[Prompt]], dict[str, str], object]:
    """select, test and the controls of the test nouns; plus where each came from."""
    sets, sources, synsets = {}, {}, None
    if cfg.select_prompts is None or cfg.test_prompts is None:
        synsets = wordnet_nouns()[0]

        def short(noun: str) -> bool:
            return len(tokenizer(" " + noun, add_special_tokens=False)["input_ids"]) <= cfg.max_noun_tokens

        for split, given in (("select", cfg.select_prompts), ("test", cfg.test_prompts)):
            if given is None:
                riddles = riddle_set(cfg.riddles_per_article, split, cfg.seed, short)
                if len(riddles) < 4:
                    raise SaexError(f"too few WordNet riddles for the {split} set ({len(riddles)})",
                                    "raise --max-noun-tokens or give --select-prompts/--test-prompts")
                sets[split] = [r.prompt for r in riddles]
                sources[split] = f"WordNet riddles, {split} half of the nouns"
                if split == "test":
                    for name, ps in controls(riddles).items():
                        sets[name] = ps
                        sources[name] = f"control for the test nouns: {name}"
                    chat = chat_forms(tokenizer, sets["test"]) if cfg.chat else []
                    if chat:
                        sets["chat"] = chat
                        sources["chat"] = "the test riddles as chat questions (the answer starts with 'An'/'A')"
    for split, given in (("select", cfg.select_prompts), ("test", cfg.test_prompts)):
        if given is not None:
            sets[split] = load_prompt_file(given)
            sources[split] = str(given)
    for split in ("select", "test"):
        arts = {p.article for p in sets[split]}
        if arts != {"a", "an"}:
            raise SaexError(f"the {split} prompt set has only {' and '.join(sorted(arts))}-noun prompts",
                            "a gap needs prompts of both articles")
    if "explicit" not in sets:
        seen = {}
        for p in sets["test"]:
            seen.setdefault(p.noun, p.article)
        sets["explicit"] = [Prompt(f"The indefinite article for '{n}' is", n, a, "explicit", source="template")
                            for n, a in seen.items()]
        sources["explicit"] = "control for the test nouns: explicit"
    return sets, sources, synsets


def chat_forms(tokenizer, prompts: list[Prompt]) -> list[Prompt]:
    """Riddles ("... is called") as chat questions; [] for a model without a chat template or
    whose tokenizer splits "A"/"An"."""
    if not chat_articles_ok(tokenizer):
        return []
    out = [chat_prompt(tokenizer, riddle_question(p.prompt), p.noun, p.article, p.source) for p in prompts
           if p.condition in ("riddle", "classic")]
    return [p for p in out if p is not None]


# --------------------------------------------------------------------------- the analysis




def run_lookahead(cfg: LookaheadConfig) -> Report:
    """Everything above; writes the report and plots, returns the report."""
    from sae.runs.load import resolve_run

    clock = Clock()
    cfg = replace(cfg, run=str(resolve_run(cfg.run)))  # a release/sae_id or sparsify folder: our run folder
    out_dir = Path(cfg.out) if cfg.out else Path(cfg.run) / LOOKAHEAD_DIR
    if cfg.corpus != "none":
        _corpus_docs(cfg.corpus)  # a missing corpus is an error now, not after the long steps
    lm, sae = _load(cfg)
    ensure_writable_dir(out_dir, "report")
    threshold, source = sink_threshold(sae)
    iv = Intervener(lm, sae, threshold, source, batch_size=cfg.batch_size, progress=cfg.progress)
    tok = lm.tokenizer
    sets, sources, synsets = prompt_sets(cfg, tok)
    target = noun_prompts(cfg.target_noun.strip(), synsets or ()) if cfg.target_noun else None
    if target and cfg.chat:
        target += chat_forms(tok, target)
    for name in ("select", "test"):
        write_prompt_file(out_dir / f"prompts-{name}.jsonl", sets[name])
    clock.tick("load")

    prep = {name: iv.prepare(encode_prompts(tok, ps), desc=f"{name} prompts") for name, ps in sets.items()}
    clean = {name: iv.run(p) for name, p in prep.items()}
    report: dict = {"format": REPORT_FORMAT, "sae": sae.describe(), "model": lm.spec,
                    "hook": lm.hook_point(sae.hook_name or sae.module_path).to_dict(),
                    "config": asdict(cfg),
                    "prompt_sets": {n: {"source": sources[n], "n": len(ps), "n_an": sum(p.article == "an" for p in ps),
                                        "n_a": sum(p.article == "a" for p in ps)} for n, ps in sets.items()},
                    "sinks": {"threshold": prep["test"].sink_threshold,
                              "threshold_source": prep["test"].sink_threshold_source,
                              "positions_found": {n: p.n_sinks for n, p in prep.items()},
                              "policy": "BOS/special and sink positions are never edited or attributed by default; "
                                        "their effects are in causal.sinks_only and attribution_at_sinks"},
                    "forward": iv.upper.path}
    report["behaviour"] = {n: behaviour_summary(o.ld, o.logp_a, o.logp_an, o.is_an, cfg.bootstrap, cfg.seed)
                           for n, o in clean.items()}
    clock.tick("behaviour")

    selection, selected, attr = _select(cfg, iv, prep["select"], clean["select"])
    report["selection"] = selection
    clock.tick("selection")

    log_d, density_source = log_densities(sae, prep["select"])
    report["causal"], report["dose_response"] = _test(cfg, iv, prep, clean, selected, attr, log_d, density_source)
    clock.tick("causal tests")

    grad_last = attr.grad_mean([-1])
    directions = decoder_directions(sae)
    effects = logit_effects(directions, token_directions(lm, [iv.an_id, iv.a_id]))
    report["features"] = [{"feature": f, "log10_density": float(log_d[f]),
                           "dla_an_minus_a": float(effects[f, 0] - effects[f, 1]),
                           "grad_per_unit_at_minus1": float(grad_last[f]),
                           "typical_activation": float(typical_activation(prep["select"], [f])[0])}
                          for f in selected]
    nouns = {p.noun for ps in sets.values() for p in ps} | (corpus_nouns() if synsets is not None else set())
    report["profiles"] = _profiles(cfg, iv, sets["test"], selected, tok, nouns)
    clock.tick("profiles")
    if target:
        report["target"] = _target(cfg, iv, target, prep["test"], directions, tok)
        clock.tick("target noun")
    report["answer"] = answer(report)
    report["plots"] = plot_report(report, out_dir)
    clock.tick("plots")
    report["seconds"] = {"total": round(time.perf_counter() - clock.t0, 1), **clock.steps}
    write_json_atomic(out_dir / REPORT_FILE, report)
    return Report("lookahead", report, out_dir / REPORT_FILE)


def _select(cfg: LookaheadConfig, iv: Intervener, prep: Prepared, clean: Outcome):
    """Rank by attribution on the selection set, confirm by single ablations, keep the best."""
    from tqdm.auto import tqdm

    attr = iv.attribute(prep)
    is_an = clean.is_an
    gap_attr = gap_attribution(attr, is_an)
    candidates = [int(f) for f in gap_attr.argsort(descending=True)[:cfg.n_candidates]]
    rows = []
    for f in tqdm(candidates, desc="candidate ablations", disable=not cfg.progress, leave=False):
        edited = iv.run(prep, Edit((f,), "ablate", positions=cfg.positions))
        change = gap_change(clean.ld, edited.ld, is_an, cfg.bootstrap, cfg.seed)
        rows.append({"feature": f, "gap_attribution": float(gap_attr[f]),
                     "gap_attribution_at_sinks": float(attr.sink_attr[is_an, f].mean()
                                                       - attr.sink_attr[~is_an, f].mean()),
                     "removed": change["removed"], "removed_ci": change["removed_ci"],
                     "fraction_removed": change["fraction_removed"]})
    kept = sorted((r for r in rows if (r["removed"] or 0) > 0), key=lambda r: -r["removed"])[:cfg.n_features]
    selected = [r["feature"] for r in kept]
    sink_total = attr.sink_attr.abs().sum(1)
    all_total = attr.attr.abs().sum((1, 2)) + sink_total
    selection = {"set": "select", "positions": cfg.positions,
                 "method": f"top {cfg.n_candidates} latents by gradient x activation attribution to the an-vs-a gap "
                           f"(ordinary prompt positions), each ablated alone; kept: up to {cfg.n_features} that "
                           "remove the most of the gap on this set",
                 "clean_gap": bootstrap_gap_dict(clean, cfg), "candidates": rows, "selected": selected,
                 "attribution_share_at_sinks": float((sink_total / all_total.clamp_min(1e-12)).mean())}
    if not selected:
        selection["note"] = "no candidate removed any of the gap on the selection set"
    return selection, selected, attr


def bootstrap_gap_dict(o: Outcome, cfg: LookaheadConfig) -> dict:
    return bootstrap_gap(o.ld, o.is_an, cfg.bootstrap, cfg.seed)


def _effect(cfg: LookaheadConfig, clean: Outcome, edited: Outcome) -> dict:
    change = gap_change(clean.ld, edited.ld, clean.is_an, cfg.bootstrap, cfg.seed)
    d_noun = edited.logp_noun - clean.logp_noun
    change |= {"delta_logp_noun": float(d_noun.mean()),
               "delta_p_noun": float((edited.logp_noun.exp() - clean.logp_noun.exp()).mean()),
               "delta_ld_mean": float((edited.ld - clean.ld).mean())}
    return change


def _error_term(cfg, iv: Intervener, prep: dict[str, Prepared], clean: Outcome) -> dict:
    """The SAE's error term set to its selection-set mean (latents kept) at the edited positions
    and at -1 alone: how much of the gap the SAE's latents do not carry. Every feature
    intervention keeps the error term, so a gap that lives there is out of their reach."""
    out = {"meaning": "the SAE's error term (residual minus reconstruction) replaced by its mean over the selection "
                      "set's prompts at these positions, every latent kept"}
    for name, pos in (("edited_positions", cfg.positions), ("last", "last")):
        mean = iv.error_mean(prep["select"], pos)
        out[name] = _effect(cfg, clean, iv.run_error_at_mean(prep["test"], pos, mean)) | {"positions": pos}
    return out


def _test(cfg, iv: Intervener, prep: dict[str, Prepared], clean: dict[str, Outcome], selected: list[int], attr,
          log_d: torch.Tensor, density_source: str) -> tuple[dict, dict]:
    from tqdm.auto import tqdm

    test, c = prep["test"], clean["test"]
    causal: dict = {"set": "test", "positions": cfg.positions, "clean_gap": bootstrap_gap_dict(c, cfg),
                    "selected": selected}
    causal["error_term"] = _error_term(cfg, iv, prep, c)
    if not selected:
        causal["note"] = "no features were selected, so nothing was tested"
        return causal, {}
    run = lambda p, feats, **kw: iv.run(p, Edit(tuple(feats), positions=kw.pop("positions", cfg.positions), **kw))
    causal_outcome = run(test, selected)
    causal["ablation"] = _effect(cfg, c, causal_outcome)
    causal["by_position"] = {pos: _effect(cfg, c, run(test, selected, positions=pos)) for pos in ("last", "before")}
    causal["sinks_only"] = _effect(cfg, c, run(test, selected, positions="sinks"))
    causal["sinks_only"]["positions_found"] = test.n_sinks
    causal["single_features"] = {str(f): _effect(cfg, c, run(test, [f])) for f in selected}

    sets, worst = density_matched_sets(log_d, selected, cfg.random_sets, cfg.seed, cfg.density_tolerance)
    removed = []
    for s in tqdm(sets, desc="random controls", disable=not cfg.progress, leave=False):
        removed.append(_effect(cfg, c, run(test, s))["removed"])
    r = torch.tensor(removed, dtype=torch.float64)
    sel_removed = causal["ablation"]["removed"]
    std = float(r.std()) if len(r) > 1 else float("nan")
    gap = causal["ablation"]["gap_clean"]
    causal["random"] = {
        "n_sets": len(sets), "set_size": len(selected), "density_source": density_source,
        "density_tolerance": cfg.density_tolerance, "max_abs_log10_density_difference": worst,
        "sets": sets, "removed": removed, "removed_mean": float(r.mean()), "removed_std": std,
        "fraction_removed_mean": float(r.mean()) / gap if gap and gap > 0 else None,
        "z": (sel_removed - float(r.mean())) / std if std and std > 0 else None,
        "p_permutation": empirical_p(sel_removed, r, lower=False),
    }
    causal["controls"] = {}
    for name in (n for n in ("explicit", "in_context", "chat") if n in prep):
        cc = clean[name]
        ctrl_random = [_effect(cfg, cc, run(prep[name], s))["removed"] for s in sets[:3]]
        causal["controls"][name] = {"ablation": _effect(cfg, cc, run(prep[name], selected)),
                                    "random_removed_first3": ctrl_random}

    # Steering by scaling: a latent grows or shrinks along its own decoder direction where it
    # already fires, so no sign has to be guessed and silent positions stay untouched.
    dose = {"doses": cfg.doses, "op": "scale", "positions": cfg.positions,
            "meaning": "activations of the features multiplied by the dose (1 = clean, 0 = ablated)"}

    def outcome(feats: list[int], m: float) -> Outcome:
        if m == 1:
            return c
        if m == 0 and feats == selected:
            return causal_outcome
        return run(test, feats, op="scale", value=float(m))

    def curve(feats: list[int]) -> dict:
        rows = {"ld_an": [], "ld_a": [], "gap": [], "logp_noun": []}
        for m in cfg.doses:
            o = outcome(feats, m)
            rows["ld_an"].append(float(o.ld[o.is_an].mean()))
            rows["ld_a"].append(float(o.ld[~o.is_an].mean()))
            rows["gap"].append(rows["ld_an"][-1] - rows["ld_a"][-1])
            rows["logp_noun"].append(float(o.logp_noun.mean()))
        return rows

    dose["selected"] = curve(selected)
    dose["random"] = [curve(s) for s in sets[:cfg.dose_random_sets]]
    return causal, dose


def _profiles(cfg, iv: Intervener, test_prompts: list[Prompt], features: list[int], tok, nouns: set[str]) -> dict:
    offsets = list(range(-cfg.profile_before, 3))
    texts = {"riddles": (list(test_prompts), ["."] * len(test_prompts))}
    if cfg.corpus != "none":
        texts["corpus"] = article_occurrences(_corpus_docs(cfg.corpus), nouns, cfg.corpus_occurrences)
    out = {"offsets": offsets, "features": features, "sources": {}}
    for name, (ps, tails) in texts.items():
        if not ps or len({p.article for p in ps}) < 2:
            out["sources"][name] = {"note": "too few texts of both articles"}
            continue
        prep = iv.prepare(encode_prompts(tok, ps, completion=True, suffix=tails), desc=f"{name} texts")
        every = aligned_activations(prep, offsets)
        is_an = torch.tensor([p.article == "an" for p in ps])
        separating = separating_features(every, is_an, offsets)
        acts = every[..., torch.as_tensor(features, dtype=torch.long)]
        rep = profile_report(acts, {"an": is_an, "a": ~is_an}, features, offsets, ("an", "a"))
        # the other direction too: a feature that marks a-nouns has its onset there
        rep_a = profile_report(acts, {"a": ~is_an, "an": is_an}, features, offsets, ("a", "an"))
        for f in rep["features"]:
            rep["features"][f]["onset_a_over_an"] = rep_a["features"][f]["onset"]
            rep["features"][f]["onset_an_over_a"] = rep["features"][f].pop("onset")
        rep["examples"] = [p.prompt[-60:] + f" [{p.article}] {p.noun}" for p in ps[:3]]
        # Do the chosen features, together, know the coming noun's article before it is written?
        at = acts[:, offsets.index(-1)].nan_to_num(0).sum(-1)
        rep["selected_total_at_minus1"] = bootstrap_gap(at, is_an, cfg.bootstrap, cfg.seed)
        rep["separating_at_minus1"] = separating  # over every latent, chosen or not
        out["sources"][name] = rep
    return out


def _corpus_docs(spec: str):
    from sae.data.corpus import open_corpus

    return open_corpus(spec).documents("heldout", generated=False)


def _target(cfg, iv: Intervener, prompts: list[Prompt], rest: Prepared, directions: torch.Tensor, tok) -> dict:
    noun = prompts[0].noun
    prep = iv.prepare(encode_prompts(tok, prompts), desc="target prompts")
    attr = iv.attribute(prep)
    o = iv.run(prep)
    noun_id = tok(" " + noun, add_special_tokens=False)["input_ids"][0]
    effects = logit_effects(directions, token_directions(iv.lm, [noun_id, iv.an_id, iv.a_id]))
    art = prompts[0].article
    ranking = rank_for_noun(prep, attr, rest, effects, art)
    out = {"noun": noun, "article": art, "noun_first_token": tok.decode([noun_id]),
           "prompts": [{"condition": p.condition, "prompt": p.prompt, "ld": float(ld),
                        "p_noun_given_article": float(lp.exp())}
                       for p, ld, lp in zip(prompts, o.ld, o.logp_noun)],
           "baseline": "the test riddles of other nouns", **ranking}
    top = [r["feature"] for r in ranking["by_attribution"][:5]]
    offsets = list(range(-cfg.profile_before, 3))
    texts, tails = list(prompts), ["."] * len(prompts)
    if cfg.corpus != "none":
        ps, ts = article_occurrences(_corpus_docs(cfg.corpus), {noun}, 32, max_per_noun=32, only={noun})
        texts, tails = texts + ps, tails + ts
    rest_texts = [p for p in _prompts_of(rest) if p.noun != noun]
    all_texts = texts + rest_texts
    is_noun = torch.tensor([i < len(texts) for i in range(len(all_texts))])
    tp = iv.prepare(encode_prompts(tok, all_texts, completion=True, suffix=tails + ["."] * len(rest_texts)),
                    desc="target texts")
    acts = aligned_activations(tp, offsets, top)
    out["profile"] = profile_report(acts, {noun: is_noun, "rest": ~is_noun}, top, offsets, (noun, "rest"))
    return out


def _prompts_of(p: Prepared) -> list[Prompt]:
    return [e.prompt for e in p.items]


# --------------------------------------------------------------------------- the answer in words
