"""Find a word: which SAE features mean "about to say WORD", with the evidence side by side
(activation before the article against matched controls, decoder effect, attribution, a
causal check on held-out contexts against random features), when each turns on relative
to the article, and the contexts where it fires. Every number is sae/lookahead/finder.py's."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from explorer import render, state
from sae.errors import SaexError
from sae.lookahead.finder import FindConfig, cached_report, find_word, latest_report

st.title("Find a word")
st.caption("Which features fire before the model says a word, and does the model use them? Contexts come from the "
           "whole corpus, definition riddles, chat questions and your own prompts; controls are the same frames "
           "with other nouns.")
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

verdict = {"found": "found: a feature fires before the word and moves its probability in a causal test",
           "fires, no causal effect": "features fire before the word, but none passes the causal check",
           "none": "null: no feature fires before the word more than on the controls"}[report["answer"]["verdict"]]
st.markdown(f"### {verdict}")
for line in report["answer"]["lines"]:
    st.markdown(f"- {line}")



def _interval(ci) -> str:
    return "" if not ci or ci[0] is None else f"{ci[0]:+.3f} … {ci[1]:+.3f}"


rows = []
labels = report.get("labels", {})
for c in report["candidates"]:
    a, ca = c["activation"], c["causal"] or {}
    abl, ste = ca.get("ablation", {}), ca.get("steering", {})
    rows.append({
        "feature": c["feature"], "label": labels.get(str(c["feature"]), {}).get("label", ""),
        "rank z": round(a["z"], 2), "AUC": round(a["auc"], 3), "d": round(a["d"], 2),
        "mean (word)": a["mean_word"], "mean (controls)": a["mean_controls"],
        "fires (word)": a["fires_word"], "fires (controls)": a["fires_controls"],
        "z vs same article": round(a["z_vs_same_article"], 2), "z vs other article": round(a["z_vs_other_article"], 2),
        "decoder → word": round(c["decoder"]["effect"], 3), "decoder percentile": round(c["decoder"]["percentile"], 3),
        "attribution": round(c["attribution"]["mean"], 4),
        "ablate Δlog P(word)": (abl.get("delta_logp_word") or {}).get("mean"),
        "ablate 95% CI": _interval((abl.get("delta_logp_word") or {}).get("ci")),
        "ablate p": abl.get("p"),
        "steer Δlog P(word)": (ste.get("delta_logp_word") or {}).get("mean"),
        "steer p": ste.get("p"),
        "verdict": "qualifies" if c["qualifies"] else "fires" if c["fires_before"] else "",
        "page": f"/feature?run={run.path}&feature={c['feature']}"})
st.markdown("#### Candidates, evidence side by side")
st.caption(f"rank z, AUC: Mann-Whitney test of the activation at the article's choice (offset −1), word contexts "
           f"against controls (Bonferroni bound over {report['n_latents']:,} latents: {report['bonferroni_z']:.1f}); "
           f"d: Cohen's d of the same activations; causal columns: "
           f"on {report['random']['check_contexts']} held-out contexts (ablation) and "
           f"{len(report['neutral_frames'])} neutral frames (steering), p against "
           f"{len(report['random']['features'])} density-matched random features (Bonferroni level "
           f"{report['random']['alpha']['features_firing_before']:.3f} for features that fire before the word).")
st.dataframe(pd.DataFrame(rows), hide_index=True,
             column_config={"page": st.column_config.LinkColumn("page", display_text="open"),
                            "fires (word)": st.column_config.NumberColumn(format="percent"),
                            "fires (controls)": st.column_config.NumberColumn(format="percent")})

prof = report["profiles"]
feats = [int(f) for f in prof["features"]]
st.markdown("#### When it turns on relative to the article")
pick = st.selectbox("feature", feats, format_func=lambda f: f"#{f} " + labels.get(str(f), {}).get("label", ""),
                    key="find-feature")
entry = prof["features"][str(pick)]
data = pd.DataFrame([{"offset": o, "group": g, "mean": entry[g]["mean"][j], "lo": entry[g]["lo"][j],
                      "hi": entry[g]["hi"][j], "n": entry[g]["n"][j]}
                     for g in ("word", "same article", "other article") for j, o in enumerate(prof["offsets"])])
st.altair_chart(render.profile_chart(data), use_container_width=True)
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
