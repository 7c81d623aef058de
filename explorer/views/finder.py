"""Find a word: which SAE features mean "about to say WORD". The verdict first, then the
activation tests (ranking half, held-out half, the word's category), the strata they
compared, every causal test run, when each feature turns on relative to the article, and
the contexts where it fires. Every number is sae/lookahead/finder's."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from explorer import render, state
from sae.errors import SaexError
from sae.lookahead.finder import FindConfig, cached_report, find_word, latest_report
from sae.report import Answer

st.title("Find a word")
st.caption("Which features fire before the model says a word, and does the model use them? Contexts come from the "
           "whole corpus, definition riddles, chat questions and your own prompts; controls are the same frames "
           "with other nouns, and with nouns of the word's own WordNet category.")
run = state.require_run()

c1, c2, c3 = st.columns([3, 1, 1])
word = c1.text_input("word or phrase", value=st.query_params.get("word", "astronomer"), key="find-word")
chat = c2.checkbox("chat questions", value=True, help="also ask every riddle as a chat question (answer starts "
                   "with 'An'/'A')")
force = c3.checkbox("recompute", value=False, help="ignore a stored answer")
with st.expander("your own contexts"):
    typed = st.text_area("prompts, one per line, each ending where the article would come", key="find-prompts")
    asked = st.text_area("chat questions, one per line (the answer's first word is the article)",
                         value="", key="find-questions")


def _config() -> FindConfig:
    return FindConfig(word=word, run=str(run.path), chat=chat, force=force, progress=False,
                      prompt=[t for t in typed.splitlines() if t.strip()] or None,
                      question=[q for q in asked.splitlines() if q.strip()] or None)


try:
    cfg = _config()
except SaexError as e:
    st.error(f"{e.problem} — {e.fix}")
    st.stop()
exact = None if force else cached_report(cfg)
report = exact or (None if force else latest_report(run.path, cfg.word))  # e.g. asked from the command line
if report is not None and exact is None:
    st.caption("stored answer, computed with other settings: "
               + ", ".join(f"{k} = {v}" for k, v in report["config"].items()
                           if k in ("corpus", "chat", "definitions", "prompt", "question", "prompts") and v))
go = st.button("find features" if report is None else "recompute with the settings above", type="primary")
if not go and report is None:
    st.info("This word has no stored answer yet: about half a minute on 2 CPU cores (model loading included).")
    st.stop()
if go:
    bar = st.progress(0.0, text="starting ...")
    try:
        report = find_word(replace(cfg, force=report is not None),
                           on_step=lambda what, done: bar.progress(done, text=what),
                           intervener=state.intervener(str(run.path)))
    except SaexError as e:
        st.error(f"{e.problem} — {e.fix}")
        st.stop()
    bar.progress(1.0, text=f"done in {report['seconds']['total']:.0f} s")
st.query_params["word"] = report["word"]

answer = Answer.from_dict(report["answer"])
st.markdown(f"### {answer.verdict}")
for line in answer.lines:
    st.markdown(f"- {line}")


def _interval(ci) -> str:
    return "" if not ci or ci[0] is None else f"{ci[0]:+.3f} … {ci[1]:+.3f}"


def _pval(p) -> str:
    return "" if p is None else f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


labels = report.get("labels", {})
design = report["design"]
rows = []
for c in report["candidates"]:
    conf, spec = c["confirmation"] or {}, c["specificity"] or {}
    wc = spec.get("word_vs_category") or {}
    rows.append({
        "feature": c["feature"], "label": labels.get(str(c["feature"]), {}).get("label", ""),
        "ranking z": round(c["discovery"]["z"], 2),
        "held-out p": _pval(conf.get("p")), "Holm level": _pval(conf.get("level")),
        "held-out AUC": conf.get("auc"),
        "fires (word)": c["fires"]["word"], "fires (other nouns)": c["fires"]["controls"],
        "fires (category)": c["fires"].get("category"), "fires (other article)": c["fires"].get("other article"),
        "vs category p": _pval(wc.get("p")),
        "decoder → word": round(c["decoder"]["effect"], 3), "attribution": round(c["attribution"]["mean"], 4),
        "verdict": (spec.get("kind", "") if c["confirmed"] else "not confirmed" if conf else ""),
        "page": f"/feature?run={run.path}&feature={c['feature']}"})
st.markdown("#### Candidates: activation at the article's choice (offset −1)")
check = design["check"]
st.caption(f"Ranking z: van Elteren's stratified rank statistic on the ranking half, word clusters against other "
           f"'{report['article']}' nouns frame by frame. Held-out p: the same test on clusters never used for "
           f"ranking ({'exact' if check.get('exact', True) else 'Monte Carlo'}, smallest possible "
           f"{_pval(check['min_p'])}), Holm over the {len(check['tested'])} tested at α = {design['alpha']}. "
           f"vs category p: held-out word clusters against nouns of its WordNet category.")
pct = st.column_config.NumberColumn(format="percent")
st.dataframe(pd.DataFrame(rows), hide_index=True,
             column_config={"page": st.column_config.LinkColumn("page", display_text="open"),
                            "fires (word)": pct, "fires (other nouns)": pct, "fires (category)": pct,
                            "fires (other article)": pct})

with st.expander("strata: which clusters were compared with which"):
    strata = []
    for half, d in (("ranking", design["discovery"]), ("held-out", design["check"])):
        for block, (n_word, n_ctrl) in d["design"].items():
            strata.append({"half": half, "block (origin || frames)": block, "word clusters": n_word,
                           "control clusters": n_ctrl})
    for name, d in design["specificity"].items():
        for block, (n_x, n_y) in ((d or {}).get("design") or {}).items():
            strata.append({"half": name.replace("_", " "), "block (origin || frames)": block, "word clusters": n_x,
                           "control clusters": n_y})
    st.dataframe(pd.DataFrame(strata), hide_index=True)

causal = report["causal"]
if causal.get("tests"):
    st.markdown("#### Causal tests: edits before the article only, every test run")
    rnd = causal["random"]
    st.caption(f"On {causal['held_out_contexts']} held-out word contexts (ablation) and {causal.get('frames', 0)} "
               f"neutral frames (steering); the word's log P is taken relative to the mean over "
               f"{causal['alternatives']['tokens']} alternatives ({causal['alternatives']['kind']} nouns). "
               f"Each p ranks the effect among {rnd['per_candidate']} random features matched on activity, edit size "
               f"and density; Holm over all {rnd['tests_in_family']} tests at α = {design['alpha']}.")
    names = {("ablation", "word"): "ablation: Δ[log P(word) − alternatives]",
             ("ablation", "article"): "ablation: Δlog P(article)",
             ("steering", "word"): "steering: Δ[log P(word) − alternatives]"}
    st.dataframe(pd.DataFrame([{
        "feature": t["feature"], "test": names[(t["op"], t["target"])], "mean": t["mean"], "95% CI": _interval(t["ci"]),
        "random features (mean)": t["null_mean"], "p": _pval(t["p"]), "Holm level": _pval(t["level"]),
        "result": "passes" if t["passed"] else "level unreachable" if not t["reachable"] else "does not pass"}
        for t in causal["tests"]]), hide_index=True)

prof = report["profiles"]
feats = [int(f) for f in prof["features"]]
st.markdown("#### When it turns on relative to the article")
pick = st.selectbox("feature", feats, format_func=lambda f: f"#{f} " + labels.get(str(f), {}).get("label", ""),
                    key="find-feature")
entry = prof["features"][str(pick)]
st.altair_chart(render.profile_chart(render.finder_profile_frame(prof, str(pick))), width="stretch")
onset = entry.get("onset")
st.caption(f"onset (earliest offset where word contexts exceed the controls, Bonferroni over offsets): "
           f"{onset if onset is not None else 'none'} · contexts: {prof['n_texts']}")
for ex in prof.get("top_contexts", {}).get(str(pick), []):
    scale = max([abs(v) for v in ex["acts"]] + [1e-9])
    st.markdown(render.tokens_html(ex["tokens"], ex["acts"], scale, ex["article_index"]), unsafe_allow_html=True)
st.markdown(f"[open feature #{pick}](/feature?run={run.path}&feature={pick})")

with st.expander("the model on these contexts, and where they came from"):
    st.dataframe(pd.DataFrame([{"kind": k, "n": b["n"], "P(article)": b["p_article"]["mean"],
                                "P(word | article)": b["p_word_given_article"]["mean"],
                                "right article preferred": b["right_article_preferred"]}
                               for k, b in report["behaviour"].items()]), hide_index=True)
    for kind, texts in report["contexts"]["examples"].items():
        st.markdown(f"**{kind}**")
        for t in texts:
            st.text("… " + t)
    st.caption(f"corpus {report['corpus'].get('spec')}: {report['corpus'].get('documents', 0):,} documents scanned, "
               f"{report['corpus'].get('occurrences', 0)} occurrences after a/an, {report['corpus'].get('used', 0)} "
               f"used · stored answer computed in {report['seconds'].get('total', 0):.0f} s")
