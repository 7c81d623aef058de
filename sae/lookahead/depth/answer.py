"""The sweep's answer in words and its per-layer table."""

from __future__ import annotations

from pathlib import Path

from sae.report import Answer
from sae.runs.files import REPORT_FILE
from sae.statistics import pct

# --------------------------------------------------------------------------- the answer


def article_layers(r: dict) -> list[int]:
    """The swept layers at which the article probe reads the coming article at offset -1 above chance."""
    probe = r["article_probe"]
    return [L for L in r["layers"] if probe.get(str(L), {}).get("-1", {}).get("above_chance")]


def depth_answer(r: dict) -> dict:
    """The sweep's answer (an `Answer`, as stored), from the report alone; nulls stated as nulls."""
    layers = r["layers"]
    lines = []
    out = r["output"]
    if out.get("value") is not None:
        lines.append(f"At the output, logit(' an') - logit(' a') is {out['value']:.2f} higher after an-noun riddles "
                     f"than after a-noun riddles (95% CI {out['ci'][0]:.2f} to {out['ci'][1]:.2f}; "
                     f"{out['n_an']} + {out['n_a']} riddles).")
    lens_on = [L for L in layers if (r["lens"][str(L)].get("ci") or [None])[0] is not None
               and r["lens"][str(L)]["ci"][0] > 0]
    if lens_on:
        g = r["lens"][str(lens_on[0])]
        lines.append(f"Logit lens: read through the final norm and unembedding at -1, the residual already favours "
                     f"' an' for an-nouns at layer {lens_on[0]} (gap {g['value']:.2f}, CI {g['ci'][0]:.2f} to "
                     f"{g['ci'][1]:.2f}); swept layers with a gap above zero: {', '.join(map(str, lens_on))}.")
    else:
        lines.append("Logit lens: at no swept layer does the residual at -1, read through the final norm and "
                     "unembedding, favour ' an' for an-nouns (every gap's 95% CI reaches zero or below).")
    probe = r["article_probe"]
    at1 = article_layers(r)
    if at1:
        p = probe[str(at1[0])]["-1"]
        lines.append(f"The article is decodable above chance from layer {at1[0]} at offset -1 (held-out nouns: "
                     f"accuracy {p['accuracy']:.2f}, 95% CI {p['ci'][0]:.2f} to {p['ci'][1]:.2f}, n = {p['n_test']}; "
                     f"shuffled-label control {p['control_mean']:.2f}); decodable at -1 at layers "
                     f"{', '.join(map(str, at1))}.")
    else:
        best = max(layers, key=lambda L: probe.get(str(L), {}).get("-1", {}).get("accuracy", 0))
        p = probe.get(str(best), {}).get("-1")
        if p:
            lines.append(f"The article is not decodable above chance at offset -1 at any swept layer (held-out nouns; "
                         f"best: layer {best}, accuracy {p['accuracy']:.2f}, binomial p = {p['p_binomial']:.2g}, "
                         f"shuffled-label control {p['control_mean']:.2f}).")
    earlier = sorted({(int(o), L) for L in layers for o, v in probe.get(str(L), {}).items()
                      if int(o) < -1 and v.get("above_chance")})
    if earlier:
        o, L = earlier[0]
        v = probe[str(L)][str(o)]
        lines.append(f"Earliest offset with the article decodable: {o} (layer {L}, accuracy {v['accuracy']:.2f}, "
                     f"control {v['control_mean']:.2f}).")
    elif probe:
        lines.append(f"Before -1 (offsets {r['offsets'][0]}..-2) the article is not decodable above chance at any "
                     "swept layer.")
    ident = r.get("identity_probe") or {}
    if ident:
        first = next(iter(ident.values()))
        if "named_to_implied" in first:
            tr = first["named_to_implied"]
            frame = "riddle" if "riddle" in tr["frames"] else next(iter(tr["frames"]))
            on = [L for L in layers if ident.get(str(L), {}).get("named_to_implied", {}).get("frames", {})
                  .get(frame, {}).get("above_chance")]
            how = (f"trained on prompts that name the noun ({', '.join(tr['train_frames'])}) and tested on the "
                   f"{frame} frame, where it is only implied")
            best = on[0] if on else max(ident, key=lambda L: ident[L]["named_to_implied"]["frames"][frame]["accuracy"])
            fr = ident[str(best)]["named_to_implied"]["frames"][frame]
            lines.append(f"The noun's identity among {first['n_nouns']} candidates at -1, {how}: "
                         + (f"decodable above chance from layer {best}" if on else
                            f"not decodable above chance at any swept layer (best: layer {best})")
                         + f" (accuracy {fr['accuracy']:.2f}, chance {first['chance']:.2f}, shuffled control "
                         f"{fr['control']:.2f}).")
        frame = "riddle" if "riddle" in first["frames"] else next(
            (f for f in first["frames"] if f not in ("explicit", "in_context")), next(iter(first["frames"])))
        on = [L for L in layers if ident.get(str(L), {}).get("frames", {}).get(frame, {}).get("above_chance")]
        best = on[0] if on else max(ident, key=lambda L: ident[L]["frames"][frame]["accuracy"])
        fr = ident[str(best)]["frames"][frame]
        shared = (" (the other gloss frames hold the same gloss, so this may read the gloss rather than the noun)"
                  if "named_to_implied" in first else "")
        lines.append(f"With the {frame} frame held out and every other frame trained on{shared}, the noun's "
                     "identity is " + (f"decodable above chance from layer {best}" if on else
                                       f"not decodable above chance at any swept layer (best: layer {best})")
                     + f" (accuracy {fr['accuracy']:.2f}, chance {ident[str(best)]['chance']:.2f}, control "
                     f"{fr['control']:.2f}).")
    lines += planned_lines(r)
    causal = r.get("causal") or {}
    sig = [L for L in layers if str(L) in causal and causal[str(L)]["random"]["p_permutation"] < 0.05
           and (causal[str(L)]["removed"] or 0) > 0]
    if causal:
        best = max(causal, key=lambda L: causal[L]["removed"] if causal[L]["removed"] is not None else -1e9)
        c = causal[best]
        rnd = c["random"]
        verdict = (f"more than random directions at layers {', '.join(map(str, sig))} (permutation p < 0.05)" if sig
                   else "no more than random directions at any swept layer (permutation p >= 0.05)")
        lines.append(f"Projecting the article-probe direction out at -1 changes the an-vs-a gap {verdict}; the "
                     f"largest removal is at layer {best}: {pct(c['fraction_removed'])} of the gap (removed "
                     f"{c['removed']:.2f} logits, 95% CI {c['removed_ci'][0]:.2f} to {c['removed_ci'][1]:.2f}; "
                     f"{rnd['n']} random directions remove {rnd['removed_mean']:.2f} on average, "
                     f"z = {rnd['z']:.1f}, p = {rnd['p_permutation']:.3f})." if rnd["z"] is not None else
                     f"Projecting the article-probe direction out at -1 changes the gap {verdict}.")
    for L, s in (r.get("sae") or {}).items():
        rnd = s["random"]
        z = "n/a" if rnd["z"] is None else f"{rnd['z']:.1f}"
        versus = (f"{rnd['n']} random sets of firing features remove {rnd['removed_mean']:.2f} (z = {z}, "
                  f"p = {rnd['p_permutation']:.3f})" if rnd["n"] else
                  "too few other latents fire there for a random set of as many")
        lines.append(f"SAE at layer {L}: ablating its {len(s['features'])} most separating features at -1 removes "
                     f"{pct(s['fraction_removed'])} of the gap ({s['removed']:.2f} logits); {versus}.")
    for L, c in (r.get("sae_coverage") or {}).items():
        lines.append(coverage_line(L, c, probe.get(str(L), {}).get("-1", {}).get("above_chance", False)))
    if earlier:
        o, L = earlier[0]
        verdict, label = (f"The coming article is decodable before the token that chooses it (offset {o}, layer {L}): "
                          "the choice is prepared earlier than the last token."), "earlier"
    elif at1:
        verdict, label = (f"The coming article is readable at the token that chooses it (offset -1) from layer "
                          f"{at1[0]}, and not decodable before it."), "at_minus1"
    elif lens_on:
        # The lens is not fitted, yet its gap pools prompts of the same nouns and can reflect a
        # preference that later layers undo (measured: a shuffled-article model shows one at layer
        # 25 with no gap at its output); only a probe tested on held-out nouns decides.
        verdict, label = (f"Inconclusive: the logit lens favours ' an' after an-noun riddles at offset -1 from layer "
                          f"{lens_on[0]}, but no probe reads the article above its shuffled control on held-out "
                          "nouns at any swept layer."), "lens_only"
    else:
        verdict, label = ("Null: the coming article is not readable at offset -1 at any swept layer, by the logit "
                          "lens or the probe."), "none"
    return Answer(verdict, lines, label).to_dict()


NOT_PLANNED = ("In words: no readable representation of the implied noun at the token that chooses the article, so "
               "nothing here shows the article chosen from a planned noun (it may come from the prompt's words, or "
               "from a representation these linear probes miss).")


def _implied_frame(per_offset: dict) -> str | None:
    frames = next(iter(per_offset.values()), {})
    return "riddle" if "riddle" in frames else next(iter(frames), None)


def planned_lines(r: dict) -> list[str]:
    """Planned or baked in, in words: where the implied noun first becomes readable (offset and
    layer), whether it is there when the noun is named earlier in the context, what setting
    its subspace to its mean at -1 does to the article and to the noun, and what that says."""
    ni = r.get("noun_identity") or {}
    onset, ablation = ni.get("onset") or {}, ni.get("ablation") or {}
    if not onset:
        return []
    frame = _implied_frame(next((v for v in onset.values() if v), {}))
    if frame is None:
        return []
    hits = sorted((int(o), int(L)) for L, per in onset.items() for o, fr in per.items()
                  if fr.get(frame, {}).get("above_chance"))
    at1 = sorted(L for o, L in hits if o == -1)
    out = []
    if hits:
        first = {}
        for o, L in hits:
            first.setdefault(o, L)
        o, L = hits[0]
        v = onset[str(L)][str(o)][frame]
        where = ("only at the token that chooses the article" if o == -1 else
                 f"first at offset {o}, {-o - 1} token(s) before the one that chooses it")
        per = "; ".join(f"at {k} from layer {first[k]}" for k in sorted(first))
        out.append(f"Planned or baked in: the noun, only implied by its gloss ({frame} frame), is readable {where}, "
                   f"at layer {L} (identity probe trained where the noun is named: accuracy {v['accuracy']:.2f}, "
                   f"shuffled control {v['control']:.2f}); by offset: {per}"
                   + (". " if at1 else "; never at -1 at a swept layer. ")
                   + "Offsets before -1 hold the end of the gloss itself, so reading the noun there can mean the "
                     "prompt names it in other words rather than that the model has computed it.")
    else:
        out.append(f"Planned or baked in: the noun, only implied by its gloss ({frame} frame), is not readable by the "
                   "identity probe trained where it is named at any swept offset or layer.")
    ident = r.get("identity_probe") or {}
    ref = str(at1[0]) if at1 else (str(hits[0][1]) if hits else None)
    ic = ident.get(ref, {}).get("frames", {}).get("in_context") if ref else None
    if ic:
        out.append(f"When the noun is also named earlier in the context (in-context frame, probe trained on the other "
                   f"frames), its identity is read at -1 at layer {ref} with accuracy {ic['accuracy']:.2f} (control "
                   f"{ic['control']:.2f}" + ("; above chance)." if ic["above_chance"] else "; not above chance)."))
    if not ablation:
        if not at1:
            out.append(NOT_PLANNED)
        return out
    beats = [L for L, a in ablation.items() if (a["article"]["random"].get("p_permutation") or 1) < 0.05
             and (a["article"]["removed"] or 0) > 0]
    L = (max(beats, key=lambda k: ablation[k]["article"]["removed"]) if beats else
         str(at1[0]) if at1 and str(at1[0]) in ablation else max(ablation, key=int))
    a = ablation[L]
    art, noun = a["article"], a["noun"]
    rnd = art["random"]
    lo, hi = art.get("fraction_ci") or [None, None]
    ci = f" (95% CI {pct(lo)} to {pct(hi)})" if lo is not None else ""
    p_art = "n/a" if rnd.get("p_permutation") is None else f"{rnd['p_permutation']:.3f}"
    nr = noun["random"]
    out.append(f"Setting the noun-identity subspace ({a['dims']} directions) to its mean at -1 at layer {L}, on "
               f"{a['prompts']} implied-noun prompts: the article gap ({a['clean_gap']:.2f} logits) loses "
               f"{pct(art['fraction_removed'])}{ci}, against {pct(rnd.get('fraction_removed_mean'))} for {rnd['n']} "
               f"random {a['dims']}-dimensional subspaces (p = {p_art}); log P(noun | right article) changes by "
               f"{noun['mean']:+.2f} nats (95% CI {noun['ci'][0]:+.2f} to {noun['ci'][1]:+.2f}; random subspaces "
               f"{nr['mean']:+.2f}, p = {nr['p_permutation']:.3f}).")
    wo = a.get("article_without_probe_direction")
    if wo is not None and L in beats and (a.get("clean_gap_ci") or [None])[0] is not None \
            and a["clean_gap_ci"][0] > 0:  # what is left without that direction matters only where there was an effect
        lo2, hi2 = wo.get("fraction_ci") or [None, None]
        ci2 = f" (95% CI {pct(lo2)} to {pct(hi2)})" if lo2 is not None else ""
        out.append(f"The same subspace without the article probe's own direction removes {pct(wo['fraction_removed'])}"
                   f"{ci2} of the article gap: " + ("the noun code carries the article beyond that one direction."
                                                    if lo2 is not None and lo2 > 0 else
                                                    "what it removed runs through the article direction the noun code "
                                                    "contains."))
    noun_used = nr["p_permutation"] < 0.05 and noun["ci"][1] < 0
    gci = a.get("clean_gap_ci") or [None, None]
    if gci[0] is None or gci[0] <= 0:
        shown = "n/a" if gci[0] is None else f"{gci[0]:.2f} to {gci[1]:.2f}"
        out.append(f"In words: on these prompts the model shows no reliable an-vs-a gap ({a['clean_gap']:.2f} logits, "
                   f"95% CI {shown}), so there is no article choice to trace to the noun: neither planned nor baked in "
                   "can be read here, and the shares above are of a gap that may be zero.")
        return out
    if at1 and beats:
        out.append("In words: the noun is represented at the token that chooses the article, and the article depends "
                   "on that representation more than on random directions: the article is chosen from a noun already "
                   "in mind (planned, in this sense)" + (", and the model goes on to say that noun less without it."
                                                         if noun_used else "."))
    elif at1:
        out.append("In words: the noun is represented at the token that chooses the article, but taking that "
                   "representation away there moves the article no more than random directions do: the article does "
                   "not run through it (the prompt's own words may choose it; baked in, in this sense)"
                   + ("; the model does say the noun less without it." if noun_used else "."))
    else:
        out.append(NOT_PLANNED)
    return out


def coverage_line(layer: str, c: dict, probe_reads: bool = True) -> str:
    """Where the SAE at `layer` loses the article signal, in words (see depth/coverage.py).
    Where the probe does not read the article above chance, its direction's split is noise
    (a ratio of two near-zero separations) and is not put in words."""
    d = c["probe_direction"]
    ca = c["causal"]

    def removed(x):
        lo, hi = x.get("fraction_ci") or [None, None]
        return pct(x["fraction_removed"]) + (f" (95% CI {pct(lo)} to {pct(hi)})" if lo is not None else "")

    causal = (f"At -1, setting the error term to its mean removes {removed(ca['error_mean_ablated'])} of the gap; "
              f"setting every latent to its mean (error term kept) removes {removed(ca['latents_mean_ablated'])}.")
    if not probe_reads:
        return (f"SAE at layer {layer}: the article probe does not read the article above chance here, so there is "
                f"no probe signal to split between its latents and its error term (the error is "
                f"{pct(c['relative_error'])} of the residual's norm). {causal}")
    ci = d["latents_share_ci"]
    ci_s = f", 95% CI {pct(ci[0])} to {pct(ci[1])}" if ci[0] is not None else ""
    spread = (f"half of the latents' part takes {d['latents_for_half']} latent(s), 90% takes "
              f"{d['latents_for_most'] if d['latents_for_most'] is not None else 'more than all positive ones'}"
              if d["latents_for_half"] is not None else "the latents' part is not positive")
    chosen = f"; the ablated features carry {pct(d['chosen_share'])}" if d.get("chosen_share") is not None else ""
    pr = c["retrained_probe"]
    probe = (f"A probe retrained on the reconstruction alone reads the article of held-out nouns at accuracy "
             f"{pr['reconstruction']['accuracy']:.2f} (shuffled control {pr['reconstruction']['control_mean']:.2f}), "
             f"on the error term alone at {pr['error']['accuracy']:.2f} "
             f"(control {pr['error']['control_mean']:.2f}).")
    held = ("so most of it is in its latents" if ci[0] is not None and ci[0] > 0.5 else
            "so most of it is in its error term" if ci[1] is not None and ci[1] < 0.5 else
            "and the interval does not say which holds more")
    return (f"SAE at layer {layer}, where the article signal sits: along the article probe's direction at -1 its "
            f"latents carry {pct(d['latents_share'])} of the an-vs-a separation{ci_s} and its error term "
            f"{pct(d['error_share'])} (the error is {pct(c['relative_error'])} of the residual's norm), {held}; "
            f"{spread}{chosen}. {probe} {causal}")


def format_summary(r: dict, out_dir: Path) -> str:
    return "\n".join([f"depth sweep of {r['model']} at layers {', '.join(map(str, r['layers']))}:"]
                     + [Answer.from_dict(r["answer"]).text()] + [f"report: {Path(out_dir) / REPORT_FILE}"])


def layer_table(r: dict) -> list[dict]:
    """One row per swept layer: lens gap, probe accuracies and controls, causal effects."""
    rows = []
    for L in r["layers"]:
        k = str(L)
        lens = r["lens"].get(k, {})
        row = {"layer": L, "lens gap": lens.get("value"),
               "lens CI": lens.get("ci")}
        for o, v in sorted(r["article_probe"].get(k, {}).items(), key=lambda kv: -int(kv[0])):
            row[f"article acc @{o}"] = v["accuracy"]
        p1 = r["article_probe"].get(k, {}).get("-1")
        row["control @-1"] = p1["control_mean"] if p1 else None
        ident = (r.get("identity_probe") or {}).get(k)
        if ident:
            row["identity acc (frames held out)"] = ident["accuracy_mean"]
            tr = ident.get("named_to_implied", {}).get("frames", {})
            if tr:
                frame = "riddle" if "riddle" in tr else next(iter(tr))
                row[f"identity acc (named -> {frame})"] = tr[frame]["accuracy"]
            row["identity chance"] = ident["chance"]
        c = (r.get("causal") or {}).get(k)
        if c:
            row["gap removed (probe dir)"] = c["fraction_removed"]
            row["random dirs remove"] = c["random"]["fraction_removed_mean"]
            row["z"] = c["random"]["z"]
            row["p"] = c["random"]["p_permutation"]
        s = (r.get("sae") or {}).get(k)
        if s:
            row["gap removed (SAE features)"] = s["fraction_removed"]
            row["SAE z"] = s["random"]["z"]
        cov = (r.get("sae_coverage") or {}).get(k)
        if cov:
            row["probe separation in latents"] = cov["probe_direction"]["latents_share"]
            row["gap removed (error term at mean)"] = cov["causal"]["error_mean_ablated"]["fraction_removed"]
            row["gap removed (latents at mean)"] = cov["causal"]["latents_mean_ablated"]["fraction_removed"]
        rows.append(row)
    return rows
