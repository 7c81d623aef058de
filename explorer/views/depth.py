"""Depth: the report of `saex depth` (the a/an signal across layers: logit lens, probes for
the article on held-out nouns and for the noun, the probe direction projected out against
random directions, SAE features where an SAE was given). Every figure is the report's
(sae/lookahead/depth/); the page only lays it out."""

import pandas as pd
import streamlit as st

from explorer import state
from sae.lookahead.depth import DEPTH_DIR, PLOT_FILE, layer_table, read_depth_report
from sae.report import Answer
from sae.runs.catalogue import checkpoints_root

st.title("Depth")
run = state.current_run()
folders = ([run.path / DEPTH_DIR] if run is not None else []) + sorted(checkpoints_root().glob("depth-*"))
reports = {str(f): r for f in folders if (r := read_depth_report(f)) is not None}
if not reports:
    st.warning("No depth sweep yet" + (" for this run." if run is not None else "."))
    st.code(f"saex depth --run {run.path}" if run is not None else "saex depth", language="bash")
    st.caption("Sweeps layers 5,10,15,20,25 by default (--layers); needs only the model, an SAE run is optional.")
    st.stop()
folder = st.selectbox("report", list(reports)) if len(reports) > 1 else next(iter(reports))
report = reports[folder]
st.caption(f"{report['model']}, layers {', '.join(map(str, report['layers']))}; {folder}")

st.markdown("#### The answer")
answer = Answer.from_dict(report["answer"])
st.info(answer.verdict)
for line in answer.lines:
    st.markdown(f"- {line}")

st.markdown("#### Against depth")
st.image(f"{folder}/{PLOT_FILE}")

st.markdown("#### Per layer")
st.dataframe(pd.DataFrame(layer_table(report)), hide_index=True)

with st.expander("Prompt sets"):
    ps = report["prompt_sets"]
    for name, src in ps["sources"].items():
        st.markdown(f"- **{name}**: {src}")
    st.markdown(f"Probe training nouns ({len(ps['train_nouns'])}): {', '.join(ps['train_nouns'])}")
    st.markdown(f"Probe test nouns ({len(ps['test_nouns'])}): {', '.join(ps['test_nouns'])}")

sae = report.get("sae") or {}
for layer, s in sae.items():
    st.markdown(f"#### SAE features ablated at layer {layer}")
    st.dataframe(pd.DataFrame(s["features"]), hide_index=True)
