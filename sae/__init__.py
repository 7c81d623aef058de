"""The library behind sae-explorer, one sub-package per pipeline stage:

    sae.data       corpus -> token windows; model loading and hook names; forward readers;
                   harvest; the activation store (reader apart from writer)
    sae.runs       an SAE run folder: file names, loading, which store belongs to it, evaluation
    sae.index      the feature index: build, streaming pass, tables, encoder, reader, search
    sae.lookahead  a/an prompt sets, interventions, statistics, the experiment, its answer, plots,
                   the word finder (contexts, finder)
    sae.labels     feature labels: records, SQLite store, Neuronpedia codec, testable claims, automatic labels

The names below are the public API (docs/api.md); they are imported on first use, so
`import sae` stays cheap. No Streamlit and no argparse in here: `saex` (the command line),
`training/` and `explorer/` drive this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # editors and type checkers resolve the lazy names below; nothing is imported at run time
    from sae.data.harvest import HarvestConfig, harvest  # noqa: F401
    from sae.data.models import load_model  # noqa: F401
    from sae.data.store import ActivationStore, write_store  # noqa: F401
    from sae.errors import SaexError  # noqa: F401
    from sae.index import search  # noqa: F401
    from sae.index.build import build_index  # noqa: F401
    from sae.index.config import IndexConfig  # noqa: F401
    from sae.index.reader import FeatureIndex  # noqa: F401
    from sae.labels.auto import LabelConfig, label_features  # noqa: F401
    from sae.labels.claims import score_claim  # noqa: F401
    from sae.labels.records import SAEKey  # noqa: F401
    from sae.labels.store import AnnotationStore  # noqa: F401
    from sae.lookahead.article import LookaheadConfig, run_lookahead  # noqa: F401
    from sae.lookahead.depth import DepthConfig, run_depth  # noqa: F401
    from sae.lookahead.finder import FindConfig, find_word  # noqa: F401
    from sae.lookahead.interventions import Edit, Intervener  # noqa: F401
    from sae.lookahead.organism import OrganismConfig, build_organism  # noqa: F401
    from sae.lookahead.prompt_lab import next_token, read_prompt  # noqa: F401
    from sae.options import ModelOptions  # noqa: F401
    from sae.report import Answer, Report  # noqa: F401
    from sae.runs.evaluate import EvalConfig, evaluate, run_eval, write_eval  # noqa: F401
    from sae.runs.files import is_finished, read_report  # noqa: F401
    from sae.runs.load import LoadedSAE, load_model_and_sae, load_sae  # noqa: F401

_EXPORTS = {
    "SaexError": "sae.errors",
    "load_model": "sae.data.models",
    "HarvestConfig": "sae.data.harvest",
    "harvest": "sae.data.harvest",
    "ActivationStore": "sae.data.store",
    "write_store": "sae.data.store",
    "LoadedSAE": "sae.runs.load",
    "load_sae": "sae.runs.load",
    "load_model_and_sae": "sae.runs.load",
    "read_report": "sae.runs.files",
    "Report": "sae.report",
    "Answer": "sae.report",
    "ModelOptions": "sae.options",
    "is_finished": "sae.runs.files",
    "EvalConfig": "sae.runs.evaluate",
    "evaluate": "sae.runs.evaluate",
    "write_eval": "sae.runs.evaluate",
    "run_eval": "sae.runs.evaluate",
    "IndexConfig": "sae.index.config",
    "build_index": "sae.index.build",
    "FeatureIndex": "sae.index.reader",
    "search": "sae.index.search",
    "LookaheadConfig": "sae.lookahead.article",
    "run_lookahead": "sae.lookahead.article",
    "DepthConfig": "sae.lookahead.depth",
    "run_depth": "sae.lookahead.depth",
    "OrganismConfig": "sae.lookahead.organism",
    "build_organism": "sae.lookahead.organism",
    "FindConfig": "sae.lookahead.finder",
    "find_word": "sae.lookahead.finder",
    "Intervener": "sae.lookahead.interventions",
    "Edit": "sae.lookahead.interventions",
    "read_prompt": "sae.lookahead.prompt_lab",
    "next_token": "sae.lookahead.prompt_lab",
    "AnnotationStore": "sae.labels.store",
    "SAEKey": "sae.labels.records",
    "score_claim": "sae.labels.claims",
    "LabelConfig": "sae.labels.auto",
    "label_features": "sae.labels.auto",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sae' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if name == "search" else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
