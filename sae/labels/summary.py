"""What labels_summary.json says about one labelled SAE: distributions of the held-out scores,
per label kind, and the one line the CLI and the demo print."""

from __future__ import annotations

import numpy as np

from sae.labels.predicates import KINDS
from sae.report import Answer
from sae.statistics import Z95


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


def separation(real: list[float], control: list[float]) -> dict | None:
    """How often a feature of this SAE scores above one of the control: the AUC (Mann-Whitney U over
    n_real * n_control, ties counting half) with Hanley & McNeil's 95% interval; features are the units."""
    a, b = np.asarray(real, np.float64), np.asarray(control, np.float64)
    if not len(a) or not len(b):
        return None
    both = np.concatenate([a, b])
    order = both.argsort(kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # ties share their mean rank
        tie = both == v
        ranks[tie] = ranks[tie].mean()
    auc = (ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b))
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    se = np.sqrt(max(auc * (1 - auc) + (len(a) - 1) * (q1 - auc ** 2) + (len(b) - 1) * (q2 - auc ** 2), 0.0)
                 / (len(a) * len(b)))
    return {"auc": float(auc), "ci": [float(max(auc - Z95 * se, 0.0)), float(min(auc + Z95 * se, 1.0))],
            "n_real": int(len(a)), "n_control": int(len(b))}


def labels_answer(summary: dict, results: dict[str, list[dict]]) -> dict:
    """The labels' answer (an `Answer`, as stored): do this SAE's labels beat the random-direction control's on
    held-out text? Judged by the AUC of held-out token F1 (features as units) and its interval."""
    v = summary["variants"]
    real = v["real"]
    lines = [labels_line(summary) + "."]
    if "random" not in results:
        return Answer(f"Labelled {summary['labelled']:,} of {summary['d_sae']:,} features; no control was run, so "
                      "these scores have nothing to be compared with (run with --control yes).", lines,
                      "no_control").to_dict()
    sep = {name: separation(best_f1s(results["real"]), best_f1s(recs)) for name, recs in results.items()
           if name != "real"}
    rnd = sep["random"]
    for name, s in sep.items():
        if s:
            lines.append(f"Against the {name} control: a feature of this SAE has the higher held-out F1 with "
                         f"probability {s['auc']:.2f} (95% CI {s['ci'][0]:.2f} to {s['ci'][1]:.2f}; "
                         f"{s['n_real']:,} against {s['n_control']:,} features).")
    rf, cf = real["f1"]["median"] or 0.0, v["random"]["f1"]["median"] or 0.0
    ratio = f" ({rf / cf:.1f}x)" if cf > 0 else ""
    if rnd and rnd["ci"][0] > 0.5:
        verdict, label = (f"The labels say more about this SAE than about random directions: median held-out F1 "
                          f"{rf:.2f} against {cf:.2f}{ratio}, AUC {rnd['auc']:.2f} (95% CI {rnd['ci'][0]:.2f} to "
                          f"{rnd['ci'][1]:.2f})."), "beats_control"
    else:
        verdict, label = (f"The labels do not separate this SAE from random directions: median held-out F1 {rf:.2f} "
                          f"against {cf:.2f}" + (f", AUC {rnd['auc']:.2f} (95% CI {rnd['ci'][0]:.2f} to "
                                                 f"{rnd['ci'][1]:.2f})" if rnd else "") + "."), "not_separated"
    return Answer(verdict, lines, label, {"separation": sep}).to_dict()
