"""The PNG plots of `saex lookahead` (see sae/lookahead/article/run.py), drawn from report.json
alone, so a report can be re-plotted without the model."""

from __future__ import annotations

import math
from pathlib import Path

from sae.fsutil import atomic_path
from sae.lookahead.article.config import TARGET_FRACTION


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_report(r: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    # behaviour: gap with CI per prompt set
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sets = list(r["behaviour"])
    for i, n in enumerate(sets):
        g = r["behaviour"][n]["gap"]
        if g["value"] is not None:
            ax.errorbar(i, g["value"], yerr=[[g["value"] - g["ci"][0]], [g["ci"][1] - g["value"]]], fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylabel("gap: mean LD(an-nouns) - mean LD(a-nouns)")
    ax.set_title("logit(an) - logit(a): an-noun minus a-noun prompts (95% CI)", fontsize=9)
    _save(fig, out_dir / "behaviour.png")
    names.append("behaviour.png")

    prof = r.get("profiles", {})
    feats = prof.get("features") or []
    if feats:
        cols = min(5, len(feats))
        rows_n = math.ceil(len(feats) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(3 * cols, 2.4 * rows_n), squeeze=False,
                                 layout="constrained")
        for ax, f in zip(axes.flat, feats):
            for src, style in (("riddles", "-"), ("corpus", "--")):
                e = prof["sources"].get(src, {}).get("features", {}).get(str(f))
                if not e:
                    continue
                for grp, color in (("an", "tab:red"), ("a", "tab:blue")):
                    m = [float("nan") if v is None else v for v in e[grp]["mean"]]
                    lo = [float("nan") if v is None else v for v in e[grp]["lo"]]
                    hi = [float("nan") if v is None else v for v in e[grp]["hi"]]
                    ax.plot(prof["offsets"], m, style, color=color, label=f"{grp} ({src})")
                    ax.fill_between(prof["offsets"], lo, hi, color=color, alpha=0.12)
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_title(f"feature {f}", fontsize=9)
        for ax in list(axes.flat)[len(feats):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6)
        fig.suptitle("activation around the article (offset 0), mean and 95% CI", fontsize=10)
        _save(fig, out_dir / "profiles.png")
        names.append("profiles.png")

    c = r.get("causal", {})
    if "random" in c:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(c["random"]["removed"], bins=15, color="grey", label="density-matched random sets")
        ax.axvline(c["ablation"]["removed"], color="tab:red", label="chosen features")
        ax.axvline(c["ablation"]["gap_clean"] * TARGET_FRACTION, color="tab:red", ls=":", label="half the gap")
        ax.set_xlabel("gap removed on the test set (logits)")
        ax.legend(fontsize=7)
        _save(fig, out_dir / "causal.png")
        names.append("causal.png")
    d = r.get("dose_response") or {}
    if "selected" in d:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for grp, color in (("ld_an", "tab:red"), ("ld_a", "tab:blue"), ("gap", "black")):
            label = "gap" if grp == "gap" else f"{grp[3:]}-nouns"
            ax.plot(d["doses"], d["selected"][grp], "o-", color=color, label=f"chosen: {label}")
            for k, rc in enumerate(d["random"]):
                ax.plot(d["doses"], rc[grp], ":", color=color, alpha=0.6,
                        label=f"random: {label}" if k == 0 else None)
        ax.axvline(1, color="grey", lw=0.8)
        ax.set_xlabel("activation multiplied by (1 = clean, 0 = ablated)")
        ax.set_ylabel("mean logit(an) - logit(a); gap")
        ax.legend(fontsize=7)
        _save(fig, out_dir / "dose_response.png")
        names.append("dose_response.png")
    t = r.get("target")
    if t and t.get("profile", {}).get("features"):
        p = t["profile"]
        feats = list(p["features"])
        fig, axes = plt.subplots(1, len(feats), figsize=(3 * len(feats), 2.6), squeeze=False, layout="constrained")
        for ax, f in zip(axes.flat, feats):
            e = p["features"][f]
            for grp, color in ((t["noun"], "tab:green"), ("rest", "grey")):
                m = [float("nan") if v is None else v for v in e[grp]["mean"]]
                ax.plot(p["offsets"], m, "o-", color=color, ms=3, label=grp)
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_title(f"feature {f} (onset {e['onset']})", fontsize=8)
        axes.flat[0].legend(fontsize=6)
        fig.suptitle(f"target '{t['noun']}': top features by attribution, around the article", fontsize=10)
        _save(fig, out_dir / "target.png")
        names.append("target.png")
    return names
