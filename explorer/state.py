"""What every page shares: the run being explored and cached handles on it.

The run comes from the `run` query parameter (so every URL is a permalink), else from
`saex explore RUN`, else the first run found. Model and SAE load once per process
(`st.cache_resource`); everything they compute comes from `sae/`."""

from __future__ import annotations

import sys

import streamlit as st

from sae.runs.catalogue import RunInfo, checkpoints_root, find_runs, read_run


def _cli_run() -> str | None:
    """`streamlit run explorer/app.py -- --run PATH` (what `saex explore RUN` does)."""
    args = sys.argv[1:]
    if "--run" in args and args.index("--run") + 1 < len(args):
        return args[args.index("--run") + 1]
    return None


@st.cache_data(ttl=10)
def list_runs(root: str) -> list[RunInfo]:
    return find_runs(root)


def current_run() -> RunInfo | None:
    """The selected run (None when there is none anywhere), with a picker in the sidebar."""
    runs = list_runs(str(checkpoints_root()))
    wanted = st.query_params.get("run") or _cli_run()
    if wanted and all(str(r.path) != wanted for r in runs):
        try:
            runs = [read_run(wanted), *runs]
        except Exception as e:  # a bad permalink: say so, fall back to the others
            st.sidebar.error(str(e))
            wanted = None
    if not runs:
        return None
    names = [str(r.path) for r in runs]
    index = names.index(wanted) if wanted in names else 0
    choice = st.sidebar.selectbox("SAE run", names, index=index)
    if st.query_params.get("run") != choice:
        st.query_params["run"] = choice
    return runs[names.index(choice)]


def require_run() -> RunInfo:
    """The selected run; without any, the command that makes one, and the page stops."""
    run = current_run()
    if run is None:
        _no_runs_message()
        st.stop()
    return run


def _no_runs_message() -> None:
    st.warning(f"No trained SAE runs under `{checkpoints_root()}`.")
    st.markdown("Create the default one (model, activations, SAE, evaluation) with:")
    st.code("make demo        # or: saex demo", language="bash")
    st.markdown("or train your own with `saex train --config training/configs/default.toml`, "
                "then reload this page.")


@st.cache_resource(show_spinner="loading the SAE ...")
def load_sae(path: str):
    from sae.runs.load import load_sae as _load

    return _load(path)


@st.cache_resource(show_spinner="loading the model ...")
def load_model(spec: str):
    from sae.data.models import load_model as _load

    return _load(spec, device="cpu")


@st.cache_resource(show_spinner="opening the feature index ...")
def _open_index(path: str, stamp: float):
    from sae.index.reader import FeatureIndex

    return FeatureIndex(path)


def require_index(run: RunInfo):
    """The run's feature index; without one, the command that builds it, and the page stops."""
    index = feature_index(str(run.path))
    if index is None:
        st.warning("This run has no feature index yet.")
        st.code(f"saex index {run.path}", language="bash")
        st.stop()
    return index


def feature_index(path: str):
    """The run's feature index, or None when it has none yet (reopened when rebuilt)."""
    from sae.index.reader import MANIFEST_FILE, index_dir

    manifest = index_dir(path) / MANIFEST_FILE
    if not manifest.exists():
        return None
    return _open_index(path, manifest.stat().st_mtime)


@st.cache_data(max_entries=256, show_spinner=False)
def feature(path: str, i: int):
    return feature_index(path).feature(i)


@st.cache_resource(show_spinner=False)  # one shared object: cache_data would copy thousands of records per call
def _auto_labels(path: str, stamp: float) -> dict:
    from sae.runs.files import read_labels

    return read_labels(path)


def auto_label_summary(path: str) -> dict | None:
    """RUN/labels_summary.json (`saex label`: the SAE against its controls), None when there is none."""
    from sae.runs.files import read_report

    return read_report(path, "labels")


def auto_labels(path: str) -> dict:
    """RUN/labels.jsonl by feature (`saex label`), {} when there is none; reread when rewritten."""
    from pathlib import Path

    from sae.runs.files import LABELS_SUMMARY_FILE

    summary = Path(path) / LABELS_SUMMARY_FILE
    return _auto_labels(path, summary.stat().st_mtime) if summary.exists() else {}


@st.cache_resource(show_spinner="loading the model and SAE ...")
def intervener(path: str):
    """The model split at the SAE's hook (sae.lookahead.interventions.Intervener), once per run."""
    from sae.errors import SaexError
    from sae.lookahead.interventions import Intervener, sink_threshold
    from sae.runs.load import check_sae_fits

    sae = load_sae(path)  # the cached loaders: the explorer's pages share one model and SAE
    if not sae.model_spec:  # e.g. a sparsify SAE whose run config names no model
        raise SaexError(f"the SAE in {path} does not record its model",
                        f"set model.spec in {sae.path / 'run.json'} to the model's HF id or folder")
    lm = load_model(sae.model_spec)
    check_sae_fits(sae, lm)
    threshold, source = sink_threshold(sae)  # the harvest's outlier threshold, as the lookahead report uses
    return Intervener(lm, sae, sink_threshold=threshold, sink_threshold_source=source)


def short_auto_label(path: str, feature: int) -> str:
    """The feature's short automatic label (sae.labels.auto.short_label), "" when it has none."""
    from sae.labels.auto import short_label

    rec = auto_labels(path).get(feature)
    return short_label(rec) if rec else ""
