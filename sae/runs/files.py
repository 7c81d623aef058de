"""What lives in an SAE run folder, by name, and when a run counts as finished.

A run folder is SAELens's inference format (`cfg.json` + `sae_weights.safetensors`, readable
by `sae_lens.SAE.load_from_disk`) plus our records beside it. Trainers write `cfg.json`
last, so its presence next to the weights is what "finished" means everywhere.
"""

from __future__ import annotations

from pathlib import Path

CFG_FILE = "cfg.json"
"""SAELens config: architecture, d_in, d_sae, metadata (model, hook)."""
WEIGHTS_FILE = "sae_weights.safetensors"
"""W_enc, W_dec, b_enc, b_dec (and threshold for JumpReLU)."""
SPARSITY_FILE = "sparsity.safetensors"
"""log10 firing density per latent over the training vectors (as the SAELens runner writes it)."""
RUN_FILE = "run.json"
"""Where the run came from: store, model, hook, input scale, timings."""
TRAIN_CONFIG_FILE = "train_config.json"
"""The TrainConfig the run was trained with."""
METRICS_FILE = "metrics.jsonl"
"""The training log, one JSON record per logged step."""
CURVES_FILE = "training.png"
"""Training curves drawn from the log."""
CHECKPOINT_FILE = "checkpoint.safetensors"
"""Resumable training state while a run is in progress (deleted when it finishes)."""
EVAL_FILE = "eval.json"
"""Held-out evaluation (`saex eval`)."""
INDEX_DIR = "index"
"""The feature index (`saex index`)."""
INDEX_MANIFEST_FILE = "manifest.json"
"""The index's manifest inside INDEX_DIR; written last, it marks the index complete."""
LOOKAHEAD_DIR = "lookahead"
"""The a/an lookahead report and plots (`saex lookahead`)."""
REPORT_FILE = "report.json"
"""The lookahead report, inside LOOKAHEAD_DIR."""
LABELS_FILE = "labels.jsonl"
"""Automatic feature labels, one record per feature (`saex label`)."""
LABELS_SUMMARY_FILE = "labels_summary.json"
"""What the labels say against their controls; written last, it marks the labels complete."""
LABELS_PARTIAL_DIR = "labels.partial"
"""Features labelled so far by an unfinished `saex label` (removed when the labels are complete)."""
FIND_DIR = "find"
"""Cached answers of `saex find`, one file per question."""
DEPTH_DIR = "depth"
"""`saex depth` reports of this run."""


def is_finished(run: str | Path) -> bool:
    """True when `run` holds a complete SAE: the config (written last) beside the weights."""
    run = Path(run)
    return (run / CFG_FILE).is_file() and (run / WEIGHTS_FILE).is_file()


REPORTS = {"eval": EVAL_FILE, "labels": LABELS_SUMMARY_FILE, "lookahead": f"{LOOKAHEAD_DIR}/{REPORT_FILE}",
           "depth": f"{DEPTH_DIR}/{REPORT_FILE}"}
"""Where each analysis writes its report in a run folder (the word finder's are per word, under FIND_DIR)."""


def report_path(run: str | Path, kind: str) -> Path:
    if kind not in REPORTS:
        raise ValueError(f"unknown report kind {kind!r}; known: {', '.join(REPORTS)}")
    return Path(run) / REPORTS[kind]


def read_report(run: str | Path, kind: str):
    """The `kind` report of a run folder as a `sae.report.Report`, or None when it is missing or unreadable
    (a damaged file counts as not written: the analysis is simply run again)."""
    return read_report_file(report_path(run, kind), kind)


def read_report_file(path: str | Path, kind: str, fmt: int | None = None):
    """The report at `path` as a `sae.report.Report` of `kind`, or None when it is missing, unreadable or
    (with `fmt`) of another format: for reports that live outside a run folder, such as a depth sweep
    without an SAE."""
    import json

    from sae.report import Report

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or (fmt is not None and data.get("format") != fmt):
        return None
    return Report(kind, data, path)


def read_labels(run: str | Path) -> dict[int, dict]:
    """RUN/labels.jsonl by feature; {} when there is none or it is unfinished (no summary yet:
    `saex label` writes the summary last)."""
    import json

    path = Path(run) / LABELS_FILE
    if not path.exists() or not (Path(run) / LABELS_SUMMARY_FILE).exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[int(r["feature"])] = r
    return out
