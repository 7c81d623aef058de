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
    "LookaheadConfig": "sae.lookahead.experiment",
    "run_lookahead": "sae.lookahead.experiment",
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
