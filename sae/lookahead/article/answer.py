"""The lookahead report's findings as sentences (`answer`) and the summary the command prints
(`format_summary`), with the numbers each rests on; null results stated as such."""

from __future__ import annotations

import math
from pathlib import Path

from sae.lookahead.article.config import TARGET_FRACTION
from sae.report import Answer
from sae.runs.files import REPORT_FILE
from sae.statistics import pct


def _num(x, fmt=".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def answer(r: dict) -> dict:
    """The report's findings as sentences, with the numbers they rest on; null results
    stated as such (an `Answer`, as stored)."""
    lines = []
    b = r["behaviour"]["test"]["gap"]
    gap_real = b["value"] is not None and b["ci"][0] is not None and b["ci"][0] > 0
    lines.append(f"Behaviour (test set, {b['n_an']} an-noun and {b['n_a']} a-noun prompts): logit(an) - logit(a) is "
                 f"{_num(b['value'])} higher for an-nouns (95% CI {_num(b['ci'][0])} to {_num(b['ci'][1])}); the right "
                 f"article is preferred on {pct(r['behaviour']['test']['right_article_preferred'])} of prompts."
                 + ("" if gap_real else " The gap is not reliably above zero: there is little or no lookahead "
                    "signal in behaviour to explain."))
    for name in ("explicit", "in_context"):
        if name in r["behaviour"]:
            g = r["behaviour"][name]["gap"]
            lines.append(f"Control {name}: gap {_num(g['value'])} (95% CI {_num(g['ci'][0])} to {_num(g['ci'][1])}).")
    if "chat" in r["behaviour"]:
        bc = r["behaviour"]["chat"]
        g = bc["gap"]
        lines.append(f"As chat questions (answer starting 'An'/'A'): gap {_num(g['value'])} (95% CI {_num(g['ci'][0])} "
                     f"to {_num(g['ci'][1])}), mean P(An) {_num(bc['mean_p_an'])}, P(A) {_num(bc['mean_p_a'])}.")
    for src in ("riddles", "corpus"):
        sep = r["profiles"]["sources"].get(src, {}).get("separating_at_minus1")
        if sep:
            best = sep["top"][0]
            lines.append(f"Lookahead in activations ({src}): at the token before the article, "
                         f"{sep['n_beyond_bound']} of {sep['n_latents']} latents differ between an- and a-noun "
                         f"texts beyond a Bonferroni bound (|z| > {sep['bonferroni_z']:.1f}); the strongest, "
                         f"{best['feature']}, has z = {best['z']:.1f} "
                         f"(mean {best['mean_an']:.2f} vs {best['mean_a']:.2f}).")
    err = r["causal"].get("error_term")
    if err and gap_real:
        lines.append(error_term_line(err))
    sel = r["selection"]["selected"]
    if not sel:
        return Answer("No feature removed any of the gap on the selection set: null result."
                      + (_outside_latents(err, 0.0) if gap_real else ""), lines, "null",
                      {"gap_reliable": gap_real, "target_met": False, "beats_random": False,
                       "removal_reliable": False}).to_dict()
    c = r["causal"]
    abl, rnd = c["ablation"], c["random"]
    frac, lo, hi = abl["fraction_removed"], abl["fraction_ci"][0], abl["fraction_ci"][1]
    lines.append(f"Features chosen on the selection set: {', '.join(map(str, sel))}.")
    tot = r["profiles"]["sources"].get("riddles", {}).get("selected_total_at_minus1")
    if tot and tot["value"] is not None:
        lines.append(f"At the token before the article (-1) their summed activation is {_num(tot['mean_an'])} "
                     f"on an-noun and {_num(tot['mean_a'])} on a-noun test riddles (difference "
                     f"{_num(tot['value'])}, 95% CI {_num(tot['ci'][0])} to {_num(tot['ci'][1])}).")
    for src in ("riddles", "corpus"):
        prof = r["profiles"]["sources"].get(src, {}).get("features", {})
        got = [prof[str(f)] for f in sel if str(f) in prof]
        if got:
            ons = [e["onset_an_over_a"] if e["onset_an_over_a"] is not None else e["onset_a_over_an"] for e in got]
            early = sum(1 for on in ons if on is not None and on <= -1)
            at0 = sum(1 for on in ons if on == 0)
            late = sum(1 for on in ons if on is not None and on >= 1)
            lines.append(f"Timing ({src}, an- vs a-noun texts): {early} of {len(got)} features differ between the two "
                         f"before the article (onset <= -1), {at0} from the article token on, {late} only after it, "
                         f"{len(got) - early - at0 - late} never reliably.")
    lines.append(f"Ablating them at {c['positions']} positions on the test set removes {_num(abl['removed'])} of the "
                 f"{_num(abl['gap_clean'])} gap ({pct(frac)}, 95% CI {pct(lo)} to {pct(hi)}); it moves "
                 f"logit(an) - logit(a) by {_num(abl['delta_ld_an'])} on an-noun and {_num(abl['delta_ld_a'])} on "
                 f"a-noun prompts. {rnd['n_sets']} density-matched random sets remove {_num(rnd['removed_mean'])} +- "
                 f"{_num(rnd['removed_std'])} (z = {_num(rnd['z'], '.1f')}, permutation p = "
                 f"{_num(rnd['p_permutation'], '.3f')}, the smallest possible being {1 / (1 + rnd['n_sets']):.3f}).")
    d = r.get("dose_response") or {}
    if d.get("selected"):
        pairs = ", ".join(f"x{m:g}: {g:.2f}" for m, g in zip(d["doses"], d["selected"]["gap"]))
        rpairs = "; ".join(", ".join(f"x{m:g}: {g:.2f}" for m, g in zip(d["doses"], rc["gap"])) for rc in d["random"])
        lines.append(f"Dose-response (activations multiplied): gap {pairs}" + (f" (random sets: {rpairs})." if rpairs
                                                                                  else "."))
    pos = c["by_position"]
    lines.append(f"By position: at -1 alone {pct(pos['last']['fraction_removed'])}, at earlier prompt tokens alone "
                 f"{pct(pos['before']['fraction_removed'])} of the gap.")
    lines.append(f"P(noun | article) changes by {_num(abl['delta_p_noun'], '.4f')} on average "
                 f"(log-prob {_num(abl['delta_logp_noun'], '.3f')}); ablating the same features at BOS/sink "
                 f"positions only moves the gap by {_num(c['sinks_only']['removed'])} "
                 f"({c['sinks_only']['positions_found']} sink positions besides BOS).")
    # kept in the report for whoever reads it against a bar of their own; not used in the verdict
    target_met = bool(gap_real and frac is not None and frac >= TARGET_FRACTION)
    beats = bool(rnd["p_permutation"] <= 0.05 and (abl["removed"] or 0) > 0)
    reliable = lo is not None and lo > 0
    if not gap_real:
        verdict, label = ("No reliable behavioural gap on the test set, so there is nothing for features to carry: "
                          "null result."), "no_gap"
    elif not beats:
        verdict, label = ("The chosen features do not move the choice more than density-matched random features "
                          "on the test set: null result."), "null"
    else:
        size = (f"the interval ({pct(lo)} to {pct(hi)}) is above zero" if reliable else
                f"the interval ({pct(lo)} to {pct(hi)}) includes zero: with this many test prompts the size "
                "of the effect is not pinned down")
        verdict = (f"Out of sample the chosen features remove {pct(frac)} of the gap, more than "
                   f"density-matched random features; {size}.")
        label = "carried" if reliable else "carried_size_uncertain"
    verdict += _outside_latents(err, hi if hi is not None else frac) if gap_real else ""
    return Answer(verdict, lines, label, {"gap_reliable": gap_real, "target_met": target_met, "beats_random": beats,
                                          "removal_reliable": reliable}).to_dict()


def _outside_latents(err: dict | None, features_high: float | None) -> str:
    """A clause for the verdict when the SAE's error term demonstrably carries more of the gap than
    the chosen features could: the mechanism then sits mostly outside this SAE's latents."""
    if not err:
        return ""
    e = err["edited_positions"]
    lo = e["fraction_ci"][0]
    if lo is None or lo <= max(features_high or 0.0, 0.0):
        return ""
    where = ("most of the gap lies outside this SAE's latents" if lo > 0.5 else
             "more of the gap lies outside this SAE's latents than in the chosen features")
    return (f" The SAE's error term carries more: set to its mean (latents kept) it removes "
            f"{pct(e['fraction_removed'])} (95% CI {pct(lo)} to {pct(e['fraction_ci'][1])}), so {where}.")


def error_term_line(err: dict) -> str:
    """What the SAE's latents leave out: the gap removed when its error term is set to its mean."""
    def part(e):
        lo, hi = e["fraction_ci"]
        return f"{pct(e['fraction_removed'])} (95% CI {pct(lo)} to {pct(hi)})"

    e, last = err["edited_positions"], err["last"]
    return (f"The SAE's error term (what its latents do not reconstruct), set to its mean with every latent kept, "
            f"removes {part(e)} of the test gap at {e['positions']} positions and {part(last)} at -1 alone. Feature "
            "ablations keep the error term, so what it carries is out of their reach.")


def format_summary(r: dict, out_dir: Path) -> str:
    a = Answer.from_dict(r["answer"])
    return "\n".join(a.lines + [f"Verdict: {a.verdict}",
                                f"report: {out_dir / REPORT_FILE}; plots: {', '.join(r['plots'])}"])
