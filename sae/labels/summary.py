"""What labels_summary.json says about one labelled SAE: distributions of the held-out scores,
per label kind, and the one line the CLI and the demo print."""

from __future__ import annotations

import numpy as np

from sae.labels.predicates import KINDS


def distribution(values: list[float], bins: int = 20) -> dict:
    a = np.asarray(values, np.float64)
    hist, edges = np.histogram(a, bins=bins, range=(0.0, 1.0))
    q = np.quantile(a, [0.25, 0.5, 0.75]).tolist() if len(a) else [None] * 3
    return {"n": int(len(a)), "median": q[1], "q25": q[0], "q75": q[2],
            "mean": float(a.mean()) if len(a) else None, "hist_edges": edges.tolist(), "hist_counts": hist.tolist()}


def best_f1s(records: list[dict]) -> list[float]:
    """Held-out F1 of the label of every feature that fired on the scoring half: a feature
    without a label, or whose label never hits, counts 0 (so a stricter proposer cannot look
    better by labelling fewer features)."""
    return [r["f1"] or 0.0 for r in records if r["n_fired"] > 0]


def detection_bas(records: list[dict], kind: str | None = None) -> list[float]:
    """Held-out detection balanced accuracy of every scorable feature's label (of one kind's
    best, if given); a scorable feature without one counts 0.5, chance."""
    out = []
    for r in records:
        if not r.get("scorable"):
            continue
        d = (r.get("by_kind") or {}).get(kind) if kind else r
        if kind and not d:
            continue  # per kind: the features that have a label of that kind
        out.append(d["detection"]["balanced_accuracy"] if d and d.get("detection") else 0.5)
    return out


def variant_summary(records: list[dict]) -> dict:
    """Distributions of one SAE's labels: best label, and the best of each kind."""
    kinds = {}
    for k in KINDS:
        f1 = [r["by_kind"][k]["f1"] or 0.0 for r in records if k in (r.get("by_kind") or {}) and r["n_fired"] > 0]
        ba = detection_bas(records, k)
        if f1:
            kinds[k] = {"n": len(f1), "median_f1": float(np.median(f1)),
                        "median_detection": float(np.median(ba)) if ba else None,
                        "chosen": sum(1 for r in records if r.get("kind") == k)}
    return {"labelled": sum(1 for r in records if r["label"] is not None),
            "scorable": sum(1 for r in records if r.get("scorable")),
            "f1": distribution(best_f1s(records)), "detection": distribution(detection_bas(records)),
            "kinds": kinds}


def labels_line(summary: dict) -> str:
    """One line for the CLI and the demo: medians of this SAE against the random control."""
    v = summary["variants"]
    real = v["real"]
    out = (f"labelled {summary['labelled']:,} of {summary['d_sae']:,} features; held-out medians: detection "
           f"{real['detection']['median'] or 0:.2f}, F1 {real['f1']['median'] or 0:.2f}")
    if "random" in v:
        out += (f" (random-direction control: {v['random']['detection']['median'] or 0:.2f}, "
                f"{v['random']['f1']['median'] or 0:.2f})")
    return out
