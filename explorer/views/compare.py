"""Compare: this run beside a run of the same hook on another model (e.g. the base model and its planning
organism, as `saex demo --organism` makes them). The lookahead's short answers and dose-response, the
finder's answers for one word with the top feature's profile, and the depth sweeps, side by side. Every
number is a stored report's (sae/lookahead/compare.py reads them); the page only lays them out."""

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from explorer import render, state
from sae.errors import SaexError
from sae.lookahead.compare import (
    comparable_runs,
    depth_report,
    depth_rows,
    dose_rows,
    finder_rows,
    finder_words,
    lookahead_report,
    lookahead_rows,
    model_role,
    runs_at_other_hooks,
)
from sae.lookahead.finder import FindConfig, find_word, latest_report
from sae.runs.catalogue import checkpoints_root

st.title("Compare models")
st.caption("The same analyses on the same hook of two models, side by side: does the instrument tell a model that "
           "plans the article from one that does not?")
run = state.require_run()
every_run = state.list_runs(str(checkpoints_root()))
others = comparable_runs(run, every_run)
elsewhere = runs_at_other_hooks(run, every_run) if not others else []
if elsewhere:
    st.info(f"No other run reads {run.hook_name} of another model, but runs of this model at other hooks have one "
            "to compare with: open this page on one of them.")
    for r in elsewhere:
        st.page_link("views/compare.py", label=f"{r.path} ({r.hook_name})", query_params={"run": str(r.path)})
    st.stop()
if not others:
    st.info(f"No other run reads {run.hook_name} of another model. Make the planning organism and its runs beside "
            "the demo's (about an hour on 2 cores), then open this page on the base run it prints:")
    st.code("saex demo --organism", language="bash")
    st.caption("or, for any model: saex organism --out checkpoints/organism, then "
               "saex demo --model checkpoints/organism --out-dir checkpoints/demo-organism")
    st.stop()
names = [str(r.path) for r in others]
wanted = st.query_params.get("with")
other = others[names.index(wanted) if wanted in names else 0]
other = others[names.index(st.selectbox("compare with", names, index=names.index(str(other.path))))]
st.query_params["with"] = str(other.path)
pair = {"a": run, "b": other}
column = {k: f"{model_role(r.model)}: {Path(r.model).name or r.model}" for k, r in pair.items()}
if column["a"] == column["b"]:
    column = {k: f"{v} ({pair[k].path.name})" for k, v in column.items()}
cols = st.columns(2)
for c, (k, r) in zip(cols, pair.items()):
    c.markdown(f"**{column[k]}**")
    c.caption(f"model {r.model} · run {r.path}")


TEXT_ROWS = ("verdict", "planned or baked in", "power")  # sentences: two columns of text above the numbers


def _table(rows: list[dict]) -> None:
    for r in rows:
        if r["measure"] in TEXT_ROWS:
            st.caption(r["measure"])
            left, right = st.columns(2)
            left.markdown(r["a"])
            right.markdown(r["b"])
    numbers = [r for r in rows if r["measure"] not in TEXT_ROWS]
    st.dataframe(pd.DataFrame([{"measure": r["measure"], column["a"]: r["a"], column["b"]: r["b"]} for r in numbers]),
                 hide_index=True, width="stretch",
                 column_config={"measure": st.column_config.TextColumn(width="large"),
                                column["a"]: st.column_config.TextColumn(width="medium"),
                                column["b"]: st.column_config.TextColumn(width="medium")})


st.markdown("#### Lookahead: do the chosen features carry the article gap?")
look = {k: lookahead_report(r.path) for k, r in pair.items()}
if not any(look.values()):
    st.caption("Neither run has a lookahead report: " + " · ".join(f"`saex lookahead {r.path}`" for r in pair.values()))
else:
    _table(lookahead_rows(look["a"], look["b"]))
    dose = pd.DataFrame(dose_rows({column[k]: v for k, v in look.items()}))
    if len(dose):
        st.altair_chart(alt.Chart(dose).mark_line(point=True).encode(
            x=alt.X("dose:Q", title="the chosen features' activations multiplied by (1 = clean, 0 = ablated)"),
            y=alt.Y("gap:Q", title="gap: logit(an) − logit(a), an- minus a-noun prompts"),
            color=alt.Color("model:N", title="model", scale=alt.Scale(range=["#1f77b4", "#d62728"])),
            strokeDash=alt.StrokeDash("features:N", title="features"),
            tooltip=["model", "features", "dose", "gap"]), width="stretch")
        st.caption("Dose-response on the test prompts: a feature set that carries the decision moves the gap with "
                   "its dose; random sets of matched density stay flat.")

st.markdown("#### Find a word: the same question on both")
words = finder_words(run.path, other.path)
c1, c2 = st.columns([3, 1])
typed = c1.text_input("ask a new word on both runs (about half a minute each)", key="compare-word")
if c2.button("ask both", disabled=not typed.strip()):
    bar = st.progress(0.0, text="starting ...")
    try:
        for j, r in enumerate(pair.values()):
            find_word(FindConfig(word=typed, run=str(r.path), progress=False), intervener=state.intervener(str(r.path)),
                      on_step=lambda what, done, j=j: bar.progress((j + done) / 2, text=f"{r.path.name}: {what}"))
    except SaexError as e:
        st.error(f"{e.problem} — {e.fix}")
        st.stop()
    words = finder_words(run.path, other.path)
    st.query_params["word"] = typed.strip()
if not words:
    st.caption("No stored finder answers on either run yet: ask a word above, or `saex find WORD RUN`.")
else:
    default = st.query_params.get("word", "astronomer")
    word = st.selectbox("word", words, index=words.index(default) if default in words else 0, key="compare-pick")
    st.query_params["word"] = word
    found = {k: latest_report(r.path, word) for k, r in pair.items()}
    _table(finder_rows(found["a"], found["b"]))
    cols = st.columns(2)
    for c, (k, rep) in zip(cols, found.items()):
        if rep is None:
            c.caption(f"no stored answer: `saex find {word} {pair[k].path}`")
            continue
        prof = rep["profiles"]
        if not prof["features"]:
            continue
        f = next(iter(prof["features"]))
        c.markdown(f"{column[k]}: top candidate [#{f}](/finder?run={pair[k].path}&word={word})")
        c.altair_chart(render.profile_chart(render.finder_profile_frame(prof, f)), width="stretch")

st.markdown("#### Depth: where the article and the noun become readable (no SAE needed)")
deep = {k: depth_report(r.path) for k, r in pair.items()}
if not any(deep.values()):
    st.caption("Neither run has a depth sweep: " + " · ".join(f"`saex depth --run {r.path}`" for r in pair.values()))
else:
    _table(depth_rows(deep["a"], deep["b"]))
    missing = [r for k, r in pair.items() if deep[k] is None]
    if missing:
        st.caption("Not swept yet: " + " · ".join(f"`saex depth --run {r.path}`" for r in missing))
