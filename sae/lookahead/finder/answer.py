"""The word finder's answer in words, and the report as plain text.

Verdicts, strongest first:
- found: a feature fires before the word more than before other nouns of its article (held-out
  half), more than before nouns of its own category (or no category is known), and ablating it
  before the article lowers the word's probability relative to its alternatives beyond
  matched random features (Holm over every causal test);
- fires, no causal effect: such a feature exists but its ablation does not pass (steering
  alone, when it passes, is reported as sufficient, not necessary);
- category: the confirmed feature fires for the word's category as much as for the word, and
  for the category more than for other nouns: "about to say a noun.person noun";
- fires, not specific: confirmed against other nouns, but neither separated from its
  category nor shown to be a category feature;
- inconclusive: the held-out half is too small for any test to reach its level, or the
  causal tests could not (too few comparable random features), or nothing was confirmed
  but the design could not have confirmed even a feature firing before every source of the
  word (its power, sae.lookahead.finder.power, below 80% at every firing rate);
- none: nothing was confirmed on the held-out half, and the design had the power to confirm a
  feature of some firing rate, which the answer states.
"""

from __future__ import annotations

from sae.report import Answer
from sae.statistics import pct

VERDICTS = ("found", "fires, no causal effect", "category", "fires, not specific", "inconclusive", "none")
HEADINGS = {
    "found": "found: a feature fires before the word, specifically, and the model uses it",
    "fires, no causal effect": "a feature fires before the word, but ablating it does not lower the word's "
                               "probability beyond random features",
    "category": "a feature fires before nouns of the word's category, not before the word alone",
    "fires, not specific": "a feature fires before the word more than before other nouns, but is not separated "
                           "from the word's category",
    "inconclusive": "inconclusive: too few independent contexts for the tests to decide",
    "none": "null: no feature fires before the word more than before other nouns, on held-out contexts",
}
TEST_NAMES = {("ablation", "word"): "ablation, Δ[log P(word) − alternatives]",
              ("ablation", "article"): "ablation, Δlog P(article)",
              ("steering", "word"): "steering, Δ[log P(word) − alternatives]"}


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _ci(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"{ci[0]:+.3f} to {ci[1]:+.3f}"




def null_supported(rep: dict) -> bool:
    """Whether the design could have confirmed some word feature (80% power at some firing
    rate); reports written before the power estimate count as able."""
    pw = rep.get("power")
    return pw is None or pw.get("detectable_rate") is not None


def verdict_of(rep: dict) -> str:
    check = rep["design"]["check"]
    if check["resolvable"] == 0:
        return "inconclusive"
    cands = {c["feature"]: c for c in rep["candidates"]}
    confirmed = [f for f in check["tested"] if cands[f]["confirmed"]]
    if not confirmed:
        return "none" if null_supported(rep) else "inconclusive"
    causal = {int(f): v for f, v in rep["causal"]["features"].items()}
    kinds = {f: (cands[f]["specificity"] or {}).get("kind", "not checked") for f in confirmed}
    specific = [f for f in confirmed if kinds[f] in ("word", "not checked")]
    if any(causal.get(f, {}).get("ablation_word") for f in specific):
        return "found"
    if specific:
        tested = [f for f in specific if f in causal]
        if tested and not any(causal[f]["reachable"] for f in tested):
            return "inconclusive"
        return "fires, no causal effect"
    if any(k == "category" for k in kinds.values()):
        return "category"
    return "fires, not specific"


def _design_line(rep: dict) -> str:
    d = rep["design"]
    c = d["check"]
    n = len(c["tested"])
    reach = (f"enough to confirm all {n} tested" if n and c["resolvable"] >= n
             else f"enough to confirm {c['resolvable']}" if c["resolvable"] else "too few to confirm any")
    return (f"Held-out half: {rep['contexts']['check_clusters']} independent word source(s) against the controls; "
            f"{c['relabellings']:,} relabellings, so the smallest p is {_p(c['min_p'])}: {reach} at family-wise "
            f"α = {d['alpha']}.")


def power_line(rep: dict) -> str | None:
    """The design's power in one sentence: the smallest word feature it would confirm, and
    the extra sources a stronger answer needs."""
    pw = rep.get("power")
    if not pw:
        return None
    ctrl, ref = pct(pw["control_rate"]), pct(pw["reference_rate"])
    target, sims = pct(pw["target"]), pw["sims"]
    if pw["detectable_rate"] is not None:
        text = (f"Power: these tests would confirm a word feature that fires before {pct(pw['detectable_rate'])} or "
                f"more of the word's independent sources (and {ctrl} of the controls') in at least {target} of "
                f"{sims} simulated draws; one that fires before {ref} of them, in {pct(pw['power_at_reference'])}.")
    else:
        text = (f"Power: even a feature that fires before every independent source of the word (and {ctrl} of the "
                f"controls') would be confirmed in only {pct(pw['power'][-1])} of {sims} simulated draws, below "
                f"{target}, so finding none says little.")
    if pw["power_at_reference"] < pw["target"]:
        if pw.get("extra_sources"):
            text += (f" About {pw['extra_sources']} more independent sources of the word (contexts from other "
                     f"documents, definitions or prompts; half of them held out) would confirm one that fires before "
                     f"{ref} of them {pct(pw['extra_power'])} of the time.")
        elif pw.get("extra_tried"):
            text += (f" Even {pw['extra_tried']} more independent sources would not confirm one that fires before "
                     f"{ref} of them {target} of the time.")
    return text


def _feature_line(c: dict, rep: dict) -> str:
    art, word = rep["article"], rep["word"]
    conf, fires = c["confirmation"], c["fires"]
    cat = rep.get("category") or {}
    lex = cat.get("lexname")
    text = (f"#{c['feature']} fires before '{art} {word}' more than before other '{art}' nouns in the same frames "
            f"(held-out p = {_p(conf['p'])}, Holm level {_p(conf['level'])}, AUC {conf['auc']:.2f}; fires on "
            f"{pct(fires['word'])} of word contexts, {pct(fires['controls'])} of controls")
    if fires.get("category") is not None:
        text += f", {pct(fires['category'])} of {lex} nouns"
    text += ")"
    spec = c["specificity"] or {}
    wc, cc = spec.get("word_vs_category"), spec.get("category_vs_controls")
    kind = spec.get("kind", "not checked")
    if kind == "word":
        text += f"; more than before other {lex} nouns too (p = {_p(wc['p'])}): specific to the word"
    elif kind == "category":
        text += (f"; but no more than before other {lex} nouns (p = {_p(wc['p'])}), which it separates from other "
                 f"nouns (p = {_p(cc['p'])}): it means 'a {lex} noun is coming'")
    elif kind == "unresolved":
        text += (f"; not separated from other {lex} nouns (p = {_p(wc['p'])}), nor shown to fire for them "
                 f"(p = {_p(cc['p']) if cc else 'n/a'})")
    else:
        text += "; its specificity within a category was not checked (no WordNet category)"
    return text + "."


def _causal_line(f: int, ca: dict, rep: dict) -> str:
    w = rep["tokens"]["first"].strip()
    art = rep["article"]
    parts = []
    for t in ca["tests"]:
        what = {("ablation", "word"): f"ablating it before the article moves log P({w}) relative to "
                                      f"{rep['causal']['alternatives']['tokens']} alternatives by",
                ("ablation", "article"): f"log P({art}) by",
                ("steering", "word"): f"steering it up in {rep['causal'].get('frames', 0)} neutral frames by"}[
            (t["op"], t["target"])]
        verdict = "passes" if t["passed"] else ("level unreachable" if not t["reachable"] else "does not pass")
        if t.get("detectable") is not None and not t["passed"]:
            verdict += f"; a mean {'below' if t['direction'] == 'lowers' else 'above'} {t['detectable']:+.3f} would"
        parts.append(f"{what} {t['mean']:+.3f} (95% CI {_ci(t['ci'])}; p = {_p(t['p'])} against {t['n_null']} "
                     f"matched random features, Holm level {_p(t['level'])}: {verdict})")
    text = f"#{f}: " + "; ".join(parts) + "."
    if ca["steering_word"] and not ca["ablation_word"]:
        text += " Steering alone shows it sufficient to raise the word, not necessary for it."
    if ca["ablation_article"]:
        text += f" Ablating it lowers P({art}) too: the article choice uses it (the lookahead signature)."
    return text


def find_answer(rep: dict) -> dict:
    """Plain sentences: what was asked, on what evidence, and what was (not) found."""
    word, art = rep["word"], rep["article"]
    ctx = rep["contexts"]
    verdict = verdict_of(rep)
    lines = []
    counts = ", ".join(f"{n} {k}" for k, n in ctx["counts"].items())
    n_ctrl = sum(v for k, v in ctx["controls"].items() if k.startswith("control"))
    n_cat = sum(v for k, v in ctx["controls"].items() if k.startswith("category"))
    cat = rep.get("category") or {}
    cat_text = (f"{n_cat} contexts of {len(cat.get('used', []))} {cat['lexname']} nouns "
                f"({', '.join(cat.get('used', [])[:6])})" if n_cat else "no category controls")
    lines.append(f"{ctx['n']} contexts where the model is about to say '{art} {word}' ({counts}) from "
                 f"{ctx['clusters']} independent sources; {ctx['rank_clusters']} rank the features, "
                 f"{ctx['check_clusters']} are held out for the tests. Controls: {n_ctrl} contexts of other nouns in "
                 f"the same frames; {cat_text}.")
    if len(rep["tokens"]["ids"]) > 1:
        pieces = ", ".join(repr(p) for p in rep["tokens"]["pieces"])
        lines.append(f"' {word}' is {len(rep['tokens']['ids'])} tokens ({pieces}); P(word) and the decoder effect are "
                     f"for the first, {rep['tokens']['first']!r}.")
    lines += ctx["notes"]
    if rep["config"].get("shuffle_labels"):
        lines.append("Control run: the word's and the controls' labels were shuffled among comparable clusters, so "
                     "anything confirmed here is a false positive.")
    beh = rep["behaviour"]
    if beh:
        first = rep["tokens"]["first"].strip()
        parts = [f"{k}: P({art}) {b['p_article']['mean']:.2f}, "
                 f"P({first} | {art}) {b['p_word_given_article']['mean']:.3f}" for k, b in beh.items()]
        lines.append("The model on these contexts: " + "; ".join(parts) + ".")
    lines.append(_design_line(rep))
    cands = {c["feature"]: c for c in rep["candidates"]}
    confirmed = [f for f in rep["design"]["check"]["tested"] if cands[f]["confirmed"]]
    if verdict == "inconclusive" and rep["design"]["check"]["resolvable"] == 0:
        s = rep["strongest"]
        lines.append(f"No test can reach its level on so few held-out sources: the smallest possible p, "
                     f"{_p(rep['design']['check']['min_p'])}, is above α = {rep['design']['alpha']}. The ranking "
                     f"half's strongest latent is #{s['feature']} (z = {s['z']:.1f}). Add contexts (--prompt, "
                     f"--question, --prompts, a larger corpus) to decide.")
    elif not confirmed:
        tested = rep["design"]["check"]["tested"]
        s = rep["strongest"]
        detail = ", ".join(f"#{f} p = {_p(cands[f]['confirmation']['p'])}" for f in tested)
        lines.append(f"No feature fires before '{art} {word}' more than before other '{art}' nouns on held-out "
                     f"contexts: the ranking half's best {len(tested)} ({detail}) do not pass Holm at "
                     f"α = {rep['design']['alpha']}; the strongest on the ranking half is #{s['feature']}, "
                     f"z = {s['z']:.1f}.")
    power = power_line(rep)
    if power:
        lines.append(power)
    for f in confirmed:
        lines.append(_feature_line(cands[f], rep))
    for f, ca in rep["causal"]["features"].items():
        lines.append(_causal_line(int(f), ca, rep))
    if rep["causal"].get("not_tested"):
        lines.append("Confirmed but not tested causally (raise --causal-features): "
                     + ", ".join(f"#{f}" for f in rep["causal"]["not_tested"]) + ".")
    heading = HEADINGS[verdict]
    pw = rep.get("power") or {}
    if verdict == "none" and pw.get("detectable_rate") is not None:
        heading += (f" (the tests would have confirmed one that fires before {pct(pw['detectable_rate'])} or more "
                    f"of its sources, {pct(pw['target'])} power)")
    elif verdict == "inconclusive" and confirmed == [] and rep["design"]["check"]["resolvable"] > 0:
        heading += f" (power {pct(pw['power'][-1])} even for a feature on every source)" if pw else ""
    return Answer(heading, lines, verdict).to_dict()


def format_find(rep: dict, top: int = 10) -> str:
    """The answer, the table of candidates, and every causal test run, as plain text."""
    out = [f"'{rep['article']} {rep['word']}' in {rep['sae'].get('path', '')}"
           + ("  (stored answer)" if rep.get("cached") else ""), "", Answer.from_dict(rep["answer"]).text()]
    out.append("")
    out.append(f"{'feature':>8} {'rank z':>7} {'held-out p':>10} {'AUC':>5} {'word':>5} {'ctrl':>5} {'categ':>5} "
               f"{'other':>5} {'vs categ p':>10} {'decoder':>8}  verdict")
    for c in rep["candidates"][:top]:
        conf, spec, fires = c["confirmation"] or {}, c["specificity"] or {}, c["fires"]
        wc = spec.get("word_vs_category") or {}
        verdict = (spec.get("kind", "") if c["confirmed"] else "not confirmed" if conf else "")
        out.append(f"{c['feature']:>8} {c['discovery']['z']:>7.1f} {_p(conf['p']) if conf else '':>10} "
                   f"{conf.get('auc', float('nan')):>5.2f} {pct(fires['word']):>5} {pct(fires['controls']):>5} "
                   f"{pct(fires.get('category')):>5} {pct(fires.get('other article')):>5} "
                   f"{_p(wc['p']) if wc else '':>10} {c['decoder']['effect']:>8.3f}  {verdict}")
    tests = rep["causal"].get("tests", [])
    if tests:
        out += ["", "causal tests (edits before the article; every test run):",
                f"{'feature':>8}  {'test':<42} {'mean':>8} {'95% CI':>20} {'p':>7} {'level':>7} {'nulls':>5}  result"]
        for t in tests:
            res = "passes" if t["passed"] else "unreachable" if not t["reachable"] else "does not pass"
            out.append(f"{t['feature']:>8}  {TEST_NAMES[(t['op'], t['target'])]:<42} {t['mean']:>+8.3f} "
                       f"{_ci(t['ci']):>20} {_p(t['p']):>7} {_p(t['level']):>7} {t['n_null']:>5}  {res}")
    return "\n".join(out)
