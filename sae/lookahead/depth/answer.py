"""The sweep's answer in words and its per-layer table."""

from __future__ import annotations

from pathlib import Path

from sae.report import Answer
from sae.runs.files import REPORT_FILE

# --------------------------------------------------------------------------- the answer


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


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
    at1 = [L for L in layers if probe.get(str(L), {}).get("-1", {}).get("above_chance")]
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
                     f"largest removal is at layer {best}: {_pct(c['fraction_removed'])} of the gap (removed "
                     f"{c['removed']:.2f} logits, 95% CI {c['removed_ci'][0]:.2f} to {c['removed_ci'][1]:.2f}; "
                     f"{rnd['n']} random directions remove {rnd['removed_mean']:.2f} on average, "
                     f"z = {rnd['z']:.1f}, p = {rnd['p_permutation']:.3f})." if rnd["z"] is not None else
                     f"Projecting the article-probe direction out at -1 changes the gap {verdict}.")
    for L, s in (r.get("sae") or {}).items():
        rnd = s["random"]
        z = "n/a" if rnd["z"] is None else f"{rnd['z']:.1f}"
        lines.append(f"SAE at layer {L}: ablating its {len(s['features'])} most separating features at -1 removes "
                     f"{_pct(s['fraction_removed'])} of the gap ({s['removed']:.2f} logits); {rnd['n']} random sets "
                     f"of firing features remove {rnd['removed_mean']:.2f} (z = {z}, p = {rnd['p_permutation']:.3f}).")
    if earlier:
        o, L = earlier[0]
        verdict, label = (f"The coming article is decodable before the token that chooses it (offset {o}, layer {L}): "
                          "the choice is prepared earlier than the last token."), "earlier"
    elif at1 or lens_on:
        first = min(at1 + lens_on)
        verdict, label = (f"The coming article is readable at the token that chooses it (offset -1) from layer "
                          f"{first}, and not decodable before it."), "at_minus1"
    else:
        verdict, label = ("Null: the coming article is not readable at offset -1 at any swept layer, by the logit "
                          "lens or the probe."), "none"
    return Answer(verdict, lines, label).to_dict()


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
        rows.append(row)
    return rows
