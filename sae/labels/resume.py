"""Labelling every feature of several SAEs, resumably: finished features are appended to
RUN/labels.partial/VARIANT.jsonl in chunks, under the settings' key; the variants run in
forked processes where there are cores for them."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sae.fsutil import write_json_atomic
from sae.labels.labeller import FeatureLabeller
from sae.runs.files import LABELS_PARTIAL_DIR as PARTIAL_DIR


def _partial(run: Path, key: str) -> Path:
    """RUN/labels.partial for this key (emptied when it holds another key's work)."""
    d = run / PARTIAL_DIR
    kf = d / "key.json"
    if d.exists():
        try:
            same = json.loads(kf.read_text()).get("key") == key
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    if not kf.exists():
        write_json_atomic(kf, {"key": key})
    return d


def _read_partial(path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
            out[int(r["feature"])] = r
    return out


PARTIAL_CHUNK = 256
"""Features labelled between two appends to the partial file."""


def label_variant(labeller: FeatureLabeller, d_sae: int, partial: Path | None, name: str,
                  progress: bool) -> list[dict]:
    """Every feature's record, continuing from `partial` (appended every `chunk` features)."""
    done = _read_partial(partial) if partial is not None else {}
    todo = [f for f in range(d_sae) if f not in done]
    buf: list[dict] = []
    from tqdm.auto import tqdm

    for f in tqdm(todo, desc=f"label {name}", unit="feature", disable=not progress, mininterval=1.0):
        r = labeller.label(f)
        done[f] = r
        buf.append(r)
        if partial is not None and len(buf) >= PARTIAL_CHUNK:
            with open(partial, "a") as fh:
                fh.write("".join(json.dumps(x) + "\n" for x in buf))
            buf = []
    if partial is not None and buf:
        with open(partial, "a") as fh:
            fh.write("".join(json.dumps(x) + "\n" for x in buf))
    return [done[f] for f in range(d_sae)]


# what forked workers label: set before the pool starts and inherited through fork, never serialised
_JOBS: dict[str, tuple] = {}


def _label_job(name: str) -> list[dict]:
    labeller, d_sae, partial, progress = _JOBS[name]
    return label_variant(labeller, d_sae, partial, name, progress)


def run_variants(labellers: dict[str, FeatureLabeller], d_sae: int, partial: Path | None,
                 progress: bool) -> dict[str, list[dict]]:
    """Label every variant; the variants run in forked processes, one per core (at most 2
    cores are assumed busy otherwise), where fork exists."""

    jobs = {name: (lab, d_sae, partial / f"{name}.jsonl" if partial else None, progress)
            for name, lab in labellers.items()}
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers < 2 or "fork" not in mp.get_all_start_methods():
        return {name: _label_job_direct(job, name) for name, job in jobs.items()}

    _JOBS.clear()
    _JOBS.update(jobs)
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futures = {name: pool.submit(_label_job, name) for name in jobs}
            return {name: fut.result() for name, fut in futures.items()}
    finally:
        _JOBS.clear()


def _label_job_direct(job: tuple, name: str) -> list[dict]:
    labeller, d_sae, partial, progress = job
    return label_variant(labeller, d_sae, partial, name, progress)
