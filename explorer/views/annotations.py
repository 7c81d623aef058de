"""Annotations: every labelled feature of this SAE; filter, edit, history, export and import."""

import pandas as pd
import streamlit as st

from explorer import annotation_panel, state
from sae.labels.records import SAEKey

st.title("Annotations")
run = state.require_run()
sae = state.load_sae(str(run.path))
key = SAEKey.from_sae(sae)
st.caption(f"{key.model} · {key.hook} · SAE {key.sae_hash[:12]} (labels belong to this exact SAE)")

c1, c2 = st.columns(2)
text = c1.text_input("filter by text")
tag = c2.text_input("tag")
labels = annotation_panel.store().list_labels(key, filter_text=text or None, tag=tag or None)
if labels:
    st.dataframe(pd.DataFrame([{"feature": a.feature, "label": a.label, "tags": ", ".join(a.tags),
                                "confidence": a.confidence, "author": a.author, "version": a.version,
                                "updated": a.updated_at} for a in labels]), hide_index=True)
else:
    st.info("No labelled features match." if text or tag else "No feature of this SAE is labelled yet.")

st.markdown("#### Edit")
feature = st.number_input("feature", min_value=0, max_value=int(sae.d_sae) - 1,
                          value=int(labels[0].feature) if labels else 0)
st.link_button("open its feature page", f"/feature?run={run.path}&feature={int(feature)}")
annotation_panel.show(key, int(feature), widget_key="annpage")

st.markdown("#### Export / import")
annotation_panel.export_import(key)
