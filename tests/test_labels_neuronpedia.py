"""Interop with Neuronpedia: our export round-trips; Neuronpedia's explanation batches
(gzipped JSON Lines, one explanation a line, as utils/neuronpedia-utils/.../export-data.py
writes them) import onto our SAE through a source mapping, several per feature, with their
provenance; and the export for a local Neuronpedia passes the upload-batch schema, checked
here by a validator written from Neuronpedia's own schema, not from our exporter."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch

from sae.errors import SaexError
from sae.index.build import IndexConfig, build_index
from sae.index.reader import FeatureIndex
from sae.labels.neuronpedia_export import export_neuronpedia
from sae.labels.records import ImportReport, SAEKey
from sae.labels.store import AnnotationStore
from sae.runs.load import load_sae
from saex.cli import main
from tests.helpers import save_topk, write_store

HOOK = "blocks.0.hook_resid_post"  # the hook write_store records
D = 32  # d_model of the tiny model
W, T = 12, 16
D_SAE = 300  # more than 2 x 128 features, so the upload needs several files
SOURCE = "pythia-70m-deduped/1-res-sm"


def _save_topk(path, d_sae=D_SAE, **kw):
    return save_topk(path, d_in=D, d_sae=d_sae, hook_name=HOOK, model_name="tiny-llama", **kw)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_lm):
    """(run, loaded SAE, its index): a random TopK SAE indexed on a small store."""
    root = tmp_path_factory.mktemp("np")
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(W, T, D, generator=g)
    tokens = np.random.default_rng(2).integers(3, 40, size=(W, T)).astype(np.int32)
    store = write_store(root / "acts-heldout", acts, shard_windows=4, tokens=tokens)
    run = _save_topk(root / "run")
    build_index(IndexConfig(run=str(run), store=str(store), chunk_tokens=2 * T, top_k=5, reservoir=8, bands=3,
                            per_band=2, min_pair_count=1, profile_min_count=2, top_tokens=6, progress=False),
                lm=tiny_lm)
    return run, load_sae(run), FeatureIndex(run)


@pytest.fixture
def db(tmp_path, monkeypatch):
    """The annotation store the CLI uses ($SAEX_ANNOTATIONS)."""
    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "ann.sqlite"))
    return AnnotationStore(tmp_path / "ann.sqlite")


def _key(indexed) -> SAEKey:
    return SAEKey.from_sae(indexed[1])


# --------------------------------------------------------------------------- Neuronpedia's records


def explanation(index, description, layer="1-res-sm", **kw):
    """An explanation line as export-data.py `export_explanations` writes it (its columns)."""
    return {"id": f"clx{index}{len(description)}", "modelId": "pythia-70m-deduped", "layer": layer,
            "index": str(index), "authorId": "clkht01d40000jv08hvalcvly", "description": description,
            "embedding": None, "typeName": "oai_token-act-pair", "explanationModelName": "gpt-4o-mini",
            "umap_x": None, "umap_y": None, "umap_cluster": None, "umap_log_feature_sparsity": None} | kw


def write_batch(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    return path


NP_RECORDS = [
    # feature 5: three explanations; the scored one is current whatever the order
    explanation(5, "plural nouns", createdAt="2024-03-01T10:00:00.000"),
    explanation(5, "words ending in s", scoreV1=0.61, createdAt="2024-01-01T10:00:00.000",
                explanationModelName="claude-3-5-haiku-20241022"),
    explanation(5, "nouns", createdAt="2024-02-01T10:00:00.000", authorId="someone"),
    # feature 7: two without scores; the newest is current
    explanation(7, "old idea", createdAt="2024-01-01T00:00:00.000"),
    explanation(7, "the word ' the'", createdAt="2024-05-01T00:00:00.000", notes="checked by hand",
                typeName="np_max-act-logits"),
    # other sources of the same model: left out, counted
    explanation(5, "another layer's feature 5", layer="2-res-sm"),
    explanation(9, "another layer's feature 9", layer="0-att-kk"),
]


def test_neuronpedia_batches_import_through_a_source_mapping(indexed, db, tmp_path, capsys):
    run, sae, index = indexed
    key = _key(indexed)
    folder = tmp_path / "v1" / "pythia-70m-deduped" / "1-res-sm"
    write_batch(folder / "explanations" / "batch-0.jsonl.gz", NP_RECORDS[:3])
    write_batch(folder / "explanations" / "batch-1.jsonl.gz", NP_RECORDS[3:])

    # Their layer is not ours: without a source nothing is imported, and the error says what to do.
    with pytest.raises(SaexError, match="not this SAE .* pass its source"):
        db.import_file(folder, key, author="imp")
    assert db.list_labels(key) == []

    assert main(["labels", "import", str(run), str(folder), "--source", SOURCE, "--author", "imp"]) == 0
    assert "2 added, 0 replaced, 0 kept or unchanged; 2 records of other sources left out" in capsys.readouterr().out

    five, seven = db.get(key, 5), db.get(key, 7)
    assert (five.label, five.author, five.confidence, five.claim) == ("words ending in s", "imp", None, None)
    assert five.tags == ("np:source=pythia-70m-deduped/1-res-sm", "np:type=oai_token-act-pair",
                         "np:model=claude-3-5-haiku-20241022", "np:author=clkht01d40000jv08hvalcvly")
    # The others are earlier versions, oldest first, each an "import".
    assert [(e.version, e.action, e.label, e.author) for e in db.history(key, 5)] == [
        (1, "import", "nouns", "imp"), (2, "import", "plural nouns", "imp"), (3, "import", "words ending in s", "imp")]
    assert "np:author=someone" in db.history(key, 5)[0].tags
    assert (seven.label, seven.description, seven.version) == ("the word ' the'", "checked by hand", 2)
    assert "np:type=np_max-act-logits" in seven.tags
    assert [e.label for e in db.history(key, 7)] == ["old idea", "the word ' the'"]
    assert db.get(key, 9) is None

    # Provenance survives our export (tags, and back as typeName / explanationModelName) and its re-import.
    exported = {r["index"]: r for r in db.export_json(key)}
    assert (exported["5"]["typeName"], exported["5"]["explanationModelName"]) == \
        ("oai_token-act-pair", "claude-3-5-haiku-20241022")
    assert exported["5"]["saex"]["tags"] == list(five.tags)
    fresh = AnnotationStore(tmp_path / "fresh.sqlite")
    fresh.import_json(list(exported.values()), key, author="x")
    assert fresh.get(key, 5) == five and fresh.history(key, 5) == db.history(key, 5)

    # Importing the same batches again changes nothing; a source with no records here imports nothing.
    assert db.import_file(folder, key, author="imp", on_conflict="overwrite", source=SOURCE) == \
        ImportReport(0, 0, 2, 2)
    assert db.import_file(folder, key, author="imp", source="gpt2-small/0-res-jb") == ImportReport(0, 0, 0, 7)
    assert len(db.history(key, 5)) == 3


def test_one_batch_file_a_json_list_and_bad_input(indexed, db, tmp_path):
    key = _key(indexed)
    batch = write_batch(tmp_path / "batch-3.jsonl.gz", NP_RECORDS)
    assert db.import_file(batch, key, author="imp", source=SOURCE) == ImportReport(2, 0, 0, 2)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([explanation(11, "a JSON list"), explanation(11, "later", scoreV1=0.1)]))
    assert db.import_file(listed, key, author="imp", source=SOURCE.upper()) == ImportReport(1, 0, 0, 0)
    assert db.get(key, 11).label == "later"
    # Records for the source are checked as strictly as ours: one bad one and nothing is imported.
    bad = write_batch(tmp_path / "bad" / "batch-0.jsonl.gz", [explanation(12, "fine"), explanation(13, "")])
    with pytest.raises(SaexError, match="record 1: the label must be a non-empty string"):
        db.import_file(bad.parent, key, author="imp", source=SOURCE)
    assert db.get(key, 12) is None
    (tmp_path / "broken.jsonl").write_text('{"index": "1"}\n{not json\n')
    with pytest.raises(SaexError, match="line 2 of the annotations .* is not valid JSON"):
        db.import_file(tmp_path / "broken.jsonl", key, author="imp", source=SOURCE)
    with pytest.raises(SaexError, match="a source is Neuronpedia's MODEL/LAYER"):
        db.import_file(batch, key, author="imp", source="just-a-layer")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaexError, match="no explanation batches"):
        db.import_file(tmp_path / "empty", key, author="imp", source=SOURCE)


def test_our_export_round_trips_through_the_cli(indexed, db, tmp_path, monkeypatch, capsys):
    run, sae, index = indexed
    key = _key(indexed)
    db.set(key, 3, label="first", author="ana", tags=["t"], confidence=0.4,
           claim={"kind": "fires_before", "offset": 1, "tokens": [7]})
    db.set(key, 3, label="second", author="ben", description="more")
    db.set(key, 8, label="gone", author="ana")
    db.delete(key, 8, author="ana")
    db.set(key, 8, label="back", author="cy")
    assert main(["labels", "export", str(run), "--out", str(tmp_path / "out")]) == 0
    assert "2 labels" in capsys.readouterr().out
    exported = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert exported == db.export_json(key)

    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "other.sqlite"))
    assert main(["labels", "import", str(run), str(tmp_path / "out" / "annotations.json"), "--author", "imp"]) == 0
    other = AnnotationStore(tmp_path / "other.sqlite")
    assert other.export_json(key) == exported
    assert other.history(key, 8) == db.history(key, 8)
    # Gzipped, as JSON Lines, it imports the same.
    lines = gzip.compress("".join(json.dumps(r) + "\n" for r in exported).encode())
    third = AnnotationStore(tmp_path / "third.sqlite")
    assert third.import_json(lines, key, author="imp") == ImportReport(2, 0, 0)
    assert third.export_json(key) == exported
    assert main(["labels", "import", str(run), str(tmp_path / "missing.json")]) == 2


# --------------------------------------------------------------------------- the upload-batch validator

# Written from apps/webapp/app/api/feature/upload-batch/route.tsx (`uploadBatchSchema`, yup) and the
# checks after it: tokens and values of an activation of equal length, indexes unique.
FEATURE_KEYS = {"index", "density", "topLogits", "bottomLogits", "explanations", "activations"}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _text(x) -> bool:  # yup string().required() refuses "" as well as null
    return isinstance(x, str) and x != ""


def validate_upload_batch(body) -> list[str]:
    bad = []

    def need(ok, what):
        if not ok:
            bad.append(what)

    need(isinstance(body, dict) and set(body) >= {"modelId", "source", "features"}, "top-level keys")
    need(_text(body.get("modelId")) and body["modelId"] == body["modelId"].lower(), "modelId")
    need(_text(body.get("source")) and body["source"] == body["source"].lower(), "source")
    features = body.get("features")
    need(isinstance(features, list) and 1 <= len(features) <= 128, "1..128 features")
    indexes = [f.get("index") for f in features]
    need(len(set(indexes)) == len(indexes), "unique indexes")
    for f in features:
        at = f"feature {f.get('index')}"
        need(set(f) <= FEATURE_KEYS, f"{at}: unknown keys {set(f) - FEATURE_KEYS}")
        need(isinstance(f["index"], int) and not isinstance(f["index"], bool) and 0 <= f["index"] <= 10_000_000,
             f"{at}: index")
        need("density" not in f or f["density"] is None or (_number(f["density"]) and 0 <= f["density"] <= 1),
             f"{at}: density")
        for name in ("topLogits", "bottomLogits"):
            logits = f.get(name)
            need(logits is None or (isinstance(logits, list) and len(logits) <= 20 and all(
                isinstance(x, dict) and _text(x.get("token")) and _number(x.get("value")) for x in logits)),
                f"{at}: {name}")
        for e in f.get("explanations") or []:
            need(isinstance(e, dict) and _text(e.get("text")) and len(e["text"]) <= 512, f"{at}: explanation text")
            for name in ("methodName", "modelName"):
                v = e.get(name)
                need(v is None or (isinstance(v, str) and v == v.lower()), f"{at}: explanation {name}")
        acts = f.get("activations")
        need(isinstance(acts, list) and len(acts) >= 1, f"{at}: at least one activation")
        for a in acts or []:
            tokens, values = a.get("tokens"), a.get("values")
            need(isinstance(tokens, list) and 1 <= len(tokens) <= 1024 and all(_text(t) for t in tokens),
                 f"{at}: activation tokens")
            need(isinstance(values, list) and 1 <= len(values) <= 1024 and all(_number(v) for v in values),
                 f"{at}: activation values")
            need(isinstance(tokens, list) and isinstance(values, list) and len(tokens) == len(values),
                 f"{at}: tokens and values of one length")
            for name in ("quantileMax", "quantileMin"):
                v = a.get(name)
                need(v is None or (_number(v) and v <= 99999999), f"{at}: {name}")
            v = a.get("quantileFraction")
            need(v is None or (_number(v) and 0 <= v <= 1), f"{at}: quantileFraction")
    return bad


def _no_nan(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


# Columns of the rows in Neuronpedia's dataset batches: export-data.py export_features / _activations /
# _explanations (what a local instance's admin import reads back).
NEURON_COLUMNS = {"modelId", "layer", "index", "maxActApprox", "creatorId", "frac_nonzero",
                  "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
                  "logits_hist_data_bar_values", "neuron_alignment_indices", "neuron_alignment_l1",
                  "neuron_alignment_values", "correlated_neurons_indices", "correlated_neurons_l1",
                  "correlated_neurons_pearson", "decoder_weights_dist", "neg_str", "neg_values", "pos_str",
                  "pos_values", "sourceSetName", "topkCosSimIndices", "topkCosSimValues", "vector", "vectorLabel",
                  "hookName", "vectorDefaultSteerStrength", "hasVector"}
ACTIVATION_COLUMNS = {"id", "modelId", "layer", "index", "creatorId", "dataSource", "tokens", "maxValue", "minValue",
                      "values", "maxValueTokenIndex", "dfaValues", "dfaMaxValue", "dfaTargetIndex", "binContains",
                      "binMin", "binMax"}
EXPLANATION_COLUMNS = {"id", "modelId", "layer", "index", "authorId", "description", "typeName",
                       "explanationModelName"}


def _rows(path) -> list[dict]:
    return [_no_nan(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_export_for_a_local_neuronpedia(indexed, db, tmp_path, capsys):
    run, sae, index = indexed
    key = _key(indexed)
    fired = [i for i in range(index.d_sae) if index.feature(i).top_examples]
    long_label = "x" * 600
    db.set(key, fired[0], label=long_label, author="ana", description="long")
    db.set(key, fired[1], label="plain label", author="ana")
    write_batch(tmp_path / "np" / "batch-0.jsonl.gz", [explanation(fired[2], "imported one")])
    db.import_file(tmp_path / "np", key, author="imp", source=SOURCE)

    out = tmp_path / "export"
    assert main(["labels", "export", str(run), "--out", str(out), "--format", "neuronpedia"]) == 0
    assert "upload-batch files" in capsys.readouterr().out
    uploads = sorted((out / "upload-batch").glob("batch-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    bodies = [_no_nan(p.read_text()) for p in uploads]
    for p, body in zip(uploads, bodies):
        assert validate_upload_batch(body) == [], p
        assert (body["modelId"], body["source"]) == (key.neuronpedia_model_id, key.neuronpedia_layer)
    features = {f["index"]: f for body in bodies for f in body["features"]}
    assert len(uploads) == math.ceil(len(fired) / 128) >= 2 and sorted(features) == fired
    assert [len(b["features"]) for b in bodies[:-1]] == [128] * (len(bodies) - 1)

    f = index.feature(fired[0])
    up = features[fired[0]]
    assert up["explanations"] == [{"text": long_label[:511] + "…", "methodName": None, "modelName": None}]
    assert up["density"] == pytest.approx(f.density, rel=1e-6)
    assert [x["token"] for x in up["topLogits"]] == [t or f"<token {i}>" for i, t, _ in f.boosted]
    assert up["activations"][0]["tokens"] == [t or f"<token {i}>" for i, t in zip(f.top_examples[0].tokens,
                                                                                 f.top_examples[0].text)]
    assert up["activations"][0]["values"] == pytest.approx(f.top_examples[0].acts, rel=1e-6)
    banded = [a for a in up["activations"] if a["quantileFraction"] is not None]
    assert banded and all(a["quantileMin"] <= max(a["values"]) + 1e-6 for a in banded)
    assert features[fired[2]]["explanations"] == [{"text": "imported one", "methodName": "oai_token-act-pair",
                                                   "modelName": "gpt-4o-mini"}]
    assert features[fired[3]]["explanations"] == []

    base = out / key.neuronpedia_model_id / key.neuronpedia_layer
    neurons = [r for p in sorted((base / "features").glob("batch-*.jsonl.gz")) for r in _rows(p)]
    assert [r["index"] for r in neurons] == [str(i) for i in range(index.d_sae)]  # dead features too
    assert all(set(r) >= NEURON_COLUMNS for r in neurons)
    w_dec = sae.sae.W_dec.detach().numpy()
    for i in (fired[0], fired[-1]):
        r, f = neurons[i], index.feature(i)
        assert r["vector"] == pytest.approx(w_dec[i].tolist(), rel=1e-5) and r["hasVector"] is True
        assert r["hookName"] == HOOK and r["vectorDefaultSteerStrength"] == pytest.approx(f.max_activation, rel=1e-6)
        assert r["topkCosSimIndices"] == [n for n, _ in f.neighbours]
        assert sum(r["freq_hist_data_bar_heights"]) == int(np.asarray(f.hist_counts).sum()) > 0
        assert r["frac_nonzero"] == pytest.approx(f.density, rel=1e-6)
        assert r["logits_hist_data_bar_heights"] == []
    acts = [r for p in (base / "activations").glob("*.jsonl.gz") for r in _rows(p)]
    assert acts and all(set(r) == ACTIVATION_COLUMNS and len(r["tokens"]) == len(r["values"]) for r in acts)
    expl = {r["index"]: r for p in (base / "explanations").glob("*.jsonl.gz") for r in _rows(p)}
    assert sorted(expl) == sorted(str(i) for i in fired[:3]) and all(set(r) >= EXPLANATION_COLUMNS
                                                                     for r in expl.values())
    assert expl[str(fired[0])]["description"] == long_label  # the row has no length limit
    assert expl[str(fired[2])]["typeName"] == "oai_token-act-pair"
    manifest = json.loads((out / "neuronpedia.json").read_text())
    assert manifest["upload_batch"]["features"] + manifest["upload_batch"]["features_without_examples_left_out"] \
        == index.d_sae
    assert "absent" in manifest["absent"]["logits_hist_data_bar_heights"]

    # A second export of fewer features leaves no stale batch behind.
    r = export_neuronpedia(index, sae, db, out, features=fired[:5])
    assert [p.name for p in r.upload_files] == ["batch-0.json"]
    assert sorted(p.name for p in (out / "upload-batch").iterdir()) == ["batch-0.json"]
    with pytest.raises(SaexError, match="features must be in"):
        export_neuronpedia(index, sae, db, out, features=[index.d_sae])
