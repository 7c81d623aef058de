"""Prompt lab: type a prompt, see which features fire on which token, line selected
features up around an anchor token, and ablate or steer them to watch the next token
(logit(an) − logit(a), P(an), P(a), top tokens before and after). Numbers: sae/lookahead/prompt_lab.py."""

import pandas as pd
import streamlit as st

from explorer import state
from sae.errors import SaexError
from sae.lookahead.interventions import OPS, Edit
from sae.lookahead.prompt_lab import next_token, read_prompt

st.title("Prompt lab")
run = state.require_run()

text = st.text_area("prompt (it should stop where the next word, e.g. the article, would start)",
                    value="A person who studies the stars is called", key="prompt")
try:
    iv = state.intervener(str(run.path))
    view = read_prompt(iv, text)
except SaexError as e:
    st.error(f"{e.problem} — {e.fix}")
    st.stop()

top = view.top_features(12)
st.markdown("#### Tokens × top features")
labels = [f"{i}:{t!r}" for i, t in enumerate(view.tokens)]
heat = pd.DataFrame(view.acts[:, top].numpy().T if top else [], index=[f"#{f}" for f in top], columns=labels)
flags = [i for i in range(len(view.tokens)) if view.special[i] or view.sink[i]]
# Colour only ordinary tokens: BOS and sink activations run to thousands and would wash out the rest.
ordinary_cols = [c for i, c in enumerate(labels) if i not in flags]
st.dataframe(heat.style.background_gradient(cmap="Oranges", axis=None, subset=ordinary_cols or None).format("{:.2f}"))
if flags:
    st.caption("BOS/special or attention-sink positions (left untouched by edits): "
               + ", ".join(labels[i] for i in flags))

c1, c2 = st.columns(2)
with c1:
    pos = st.selectbox("a token's features", range(len(view.tokens)), index=len(view.tokens) - 1,
                       format_func=lambda i: labels[i], key="token")
    st.dataframe(pd.DataFrame(view.features_at(pos, 10), columns=["feature", "activation"]), hide_index=True)
with c2:
    chosen = st.multiselect("selected features", top, default=top[:3], key="chosen")
    anchor = st.selectbox("anchor token (e.g. the article)", range(len(view.tokens)), index=len(view.tokens) - 1,
                          format_func=lambda i: labels[i], key="anchor")
    if chosen:
        aligned = view.aligned(chosen, anchor)
        st.line_chart(pd.DataFrame({f"#{f}": v for f, v in aligned.items()}, index=list(range(-5, 3))))
        st.caption("activation at offsets from the anchor token")

st.markdown("#### Intervene on the selected features")
e1, e2, e3 = st.columns(3)
op = e1.selectbox("edit", list(OPS), key="op")
value = e2.number_input("value (steer: added activation; clamp: set to; scale: factor)", value=0.0 if op != "scale"
                        else 1.0, key="value")
positions = e3.selectbox("at", ["prompt", "last", "before"], key="positions",
                         help="prompt: every prompt token; last: the token that chooses the next word; "
                              "before: every prompt token but the last")
before = next_token(iv, view)
after = next_token(iv, view, Edit(tuple(chosen), op=op, value=value, positions=positions)) if chosen else before
m = st.columns(3)
m[0].metric("logit(an) − logit(a)", f"{after.logit_diff:.3f}", f"{after.logit_diff - before.logit_diff:+.3f}")
m[1].metric("P(an)", f"{after.p_an:.4f}", f"{after.p_an - before.p_an:+.4f}")
m[2].metric("P(a)", f"{after.p_a:.4f}", f"{after.p_a - before.p_a:+.4f}")
t1, t2 = st.columns(2)
t1.caption("top next tokens, clean")
t1.dataframe(pd.DataFrame(before.top, columns=["token", "P"]), hide_index=True)
t2.caption("top next tokens, edited")
t2.dataframe(pd.DataFrame(after.top, columns=["token", "P"]), hide_index=True)
