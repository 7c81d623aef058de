"""Overview: the runs found, the selected run's model, hook point, evaluation and training curves."""

import pandas as pd
import streamlit as st

from explorer import render, state

st.title("Overview")
run = state.require_run()

cfg, info, ev = run.cfg, run.run, run.eval
st.subheader(str(run.path))
c = st.columns([3, 3, 2, 2])
for col, name, value in ((c[0], "model", run.model), (c[1], "hook point", run.hook_name)):
    col.caption(name)  # names in full, wrapped: a metric card would cut them
    col.markdown(f"**`{value}`**")
c[2].metric("architecture", run.architecture + (f" (k={cfg['k']})" if "k" in cfg else ""))
c[3].metric("latents", f"{cfg.get('d_sae', 0):,} x {cfg.get('d_in', 0)}")
if info.get("pretrained"):
    src = info["pretrained"]
    note = (info.get("hook") or {}).get("note")
    st.caption(f"sae-lens pretrained SAE {src['release']}/{src['sae_id']} (HF {src['repo_id']}, {src['path']})"
               + (f"; {note}" if note else ""))
elif info.get("sparsify"):
    st.caption(f"converted from the sparsify SAE {info['sparsify']['source']['folder']}")
elif info:
    st.caption(f"trained on {info.get('vectors', 0):,} vectors in {info.get('train_seconds', 0):.0f} s "
               f"({info.get('vectors_per_s', 0):,.0f} vectors/s); store {info.get('store', '?')}")

st.markdown("#### Evaluation on held-out text")
if ev is None:
    st.info("Not evaluated yet.")
    st.code(f"saex eval {run.path}", language="bash")
else:
    rows = [("explained variance (outliers excluded)", ev.get("explained_variance")),
            ("explained variance (outliers included)", ev.get("explained_variance_with_outliers")),
            ("L0", ev.get("l0")), ("dead fraction", ev.get("dead_fraction")),
            ("dense fraction (>10%)", ev.get("dense_fraction")), ("CE clean", ev.get("ce_clean")),
            ("CE spliced", ev.get("ce_spliced")), ("CE zero-ablated", ev.get("ce_zero_ablated")),
            ("CE-loss score", ev.get("ce_loss_score")), ("KL score", ev.get("kl_score"))]
    st.table(pd.DataFrame([(k, "—" if v is None else f"{v:.4g}") for k, v in rows], columns=["metric", "value"]))
    hist = ev.get("density_histogram")
    if hist:
        st.markdown("#### Feature density (log10 of firing fraction)")
        edges, counts = hist["log10_density_edges"], hist["counts"]
        shown = [i for i, c in enumerate(counts) if c] or [0]
        lo, hi = min(shown), max(shown) + 1  # the occupied range, not 20 empty decades
        st.bar_chart(pd.DataFrame({"latents": counts[lo:hi]}, index=[f"{e:.1f}" for e in edges[lo:hi]]))
        st.caption(f"{hist.get('never_fired', 0):,} latents never fired on the evaluated tokens")

labels = state.auto_label_summary(str(run.path))
variants = (labels or {}).get("variants") or {}
if "real" in variants and len(variants) > 1:
    names = {"real": "this SAE", "random": "random-direction control", "shuffled": "decoder-shuffled control"}
    st.markdown("#### Automatic labels on held-out text, against two control SAEs")
    for metric, title in (("detection", "detection balanced accuracy (delphi's sampling)"),
                          ("f1", "token-level F1 of the best label")):
        st.altair_chart(render.compared_histograms({names[k]: v[metric] for k, v in variants.items()}, title),
                        width="stretch")
    real = variants["real"]
    ctrl = variants.get("random") or real
    st.caption(f"Median detection balanced accuracy {real['detection']['median'] or 0:.2f} and median F1 "
               f"{real['f1']['median'] or 0:.2f} for this SAE's {real['labelled']:,} labelled features; the "
               f"random-direction control: {ctrl['detection']['median'] or 0:.2f} and {ctrl['f1']['median'] or 0:.2f}. "
               "The decoder-shuffled control fires where this SAE fires, so only its output-side labels "
               "(boosts_output) differ (`saex label`).")
    rows = []
    for kind in sorted({k for v in variants.values() for k in v["kinds"]}):
        row = {"label kind": kind}
        for k, v in variants.items():
            d = v["kinds"].get(kind) or {}
            row[f"{names[k]}: features"] = d.get("n", 0)
            row[f"{names[k]}: median detection"] = d.get("median_detection")
            row[f"{names[k]}: median F1"] = d.get("median_f1")
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    if labels.get("llm"):
        llm = labels["llm"]
        st.caption(f"LLM explainer {llm.get('explainer')}: median detection balanced accuracy "
                   + ", ".join(f"{names[k]} {v['median']:.2f} (n = {v['n']})"
                               for k, v in llm.get("detection", {}).items() if v.get("median") is not None))

metrics = run.metrics()
if metrics:
    st.markdown("#### Training curves")
    df = pd.DataFrame(metrics).set_index("vectors")
    cols = st.columns(2)
    for i, key in enumerate(k for k in ("loss", "explained_variance", "l0", "dead_fraction") if k in df):
        with cols[i % 2]:
            st.caption(key)
            st.line_chart(df[[key]])

st.markdown("#### All runs")
st.dataframe(pd.DataFrame([{"run": str(r.path), "model": r.model, "hook": r.hook_name, "architecture": r.architecture,
                            "latents": r.cfg.get("d_sae"), "EV": (r.eval or {}).get("explained_variance"),
                            "CE-loss score": (r.eval or {}).get("ce_loss_score"), "index": r.has_index}
                           for r in state.list_runs(str(state.checkpoints_root()))]), hide_index=True)
