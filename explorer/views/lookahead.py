"""Lookahead: the a/an report of `saex lookahead`. The short answer leads (the verdict, the
ablation's numbers against random sets, the aligned-profile and ablation-vs-random plots),
then every finding line, the behaviour table, single features, the other plots, and any test
prompt re-run live with the chosen features ablated. Every figure is the report's
(sae/lookahead/article/run.py) or sae/lookahead/prompt_lab.py's."""

import json

import pandas as pd
import streamlit as st

from explorer import render, state
from sae.errors import SaexError
from sae.lookahead.interventions import Edit
from sae.lookahead.prompt_lab import next_token, read_prompt
from sae.report import Answer
from sae.runs.files import read_report

st.title("Lookahead")
run = state.require_run()
report = read_report(run.path, "lookahead")
if report is None:
    st.warning("This run has no lookahead report yet.")
    st.code(f"saex lookahead {run.path}", language="bash")
    st.stop()
folder = report.path.parent

answer = Answer.from_dict(report["answer"])
lines = answer.lines
causal = report["causal"]
abl, rnd = causal["ablation"], causal["random"]

# The short answer first: the verdict, the numbers behind it, and the two plots that carry it.
st.markdown("#### The short answer")
flags = answer.details
(st.success if flags.get("removal_reliable") and flags.get("beats_random") else st.info)("Verdict: " + answer.verdict)


def _yes(v):
    return "yes" if v else "no" if v is not None else "—"


st.caption(" · ".join(f"{name}: {_yes(flags.get(key))}" for name, key in (
    ("behaviour gap reliable", "gap_reliable"), ("beats density-matched random sets", "beats_random"),
    ("removal interval above zero", "removal_reliable"))))
m = st.columns(4)
m[0].metric("gap removed", f"{abl['fraction_removed']:.0%}",
            help=f"95% CI {abl['fraction_ci'][0]:.0%} … {abl['fraction_ci'][1]:.0%}")
m[1].metric("random sets remove", f"{rnd['fraction_removed_mean']:.1%}", help=f"{rnd['n_sets']} density-matched sets")
m[2].metric("z vs random", f"{rnd['z']:.1f}", help=f"permutation p = {rnd['p_permutation']:.3f}")
m[3].metric("ΔP(noun | article)", f"{abl['delta_p_noun']:+.4f}")
KEY_PLOTS = {"profiles.png": "activation of the chosen features around the article (offset 0), an- vs a-noun texts, "
                             "mean and 95% CI: does anything differ before the article?",
             "causal.png": "gap removed by ablating the chosen features (red) against density-matched random "
                           "sets (grey)"}
profiles = (report.get("profiles") or {}).get("sources") or {}
key = [(folder / name, cap) for name, cap in KEY_PLOTS.items() if (folder / name).exists()
       and not (name == "profiles.png" and profiles)]  # the profiles are drawn below as charts instead
if key:
    cols = st.columns(len(key))
    for c, (p, cap) in zip(cols, key):
        c.image(str(p), caption=cap)
if profiles:
    st.markdown("#### When the chosen features fire, around the article")
    source = st.radio("texts", list(profiles), horizontal=True, key="profile-source")
    prof = profiles[source]
    st.caption(f"Mean activation of each chosen feature at each offset from the article (0 = the article, -1 = the "
               f"token that chooses it) on {prof['n_texts'].get('an', 0)} an-noun and {prof['n_texts'].get('a', 0)} "
               "a-noun texts, with 95% intervals: a planning feature separates the two before 0.")
    cols = st.columns(2)
    for j, f in enumerate(prof["features"]):
        groups = prof["features"][f]
        data = pd.DataFrame([{"offset": o, "group": f"{art}-nouns", "mean": g["mean"][i], "lo": g["lo"][i],
                              "hi": g["hi"][i], "n": (g.get("n") or [None] * len(prof["offsets"]))[i]}
                             for art, g in groups.items() if isinstance(g, dict) and "mean" in g
                             for i, o in enumerate(prof["offsets"])])
        cols[j % 2].markdown(f"[#{f}](/feature?run={run.path}&feature={f}) " + state.short_auto_label(str(run.path),
                                                                                                        int(f)))
        cols[j % 2].altair_chart(render.profile_chart(data).properties(height=180), width="stretch")

st.markdown("#### Every finding, with its numbers")
for line in lines:
    st.markdown(f"- {line}")

st.markdown("#### Behaviour by prompt set")
rows = []
for name, b in report["behaviour"].items():
    g = b["gap"]
    rows.append({"set": name, "an-nouns": g["n_an"], "a-nouns": g["n_a"], "gap (an − a nouns)": g["value"],
                 "95% CI": f"{g['ci'][0]:.2f} … {g['ci'][1]:.2f}" if g.get("ci") else "",
                 "right article preferred": b.get("right_article_preferred"), "mean P(a)": b.get("mean_p_a"),
                 "mean P(an)": b.get("mean_p_an")})
condition = st.multiselect("conditions", [r["set"] for r in rows], default=[r["set"] for r in rows])
st.dataframe(pd.DataFrame([r for r in rows if r["set"] in condition]), hide_index=True)

st.markdown("#### Each chosen feature ablated alone (chosen on the selection set, tested on the test set)")
single = pd.DataFrame([{"feature": int(f), "gap removed alone": v["fraction_removed"],
                        "Δ ld (an-nouns)": v["delta_ld_an"], "Δ ld (a-nouns)": v["delta_ld_a"],
                        "page": f"/feature?run={run.path}&feature={f}"}
                       for f, v in causal["single_features"].items()])
st.dataframe(single, hide_index=True, column_config={"page": st.column_config.LinkColumn("page", display_text="open")})

st.markdown("#### Other plots")
plots = [p for p in sorted(folder.glob("*.png")) if p.name not in KEY_PLOTS]
cols = st.columns(2)
for i, p in enumerate(plots):
    cols[i % 2].image(str(p), caption=p.stem)

st.markdown("#### A test prompt, live")
prompts = [json.loads(line) for line in (folder / "prompts-test.jsonl").read_text().splitlines() if line.strip()]
nouns = sorted({p["noun"] for p in prompts})
noun = st.selectbox("noun", nouns, index=nouns.index("astronomer") if "astronomer" in nouns else 0)
chosen = [int(f) for f in causal["selected"]]
# The model loads only when asked: everything above is the stored report and settles at once.
if not st.toggle("run this noun's test prompts through the model, with and without the chosen features", key="live"):
    st.stop()
try:
    iv = state.intervener(str(run.path))
    for p in [p for p in prompts if p["noun"] == noun]:
        view = read_prompt(iv, p["prompt"])
        clean = next_token(iv, view)
        edited = next_token(iv, view, Edit(tuple(chosen), op="ablate", positions=causal.get("positions", "prompt")))
        st.markdown(f"**{p['condition']}** ({p['article']} {noun}): {p['prompt']} …")
        c = st.columns(3)
        c[0].metric("logit(an) − logit(a)", f"{edited.logit_diff:.3f}", f"{edited.logit_diff - clean.logit_diff:+.3f}",
                    help="with the selected features ablated; the delta is against the clean model")
        c[1].metric("P(an)", f"{edited.p_an:.4f}", f"{edited.p_an - clean.p_an:+.4f}")
        c[2].metric("P(a)", f"{edited.p_a:.4f}", f"{edited.p_a - clean.p_a:+.4f}")
except SaexError as e:
    st.error(f"{e.problem} — {e.fix}")
