"""Training curves of a run as one PNG: loss, explained variance, L0 and dead fraction
against training vectors, from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from sae.fsutil import atomic_path


def plot_metrics(metrics: Path, dest: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe inside Streamlit and under torchrun
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{metrics} has no metrics")
    x = [r["vectors"] for r in rows]
    panels = [("loss", "loss (MSE + aux)", True), ("explained_variance", "explained variance (train batch)", False),
              ("l0", "L0 (active latents per vector)", False), ("dead_fraction", "dead fraction", False)]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    for ax, (key, title, log) in zip(axes.flat, panels):
        ax.plot(x, [r.get(key, float("nan")) for r in rows], lw=1.2)
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("training vectors")
    fig.suptitle(Path(metrics).parent.name, fontsize=11)
    fig.tight_layout()
    with atomic_path(Path(dest)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(dest)
