"""Feature page: top and quantile examples with token highlighting, activation histogram,
output-token effects, lookahead profile (+1..+3), decoder neighbours, the activation profile
around the articles " a" / " an" (offsets -8..+2, with counts, intervals and onsets), annotations.
The `feature` query parameter makes the URL a permalink."""

import html
import random

import pandas as pd
import streamlit as st

from explorer import annotation_panel, render, state
from sae.errors import SaexError
from sae.labels.auto import short_label
from sae.labels.records import SAEKey

st.title("Feature")
run = state.require_run()
index = state.require_index(run)

n = index.d_sae
try:
    current = int(st.query_params.get("feature", 0)) % n
except ValueError:
    current = 0
nav = st.columns([2, 1, 1, 1, 4])
wanted = nav[0].number_input("feature id", min_value=0, max_value=n - 1, value=current, key=f"goto-{current}")
if nav[1].button("◀ prev"):
    wanted = (current - 1) % n
if nav[2].button("next ▶"):
    wanted = (current + 1) % n
if nav[3].button("random"):
    wanted = random.randrange(n)
if int(wanted) != current:
    st.query_params["feature"] = str(int(wanted))
    st.rerun()
st.query_params["feature"] = str(current)

f = state.feature(str(run.path), current)
label = annotation_panel.store().get(SAEKey.from_sae(state.load_sae(str(run.path))), current)
auto_here = state.auto_labels(str(run.path)).get(current) or {}
title = label.label if label else (f"{short_label(auto_here)} (automatic)" if auto_here.get("label") else "")
st.subheader(f"#{current}" + (f" · {title}" if title else ""))
m = st.columns(4)
m[0].metric("density", f"{f.density:.3%}")
m[1].metric("fires on", f"{f.fires:,} tokens")
m[2].metric("mean activation", f"{f.mean_activation:.3g}")
m[3].metric("max activation", f"{f.max_activation:.3g}")

left, right = st.columns([3, 2])
with left:
    st.markdown("#### Top activations")
    if not f.top_examples:
        st.info("This feature never fired on the indexed tokens.")
    for ex in f.top_examples:
        st.markdown(render.tokens_html(ex.text, ex.acts, f.max_activation, ex.center), unsafe_allow_html=True)
    if f.bands:
        st.markdown("#### Examples by activation band")
        for band in f.bands:
            with st.expander(f"band {band.band}: activation {band.low:.3g} – {band.high:.3g}"):
                for ex in band.examples:
                    st.markdown(render.tokens_html(ex.text, ex.acts, f.max_activation, ex.center),
                                unsafe_allow_html=True)
with right:
    st.markdown("#### Activation histogram")
    st.altair_chart(render.log_histogram(f.hist_counts, f.hist_edges), width="stretch")
    st.markdown("#### Output tokens (decoder through final norm and unembedding)")
    b, s = st.columns(2)
    b.dataframe(pd.DataFrame([(t, round(v, 3)) for _, t, v in f.boosted], columns=["boosted", "effect"]),
                hide_index=True)
    s.dataframe(pd.DataFrame([(t, round(v, 3)) for _, t, v in f.suppressed], columns=["suppressed", "effect"]),
                hide_index=True)
    st.markdown("#### What follows when it fires (lookahead profile)")
    for d, stats in f.following_by_lift.items():
        if stats:
            st.caption("the token it fires on, by lift over the base rate" if d == 0 else
                       f"+{d} token{'s' if d > 1 else ''} after it fires, by lift over the base rate")
            st.dataframe(pd.DataFrame([(t.text, t.count, round(t.precision, 3), round(t.lift, 1)) for t in stats[:8]],
                                      columns=["token", "count", "precision", "lift"]), hide_index=True)
    st.markdown("#### Nearest decoder neighbours")
    st.markdown(" ".join(f"[#{g}](/feature?run={run.path}&feature={g}) ({c:.2f})" for g, c in f.neighbours[:10]))

st.markdown("#### When it turns on relative to the article")
if f.aligned is None:
    st.info(index.aligned_note)
else:
    al = f.aligned
    forms = {art: " + ".join(repr(x) for x in row.forms) for art, row in al.articles.items()}
    st.caption(f"mean activation (0 where it does not fire) at each offset from {forms['a']} and {forms['an']} "
               "in the indexed text, with 95% intervals (normal approximation); offsets past the window's edge, "
               "special tokens and outliers are not counted. Occurrences count as independent and the text around ' a' "
               "and ' an' differs in more than the next word: an early onset is a lead for the Lookahead page's "
               "matched prompts, not a finding")
    st.altair_chart(render.aligned_chart(al.offsets, {f"a ({forms['a']})": al.articles["a"],
                                                      f"an ({forms['an']})": al.articles["an"]}),
                    width="stretch")

    def _onset(v):
        return "never" if v is None else f"{v:+d}"

    o = st.columns(2)
    o[0].metric("onset: mean on 'an' above 'a'", _onset(al.onset_an_over_a),
                help="earliest offset where the mean after ' an' exceeds the mean after ' a' beyond a one-sided z "
                "bound, Bonferroni-corrected over the offsets")
    o[1].metric("onset: mean on 'a' above 'an'", _onset(al.onset_a_over_an))

    def _table(rows):
        out = []
        for j, off in enumerate(al.offsets):
            row = {"offset": off}
            for name, r in rows.items():
                row[f"n {name}"] = r.n[j]
                row[f"fired {name}"] = r.fired[j]
                row[f"mean {name}"] = round(r.mean[j], 4)
                row[f"95% CI {name}"] = "" if r.lo[j] != r.lo[j] else f"{r.lo[j]:.3g} … {r.hi[j]:.3g}"
            out.append(row)
        return pd.DataFrame(out)

    st.dataframe(_table(al.articles), hide_index=True)
    with st.expander("each article form alone"):
        st.dataframe(_table(al.forms), hide_index=True)

auto = state.auto_labels(str(run.path)).get(current)
if auto and auto.get("label"):
    st.markdown("#### Automatic label")
    st.markdown(f"**{html.escape(short_label(auto), quote=False)}** · automatic")
    with st.expander("the full, testable predicate"):
        st.text(auto["label"])

    def _pct(v):
        return "—" if v is None else f"{v:.1%}"

    det = auto.get("detection") or {}
    c = st.columns(5)
    c[0].metric("detection", _pct(det.get("balanced_accuracy")), help="balanced accuracy on delphi's sampling: "
                "held-out 32-token windows from every activation decile and random quiet ones; the label says "
                "'active' where its predicate holds somewhere in the window")
    c[1].metric("F1", _pct(auto.get("f1")), help="token level, over every held-out position")
    c[2].metric("precision", _pct(auto.get("precision")), help="of the held-out positions where the predicate holds, "
                "the fraction where the feature fires")
    c[3].metric("recall", _pct(auto.get("recall")), help="of the held-out positions where it fires, the fraction the "
                "predicate covers")
    c[4].metric("fuzzing", _pct((auto.get("fuzzing") or {}).get("balanced_accuracy")),
                help="delphi's fuzzing, offline: does the label hold at the true firings of an activating window "
                "more than at as many random positions of it")
    st.caption(f"proposed by `saex label` from one half of the held-out store, scored on the other half "
               f"({auto.get('n_fired', 0):,} firings there)")
    if auto.get("by_kind"):
        with st.expander("the best label of every kind"):
            st.dataframe(pd.DataFrame([{"kind": k, "label": short_label(d), "predicate": d["label"],
                                        "detection": (d.get("detection") or {}).get("balanced_accuracy"),
                                        "F1": d.get("f1"), "precision": d.get("precision"), "recall": d.get("recall")}
                                       for k, d in auto["by_kind"].items()]), hide_index=True)
    a1, a2 = st.columns([2, 1])
    who = a1.text_input("accepted by", value=annotation_panel.default_author(), key="auto-who")
    if a2.button("accept as this feature's label", key="accept-auto"):
        from sae.labels.auto import accept_label

        try:
            accept_label(annotation_panel.store(), SAEKey.from_sae(state.load_sae(str(run.path))), auto, who)
            st.success("saved as an annotation (author and predicate kept in its history)")
        except SaexError as e:
            st.error(f"{e.problem} — {e.fix}")

st.markdown("#### Annotation")


class _IndexTokenizer:
    """encode/decode over the index's vocabulary, so claims need no model load."""

    def encode(self, text, add_special_tokens=False):
        try:
            return index.token_ids(text)[:1]
        except SaexError:
            return index.token_ids(text.strip())[:1]

    def decode(self, ids):
        return "".join(index.text(int(i)) for i in ids)


try:
    annotation_panel.show(SAEKey.from_sae(state.load_sae(str(run.path))), current, tokenizer=_IndexTokenizer(),
                          widget_key="feat")
except SaexError as e:
    st.error(f"{e.problem} — {e.fix}")

label = annotation_panel.store().get(SAEKey.from_sae(state.load_sae(str(run.path))), current)
if label and label.claim:
    claim = label.claim
    words = ", ".join(repr(index.text(t)) for t in claim["tokens"])
    st.markdown(f"**Claim:** fires {claim['offset']} token(s) before {words}")
    if st.button("score the claim on held-out text", key="score-claim"):
        from sae.labels.claims import score_feature_claim

        try:
            with st.spinner("encoding the held-out store ..."):
                sc = score_feature_claim(state.load_sae(str(run.path)), current, claim,
                                         store=index.manifest.get("store", {}).get("path"))
            c = st.columns(3)
            c[0].metric("precision", "—" if sc.precision is None else f"{sc.precision:.1%}",
                        help=f"{sc.hits:,} of the {sc.fired:,} positions where it fires")
            c[1].metric("recall", "—" if sc.recall is None else f"{sc.recall:.1%}",
                        help=f"{sc.hits:,} of the {sc.targets:,} positions followed by a claimed token")
            c[2].metric("hits", f"{sc.hits:,}")
        except SaexError as e:
            st.error(f"{e.problem} — {e.fix}")
