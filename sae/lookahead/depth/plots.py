"""The sweep's figure."""

from __future__ import annotations

from pathlib import Path

from sae.lookahead.depth.config import PLOT_FILE


def plot_depth(r: dict, out_dir: Path) -> str:
    """Three panels against depth: the lens gap, decoding accuracy, the gap removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sae.fsutil import atomic_path

    layers = r["layers"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    vals = [r["lens"][str(L)] for L in layers]
    ok = [(L, v) for L, v in zip(layers, vals) if v.get("value") is not None]
    if ok:
        ax.errorbar([L for L, _ in ok], [v["value"] for _, v in ok],
                    yerr=[[v["value"] - v["ci"][0] for _, v in ok], [v["ci"][1] - v["value"] for _, v in ok]],
                    fmt="o-", capsize=3, label="logit lens at -1")
    if r["output"].get("value") is not None:
        ax.axhline(r["output"]["value"], color="C3", ls="--", lw=1, label="at the output")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("gap: LD(an-nouns) - LD(a-nouns)")
    ax.set_title("logit(an) - logit(a), an- minus a-noun riddles", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for o in r["offsets"][::-1]:
        pts = [(L, r["article_probe"].get(str(L), {}).get(str(o))) for L in layers]
        pts = [(L, v) for L, v in pts if v]
        if pts:
            ax.plot([L for L, _ in pts], [v["accuracy"] for _, v in pts], "o-" if o == -1 else ".-",
                    alpha=1 if o == -1 else 0.45, label=f"article @{o}")
    pts = [(L, r["article_probe"].get(str(L), {}).get("-1")) for L in layers]
    pts = [(L, v) for L, v in pts if v]
    if pts:
        ax.plot([L for L, _ in pts], [v["control_mean"] for _, v in pts], "k:", label="shuffled control @-1")
    ident = r.get("identity_probe") or {}
    if ident:
        xs = [L for L in layers if str(L) in ident]
        ax.plot(xs, [ident[str(L)]["accuracy_mean"] for L in xs], "s-", color="C4",
                label="noun identity (frame held out)")
        ax.axhline(ident[str(xs[0])]["chance"], color="C4", ls=":", lw=0.8)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("linear probes (article: held-out nouns)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[2]
    causal = r.get("causal") or {}
    xs = [L for L in layers if str(L) in causal and causal[str(L)]["gap_clean"] not in (None, 0)]
    if xs:
        g = [causal[str(L)]["gap_clean"] for L in xs]
        ax.plot(xs, [causal[str(L)]["removed"] / gc for L, gc in zip(xs, g)], "o-", label="probe direction")
        mean = [causal[str(L)]["random"]["removed_mean"] / gc for L, gc in zip(xs, g)]
        q95 = [causal[str(L)]["random"]["removed_q95"] / gc for L, gc in zip(xs, g)]
        ax.plot(xs, mean, "k:", label="random directions (mean)")
        ax.fill_between(xs, mean, q95, color="grey", alpha=0.25, label="random: up to 95th pct")
    for L, s in (r.get("sae") or {}).items():
        if s["gap_clean"]:
            ax.plot([int(L)], [s["removed"] / s["gap_clean"]], "D", color="C2", label=f"SAE features (layer {L})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of the gap removed")
    ax.set_title("projected out at -1 (held-out nouns)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{r['model']}: the a/an choice across depth", fontsize=10)
    with atomic_path(out_dir / PLOT_FILE) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return PLOT_FILE
