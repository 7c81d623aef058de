"""An SAE's features and labels for a local Neuronpedia: `export_neuronpedia(index, sae, store, out)`.

Two forms under OUT (docs/formats.md, "Annotations"; field names, types and limits are
Neuronpedia's, from the files of github.com/hijohnnylin/neuronpedia named below):

    upload-batch/batch-<n>.json        bodies for POST /api/feature/upload-batch, at most 128
                                       features each (apps/webapp/app/api/feature/upload-batch/
                                       route.tsx, `uploadBatchSchema`)
    <modelId>/<layer>/features/batch-<n>.jsonl.gz      Neuron rows      } the dataset layout of
    <modelId>/<layer>/activations/batch-<n>.jsonl.gz   Activation rows  } `export-data.py`, which
    <modelId>/<layer>/explanations/batch-<n>.jsonl.gz  Explanation rows } is synced to v1/ of the
                                                                          neuronpedia-datasets bucket
    neuronpedia.json                   what was written, and what is absent

The upload carries, per feature: density, the top boosted and suppressed output tokens
(topLogits / bottomLogits), the current label (one explanation, text cut to 512
characters) and the index's examples with their tokens, activations and quantile band.
What it cannot carry is in the rows (columns of utils/neuronpedia-utils/neuronpedia_utils/
export-data.py and db_models/feature.py, activation.py, explanation.py; types of the Neuron,
Activation and Explanation models in apps/webapp/prisma/schema.prisma): the activation
histogram (freq_hist_data_bar_*), decoder-cosine neighbours (topkCosSim*), and the decoder
row as a steering vector (vector, hasVector, hookName, vectorDefaultSteerStrength =
maxActApprox, as convert-saedashboard-to-neuronpedia-export.py sets them). The index has
no logit histogram over the vocabulary, so logits_hist_data_bar_* are empty (and said so
in neuronpedia.json).

Rows are created by Neuronpedia's 'bot' user (apps/webapp/prisma/seed.ts) unless another
creator id is given: an instance's database wants the id of one of its users, so our
authors' names are not carried (the labels' own export keeps them).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, write_json_atomic
from sae.index.reader import Example, Feature, FeatureIndex
from sae.labels.neuronpedia import provenance
from sae.labels.records import Annotation, SAEKey
from sae.labels.store import AnnotationStore
from sae.runs.load import LoadedSAE

# apps/webapp/app/api/feature/upload-batch/route.tsx (uploadBatchSchema); also MAX_FEATURES_PER_BATCH
# in webapp-python-client/neuronpedia/requests/feature_request.py.
UPLOAD_MAX_FEATURES = 128
UPLOAD_MAX_LOGITS = 20  # topLogits / bottomLogits .max(20)
UPLOAD_MAX_TEXT = 512  # explanations[].text .min(1).max(512)
UPLOAD_MAX_TOKENS = 1024  # activations[].tokens / values .min(1).max(1024)
UPLOAD_MAX_INDEX = 10_000_000  # index .integer().min(0).max(10_000_000)
DUMP_BATCH = 1024  # FEATURES_EXPLANATIONS_BATCH_SIZE / ACTIVATIONS_BATCH_SIZE in export-data.py
BOT_USER_ID = "clkht01d40000jv08hvalcvly"  # apps/webapp/prisma/seed.ts: the non-user default creator
UPLOAD_DIR = "upload-batch"
MANIFEST_FILE = "neuronpedia.json"
DATA_SOURCE = "sae-explorer"
_BATCH_FILE = re.compile(r"batch-\d+\.(json|jsonl\.gz)")
ABSENT = {
    "logits_hist_data_bar_heights": "absent: the feature index keeps the top boosted and suppressed tokens "
                                    "(pos_str / neg_str), not a histogram over the vocabulary",
    "logits_hist_data_bar_values": "absent, as logits_hist_data_bar_heights",
    "decoder_weights_dist, neuron_alignment_*, correlated_neurons_*, correlated_features_*": "not computed",
    "embedding (Explanation)": "not computed (Neuronpedia computes it when explanations are uploaded)",
}


@dataclass(frozen=True)
class NeuronpediaExport:
    out: Path
    model_id: str
    layer: str
    upload_files: tuple[Path, ...]
    dump_files: tuple[Path, ...]
    features: int  # in the upload batches
    without_examples: int  # left out of them: upload-batch wants at least one activation a feature
    explanations: int  # labels exported


def _num(x: float) -> float:
    """A float32 value as a short JSON number (7 significant digits)."""
    return float(f"{float(x):.7g}")


def _token(text: str, token: int) -> str:
    """A token's text; Neuronpedia's schema refuses empty strings (string().required())."""
    return text if text != "" else f"<token {token}>"


def _clip(text: str, limit: int = UPLOAD_MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _lower(name: str | None) -> str | None:
    return name.lower() if name else None


def _logits(tokens: list[tuple[int, str, float]]) -> list[tuple[str, float]]:
    return [(_token(text, t), _num(v)) for t, text, v in tokens if t >= 0 and math.isfinite(v)][:UPLOAD_MAX_LOGITS]


def _band_fraction(fires: int, settings: dict, band: int) -> float | None:
    """The share of the sampled firings in `band` (bands are equal-count splits, high to low,
    of min(fires, reservoir) firings: sae/index/tables.py `_bands`)."""
    bands, reservoir = settings.get("bands"), settings.get("reservoir")
    n = min(fires, reservoir or 0)
    if not bands or n <= 0:
        return None
    q, rem = divmod(n, bands)
    return (q + 1 if band < rem else q) / n


def _examples(f: Feature, settings: dict) -> list[tuple[Example, float, float, float | None]]:
    """(example, bin min, bin max, bin share) of the top examples, then of each band. Top
    examples get bin min -1 and bin max the feature's maximum, as SAEDashboard writes them."""
    out = [(e, -1.0, _num(f.max_activation), None) for e in f.top_examples]
    for b in f.bands:
        frac = _band_fraction(f.fires, settings, b.band)
        out += [(e, _num(b.low), _num(b.high), frac) for e in b.examples]
    return out


def _tokens_values(e: Example) -> tuple[list[str], list[float]]:
    tokens = [_token(text, t) for t, text in zip(e.tokens, e.text)][:UPLOAD_MAX_TOKENS]
    return tokens, [_num(v) for v in e.acts][:UPLOAD_MAX_TOKENS]


def upload_feature(f: Feature, label: Annotation | None, settings: dict) -> dict | None:
    """One element of upload-batch's `features` (None for a feature with no example: the
    schema wants at least one activation)."""
    examples = _examples(f, settings)
    if not examples:
        return None
    origin = provenance(label.tags) if label else {}
    acts = []
    for e, low, high, frac in examples:
        tokens, values = _tokens_values(e)
        acts.append({"tokens": tokens, "values": values, "quantileMax": high, "quantileMin": low,
                     "quantileFraction": frac})
    return {
        "index": f.id,
        "density": min(max(_num(f.density), 0.0), 1.0),
        "topLogits": [{"token": t, "value": v} for t, v in _logits(f.boosted)],
        "bottomLogits": [{"token": t, "value": v} for t, v in _logits(f.suppressed)],
        # methodName / modelName must name an ExplanationType / ExplanationModelType of the
        # instance: only an explanation imported from Neuronpedia has them (null = by a person).
        "explanations": [{"text": _clip(label.label), "methodName": _lower(origin.get("type")),
                          "modelName": _lower(origin.get("model"))}] if label else [],
        "activations": acts,
    }


def _source_set(layer: str) -> str:
    """getSourceSetNameFromSource (apps/webapp/lib/utils/source.ts): after the layer number."""
    return layer.split("-", 1)[1].split("__")[0] if "-" in layer else layer


def _row_id(*parts) -> str:
    """A stable cuid-shaped id (25 characters, starting with c), so a re-export is identical."""
    return "c" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24]


def _histogram(f: Feature) -> tuple[list[float], list[float]]:
    """(bar heights, bar values): firing counts per log-spaced bin and the bins' geometric
    centres, from the first to the last non-empty bin."""
    counts, edges = np.asarray(f.hist_counts), np.asarray(f.hist_edges, np.float64)
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return [], []
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    centres = np.sqrt(edges[lo:hi] * edges[lo + 1:hi + 1])
    return [float(c) for c in counts[lo:hi]], [_num(c) for c in centres]


def neuron_row(model_id: str, layer: str, f: Feature, vector: np.ndarray, hook: str | None,
               label: Annotation | None, creator_id: str) -> dict:
    """A Neuron row (the columns export-data.py `export_features` writes)."""
    heights, values = _histogram(f)
    top, bottom = _logits(f.boosted), _logits(f.suppressed)
    near = [(n, c) for n, c in f.neighbours if n >= 0 and math.isfinite(c)]
    max_act = _num(f.max_activation) if math.isfinite(f.max_activation) else 0.0  # NaN: never fired
    return {
        "modelId": model_id, "layer": layer, "index": str(f.id), "maxActApprox": max_act, "creatorId": creator_id,
        "frac_nonzero": _num(f.density) if math.isfinite(f.density) else 0.0,
        "freq_hist_data_bar_heights": heights, "freq_hist_data_bar_values": values,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "neuron_alignment_indices": [], "neuron_alignment_l1": [], "neuron_alignment_values": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "decoder_weights_dist": [],
        "neg_str": [t for t, _ in bottom], "neg_values": [v for _, v in bottom],
        "pos_str": [t for t, _ in top], "pos_values": [v for _, v in top],
        "sourceSetName": _source_set(layer),
        "topkCosSimIndices": [n for n, _ in near], "topkCosSimValues": [_num(c) for _, c in near],
        "vector": [_num(x) for x in vector], "vectorLabel": label.label if label else None, "hookName": hook,
        "vectorDefaultSteerStrength": max_act if max_act > 0 else 10.0, "hasVector": True,
    }


def activation_rows(model_id: str, layer: str, f: Feature, settings: dict, creator_id: str) -> list[dict]:
    """Activation rows (the columns export-data.py `export_activations` writes)."""
    rows = []
    for n, (e, low, high, frac) in enumerate(_examples(f, settings)):
        tokens, values = _tokens_values(e)
        top = max(values)
        rows.append({"id": _row_id("activation", model_id, layer, f.id, n), "modelId": model_id, "layer": layer,
                     "index": str(f.id), "creatorId": creator_id, "dataSource": DATA_SOURCE, "tokens": tokens,
                     "maxValue": top, "minValue": min(values), "values": values,
                     "maxValueTokenIndex": values.index(top), "dfaValues": [], "dfaMaxValue": None,
                     "dfaTargetIndex": None, "binContains": -1.0 if frac is None else frac,
                     "binMin": low, "binMax": high})
    return rows


def explanation_row(model_id: str, layer: str, label: Annotation, creator_id: str) -> dict:
    """An Explanation row (export-data.py `export_explanations` columns, with notes and times)."""
    origin = provenance(label.tags)
    return {"id": _row_id("explanation", model_id, layer, label.feature), "modelId": model_id, "layer": layer,
            "index": str(label.feature), "authorId": creator_id, "description": label.label,
            "typeName": origin.get("type"), "explanationModelName": origin.get("model"),
            "notes": label.description or None, "createdAt": label.created_at, "updatedAt": label.updated_at}


# --------------------------------------------------------------------------- files


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=5, mtime=0) as f:
        f.write(data)  # mtime=0: the same rows give the same bytes


def _remove_stale(folder: Path, keep: list[Path]) -> None:
    """Batch files of an earlier export that this one did not write again."""
    if folder.is_dir():
        for p in folder.iterdir():
            if _BATCH_FILE.fullmatch(p.name) and p not in keep:
                p.unlink()


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def export_neuronpedia(index: FeatureIndex, sae: LoadedSAE, store: AnnotationStore, out: str | Path, *,
                       key: SAEKey | None = None, features: Iterable[int] | None = None,
                       creator_id: str = BOT_USER_ID) -> NeuronpediaExport:
    """Write the upload-batch bodies and the dataset rows of `features` (default: all) of
    the SAE, with the live labels of `key` (default: the SAE's), under `out`."""
    key = key or SAEKey.from_sae(sae)
    built_for = (index.manifest.get("sae") or {}).get("content_hash")
    if built_for != sae.content_hash or index.d_sae != sae.d_sae:
        raise SaexError(f"the feature index {index.path} was built for another SAE than {sae.path}",
                        f"rebuild it: saex index {sae.path} --force yes")
    ids = sorted(set(range(index.d_sae) if features is None else (int(i) for i in features)))
    if ids and not 0 <= ids[0] <= ids[-1] < index.d_sae:
        raise SaexError(f"features must be in 0..{index.d_sae - 1}, got {ids[0] if ids[0] < 0 else ids[-1]}",
                        "give feature ids of this SAE")
    if ids and ids[-1] > UPLOAD_MAX_INDEX:
        raise SaexError(f"feature {ids[-1]} is beyond Neuronpedia's largest index ({UPLOAD_MAX_INDEX:,})",
                        "export fewer features")
    out = ensure_writable_dir(Path(out), "Neuronpedia export")
    model_id, layer = key.neuronpedia_model_id, key.neuronpedia_layer
    labels = {a.feature: a for a in store.list_labels(key)}
    settings = index.manifest.get("settings") or {}
    w_dec = sae.sae.W_dec.detach().float().cpu().numpy()

    uploads, neurons, activations, explanations = [], [], [], []
    without = 0
    for i in ids:
        f = index.feature(i)
        label = labels.get(i)
        item = upload_feature(f, label, settings)
        if item is None:
            without += 1
        else:
            uploads.append(item)
        neurons.append(neuron_row(model_id, layer, f, w_dec[i], key.hook, label, creator_id))
        activations.append(activation_rows(model_id, layer, f, settings, creator_id))
        if label is not None:
            explanations.append(explanation_row(model_id, layer, label, creator_id))

    upload_dir = ensure_writable_dir(out / UPLOAD_DIR, "Neuronpedia export")
    upload_files = []
    for n, chunk in enumerate(_chunks(uploads, UPLOAD_MAX_FEATURES)):
        path = upload_dir / f"batch-{n}.json"
        write_json_atomic(path, {"modelId": model_id, "source": layer, "features": chunk})
        upload_files.append(path)
    _remove_stale(upload_dir, upload_files)

    dump_files = []
    base = out / model_id / layer
    feature_chunks = _chunks(list(range(len(ids))), DUMP_BATCH)
    for name, batches in (
            ("features", [[neurons[j] for j in c] for c in feature_chunks]),
            ("activations", [[r for j in c for r in activations[j]] for c in feature_chunks]),
            ("explanations", _chunks(explanations, DUMP_BATCH))):
        folder = ensure_writable_dir(base / name, "Neuronpedia export")
        written = []
        for n, rows in enumerate(batches):
            if rows:
                _write_jsonl_gz(folder / f"batch-{n}.jsonl.gz", rows)
                written.append(folder / f"batch-{n}.jsonl.gz")
        _remove_stale(folder, written)
        dump_files += written

    result = NeuronpediaExport(out, model_id, layer, tuple(upload_files), tuple(dump_files), len(uploads), without,
                               len(explanations))
    write_json_atomic(out / MANIFEST_FILE, {
        "format": 1, "modelId": model_id, "layer": layer, "sourceSetName": _source_set(layer),
        "sae": {"model": key.model, "hook": key.hook, "sae_hash": key.sae_hash, "path": str(sae.path)},
        "upload_batch": {"endpoint": "POST /api/feature/upload-batch", "files": [str(p.relative_to(out))
                                                                                 for p in upload_files],
                         "features": len(uploads), "features_without_examples_left_out": without},
        "dump": {"files": [str(p.relative_to(out)) for p in dump_files], "features": len(ids),
                 "explanations": len(explanations), "creatorId": creator_id},
        "absent": ABSENT,
    })
    return result
