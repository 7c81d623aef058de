"""Feature annotations: persistence and history, isolation between SAEs, search, lossless
export/import with all-or-nothing validation, concurrent writers, and claim scoring
checked against a brute-force count."""

import json
import multiprocessing
import random
import sqlite3
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sae.errors import SaexError
from sae.labels.claims import score_claim
from sae.labels.records import ImportReport, SAEKey, validate_claim
from sae.labels.store import AnnotationStore

KEY = SAEKey("smollm2-135m", "blocks.15.hook_resid_post", "ab" * 32)
OTHER_HASH = SAEKey("smollm2-135m", "blocks.15.hook_resid_post", "cd" * 32)
CLAIM = {"kind": "fires_before", "offset": 1, "tokens": [7, 9]}


@pytest.fixture
def store(tmp_path):
    return AnnotationStore(tmp_path / "ann.sqlite")


def dump(store) -> list[str]:
    """The whole database as SQL text: equal dumps mean nothing changed."""
    con = sqlite3.connect(store.path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def populate(store, key=KEY):
    """Labels with every kind of field, a deleted one and one deleted then set again."""
    store.set(key, 3, label="an before vowel nouns", author="ana", description="fires on ' an'",
              tags=["article", "lookahead"], confidence=0.8, claim=CLAIM)
    store.set(key, 3, label="' an' before 'astronomer'", author="ben", description="narrower",
              tags=["lookahead"], confidence=0.6, claim={"kind": "fires_before", "offset": 1, "tokens": [9]})
    store.set(key, 10, label='<script>alert("x")</script> & <b>bold</b>', author="ana",
              description="<i>HTML</i> stays as written; ünïcödé ✓")
    store.set(key, 11, label="gone", author="ana")
    store.delete(key, 11, author="ben")
    store.set(key, 12, label="first", author="ana")
    store.delete(key, 12, author="ana")
    store.set(key, 12, label="back again", author="ben", tags=["revived"])


# --------------------------------------------------------------------------- the store


def test_set_get_history_round_trip(store):
    assert store.get(KEY, 3) is None and store.history(KEY, 3) == []
    assert store.set(KEY, 3, label="an", author="ana", description="d1", tags=["t1", "t2", "t1"],
                     confidence=0.5, claim=CLAIM) == 1
    first = store.get(KEY, 3)
    assert store.set(KEY, 3, label="an (narrow)", author="ben") == 2
    now = store.get(KEY, 3)
    assert (now.version, now.label, now.description, now.tags, now.confidence, now.author, now.claim) == \
        (2, "an (narrow)", "", (), None, "ben", None)
    assert now.created_at == first.created_at < now.updated_at  # created once, updated by the edit

    assert store.delete(KEY, 3, author="cy") == 3
    assert store.get(KEY, 3) is None
    assert store.set(KEY, 3, label="revived", author="ana") == 4
    h = store.history(KEY, 3)
    assert [(e.version, e.action, e.label, e.author) for e in h] == [
        (1, "set", "an", "ana"), (2, "set", "an (narrow)", "ben"), (3, "delete", "an (narrow)", "cy"),
        (4, "set", "revived", "ana")]
    assert (h[0].description, h[0].tags, h[0].confidence, h[0].claim) == ("d1", ("t1", "t2"), 0.5, CLAIM)
    assert [e.at for e in h] == sorted(e.at for e in h)
    assert store.get(KEY, 3).created_at == h[3].at  # a label set after a delete is new


def test_survives_reopening_with_wal_and_versioned_schema(store, tmp_path):
    store.set(KEY, 1, label="x", author="ana")
    again = AnnotationStore(tmp_path / "ann.sqlite")
    assert again.get(KEY, 1).label == "x"
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    con.close()


def test_default_location_and_env_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAEX_ANNOTATIONS", raising=False)
    assert AnnotationStore().path.resolve() == (tmp_path / "checkpoints" / "annotations.sqlite").resolve()
    assert (tmp_path / "checkpoints" / "annotations.sqlite").is_file()
    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "elsewhere" / "a.sqlite"))
    AnnotationStore().set(KEY, 0, label="x", author="ana")
    assert AnnotationStore(tmp_path / "elsewhere" / "a.sqlite").get(KEY, 0).label == "x"


def test_label_never_visible_under_another_sae(store):
    populate(store)
    for other in (OTHER_HASH, SAEKey("smollm2-135m", "blocks.14.hook_resid_post", KEY.sae_hash),
                  SAEKey("smollm2-360m", KEY.hook, KEY.sae_hash)):
        assert store.get(other, 3) is None and store.history(other, 3) == []
        assert store.list_labels(other) == [] and store.search_labels(other, "an") == []
        assert store.export_json(other) == []
    store.set(OTHER_HASH, 3, label="unrelated", author="ana")
    assert store.get(KEY, 3).label == "' an' before 'astronomer'"
    assert store.get(OTHER_HASH, 3).version == 1  # its own history, not a continuation


def test_list_filter_and_search(store):
    populate(store)
    assert [a.feature for a in store.list_labels(KEY)] == [3, 10, 12]  # 11 is deleted
    assert [a.feature for a in store.list_labels(KEY, tag="lookahead")] == [3]
    assert [a.feature for a in store.list_labels(KEY, tag="LOOKAHEAD")] == [3]
    assert [a.feature for a in store.list_labels(KEY, tag="article")] == []  # only in an old version
    assert [a.feature for a in store.list_labels(KEY, filter_text="ASTRONOMER")] == [3]
    assert [a.feature for a in store.list_labels(KEY, filter_text="revived")] == [12]  # tags are searched
    assert store.search_labels(KEY, "html written") == [10]  # every word, anywhere in label or description
    assert store.search_labels(KEY, "html astronomer") == []
    assert store.search_labels(KEY, "gone") == []  # deleted labels are not found
    assert store.search_labels(KEY, "") == [3, 10, 12]


def test_html_is_stored_verbatim(store):
    # Escaping is the renderer's job; the store must give back exactly what was written.
    label = '<img src=x onerror="alert(1)"> & &amp; </td>'
    store.set(KEY, 5, label=label, author="<b>ana</b>", description="  <p>kept with its spaces</p>\n",
              tags=["<i>t</i>"])
    a = store.get(KEY, 5)
    assert (a.label, a.author, a.description, a.tags) == \
        (label, "<b>ana</b>", "  <p>kept with its spaces</p>\n", ("<i>t</i>",))
    raw = sqlite3.connect(store.path).execute("SELECT label FROM labels").fetchone()[0]
    assert raw == label
    assert store.export_json(KEY)[0]["description"] == label


def test_stale_edit_is_refused(store):
    store.set(KEY, 2, label="a", author="ana", expected_version=0)
    store.set(KEY, 2, label="b", author="ben", expected_version=1)
    with pytest.raises(SaexError, match="changed by someone else"):
        store.set(KEY, 2, label="c", author="ana", expected_version=1)
    with pytest.raises(SaexError, match="changed by someone else"):
        store.delete(KEY, 2, author="ana", expected_version=1)
    assert [e.label for e in store.history(KEY, 2)] == ["a", "b"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(label="   "), "label must be a non-empty string"),
    (dict(label=None), "label must be a non-empty string"),
    (dict(author=""), "author must be a non-empty string"),
    (dict(confidence=1.5), "confidence must be a number between 0 and 1"),
    (dict(confidence="high"), "confidence must be a number between 0 and 1"),
    (dict(confidence=float("nan")), "confidence must be a number between 0 and 1"),
    (dict(tags="lookahead"), "tags must be a list"),
    (dict(tags=["ok", 3]), "a tag must be a non-empty string"),
    (dict(claim={"kind": "fires_after", "offset": 1, "tokens": [3]}), "unknown claim kind"),
    (dict(claim={"kind": "fires_before", "offset": -1, "tokens": [3]}), "offset must be an integer >= 0"),
    (dict(claim={"kind": "fires_before", "offset": 1, "tokens": []}), "tokens must be a non-empty list"),
    (dict(claim={"kind": "fires_before", "offset": 1, "tokens": ["an"]}), "token id must be an integer"),
    (dict(claim={"kind": "fires_before", "offset": 1, "tokens": [3], "x": 1}), "exactly the keys"),
    (dict(feature=-1), "feature id must be an integer >= 0"),
    (dict(feature=True), "feature id must be an integer >= 0"),
])
def test_bad_edits_are_refused_and_write_nothing(store, kwargs, message):
    store.set(KEY, 4, label="before", author="ana")
    before = dump(store)
    args = dict(feature=4, label="new", author="ben") | kwargs
    with pytest.raises(SaexError, match=message):
        store.set(KEY, args.pop("feature"), **args)
    assert dump(store) == before


def test_deleting_a_missing_label_is_an_error(store):
    with pytest.raises(SaexError, match="no label to delete"):
        store.delete(KEY, 9, author="ana")
    assert store.history(KEY, 9) == []


def test_bad_database_files_are_refused(tmp_path):
    (tmp_path / "text.sqlite").write_text("not a database at all, " * 100)
    with pytest.raises(SaexError, match="not a usable annotation database"):
        AnnotationStore(tmp_path / "text.sqlite")
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(SaexError, match="is a folder"):
        AnnotationStore(tmp_path / "dir.sqlite")
    con = sqlite3.connect(tmp_path / "foreign.sqlite")
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(SaexError, match="other tables"):
        AnnotationStore(tmp_path / "foreign.sqlite")
    newer = AnnotationStore(tmp_path / "newer.sqlite")
    con = sqlite3.connect(newer.path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(SaexError, match="schema version 99"):
        AnnotationStore(newer.path)


def test_key_from_loaded_sae_and_neuronpedia_ids():
    sae = SimpleNamespace(model_spec="HuggingFaceTB/SmolLM2-360M", hook_name="blocks.10.hook_resid_post",
                          content_hash="0123456789abcdef" * 4, path="run")
    key = SAEKey.from_sae(sae)
    assert key == SAEKey("HuggingFaceTB/SmolLM2-360M", "blocks.10.hook_resid_post", "0123456789abcdef" * 4)
    assert (key.neuronpedia_model_id, key.neuronpedia_layer) == ("smollm2-360m", "10-res-saex-01234567")
    assert SAEKey("/m/Model.Q4.gguf", "blocks.2.hook_mlp_out", "f" * 64).neuronpedia_layer == "2-mlp-out-saex-ffffffff"
    with pytest.raises(SaexError, match="does not record its model or hook"):
        SAEKey.from_sae(SimpleNamespace(model_spec=None, hook_name="h", content_hash="f" * 64, path="run"))
    with pytest.raises(SaexError, match="sha256"):
        SAEKey("m", "h", "not-a-hash")


# --------------------------------------------------------------------------- export / import


def test_export_import_into_a_fresh_database_is_lossless(store, tmp_path):
    populate(store)
    exported = store.export_json(KEY)
    assert [r["index"] for r in exported] == ["3", "10", "12"]
    r = exported[0]
    assert (r["modelId"], r["layer"], r["description"], r["notes"], r["authorId"]) == \
        ("smollm2-135m", "15-res-saex-abababab", "' an' before 'astronomer'", "narrower", "ben")
    assert r["saex"]["claim"] == {"kind": "fires_before", "offset": 1, "tokens": [9]}
    assert [e["action"] for e in exported[2]["saex"]["history"]] == ["set", "delete", "set"]

    fresh = AnnotationStore(tmp_path / "fresh.sqlite")
    # Through a file and back, as a user would move it between machines.
    assert store.export_file(KEY, tmp_path / "labels.json") == 3
    assert json.loads((tmp_path / "labels.json").read_text()) == exported
    assert fresh.import_file(tmp_path / "labels.json", KEY, author="importer") == ImportReport(3, 0, 0)
    assert fresh.export_json(KEY) == exported
    for feature in (3, 10, 12):
        assert fresh.get(KEY, feature) == store.get(KEY, feature)
        assert fresh.history(KEY, feature) == store.history(KEY, feature)
    # Editing continues from the imported version.
    assert fresh.set(KEY, 12, label="later", author="ana") == 4


def test_import_conflicts_keep_or_overwrite(store, tmp_path):
    populate(store)
    records = store.export_json(KEY)
    target = AnnotationStore(tmp_path / "target.sqlite")
    target.set(KEY, 3, label="theirs", author="zed")
    target.set(KEY, 12, label="theirs too", author="zed")

    assert target.import_json(records, KEY, author="imp") == ImportReport(added=1, replaced=0, skipped=2)
    assert target.get(KEY, 3).label == "theirs" and target.get(KEY, 10).label == records[1]["description"]

    assert target.import_json(records, KEY, author="imp", on_conflict="overwrite") == \
        ImportReport(added=0, replaced=2, skipped=1)  # 10 is already identical
    now = target.get(KEY, 3)
    assert (now.label, now.tags, now.confidence, now.claim, now.author, now.version) == \
        ("' an' before 'astronomer'", ("lookahead",), 0.6, {"kind": "fires_before", "offset": 1, "tokens": [9]},
         "imp", 2)
    assert [(e.action, e.label, e.author) for e in target.history(KEY, 3)] == \
        [("set", "theirs", "zed"), ("import", "' an' before 'astronomer'", "imp")]


def test_plain_neuronpedia_records_are_accepted_for_this_sae_only(store):
    plain = {"id": "clx1", "modelId": "smollm2-135m", "layer": "15-res-saex-abababab", "index": "42",
             "description": "plural nouns", "authorId": "np-user", "typeName": "oai_token-act-pair",
             "explanationModelName": "gpt-4o-mini", "scoreV1": 0.3}
    assert store.import_json([plain], KEY, author="imp") == ImportReport(1, 0, 0)
    a = store.get(KEY, 42)
    assert (a.label, a.description, a.author, a.claim) == ("plural nouns", "", "imp", None)
    assert a.tags == ("np:source=smollm2-135m/15-res-saex-abababab", "np:type=oai_token-act-pair",
                      "np:model=gpt-4o-mini", "np:author=np-user")  # where it came from (provenance)
    assert store.history(KEY, 42)[0].action == "import"
    before = dump(store)
    with pytest.raises(SaexError, match="is for smollm2-135m / 15-res-saex-cdcdcdcd, not this SAE"):
        store.import_json([plain | {"index": "43", "layer": "15-res-saex-cdcdcdcd"}], KEY, author="imp")
    assert dump(store) == before


def _bad_payloads():
    """(name, edit to a good export, expected message). Each edit spoils one record."""
    def edit(i, path, value):
        def apply(records):
            node = records[i]
            for part in path[:-1]:
                node = node[part]
            if value is KeyError:
                del node[path[-1]]
            else:
                node[path[-1]] = value
            return records
        return apply
    return [
        ("malformed JSON", lambda r: json.dumps(r)[:-5], "not valid JSON"),
        ("an object, not a list", lambda r: {"records": r}, "must be a JSON list of records"),
        ("a record that is a string", lambda r: r + ["oops"], "record 3: expected an object"),
        ("index not a number", edit(1, ["index"], "ten"), "record 1: index must be a feature id"),
        ("negative index", edit(1, ["index"], -3), "record 1: index must be a feature id"),
        ("confidence a string", edit(0, ["saex", "confidence"], "high"), "record 0: confidence must be a number"),
        ("tags a string", edit(2, ["saex", "tags"], "revived"), "record 2: tags must be a list"),
        ("label a number", edit(2, ["description"], 12), "record 2: the label must be a non-empty string"),
        ("bad claim", edit(0, ["saex", "claim"], {"kind": "fires_before", "offset": "1", "tokens": [9]}),
         "record 0: the claim's offset must be an integer"),
        ("bad time", edit(1, ["updatedAt"], "yesterday"), "record 1: updatedAt must be an ISO 8601 time"),
        ("another SAE's hash", edit(2, ["saex", "sae_hash"], "cd" * 32), "record 2: is for another SAE"),
        ("another hook", edit(0, ["saex", "hook"], "blocks.3.hook_resid_post"), "record 0: is for another SAE"),
        ("unknown saex key", edit(0, ["saex", "colour"], "red"), "record 0: saex must have exactly the keys"),
        ("missing saex key", edit(0, ["saex", "history"], KeyError), "record 0: saex must have exactly the keys"),
        ("future format", edit(0, ["saex", "format"], 2), "record 0: saex.format 2 is not 1"),
        ("history gap", edit(2, ["saex", "history", 1, "version"], 5), "record 2: history versions"),
        ("label edited outside the history", edit(1, ["description"], "changed"),
         "record 1: the last history entry does not match"),
        ("duplicate feature", lambda r: r + [r[0]], "features \\[3\\] appear more than once"),
    ]


@pytest.mark.parametrize("name, spoil, message", _bad_payloads(), ids=[p[0] for p in _bad_payloads()])
def test_bad_imports_are_rejected_and_nothing_is_imported(store, tmp_path, name, spoil, message):
    populate(store)
    records = spoil(json.loads(json.dumps(store.export_json(KEY))))
    store.set(KEY, 50, label="not in the export", author="ana")
    for target in (AnnotationStore(tmp_path / "empty.sqlite"), store):  # fresh, and one with labels
        before = dump(target)
        for mode in ("keep", "overwrite"):
            with pytest.raises(SaexError, match=message) as info:
                target.import_json(records, KEY, author="imp", on_conflict=mode)
            assert "nothing was imported" in str(info.value) or "JSON" in str(info.value)
            assert dump(target) == before


def test_import_argument_errors(store, tmp_path):
    with pytest.raises(SaexError, match="on_conflict must be"):
        store.import_json([], KEY, author="imp", on_conflict="merge")
    with pytest.raises(SaexError, match="no annotations file"):
        store.import_file(tmp_path / "missing.json", KEY, author="imp")
    assert store.import_json("[]", KEY, author="imp") == ImportReport(0, 0, 0)


# --------------------------------------------------------------------------- two writers


def _writer(path: str, name: str, n: int, start) -> None:
    start.wait()  # a barrier: both processes are imported and begin together
    store = AnnotationStore(path, timeout=60)  # so both may create the schema at once, too
    for i in range(n):
        store.set(KEY, i % 5, label=f"{name}-{i}", author=name, tags=[name])
        time.sleep(random.random() * 0.002)  # a pause, as between a person's edits, lets the other in


@pytest.mark.integration
def test_two_writer_processes_lose_nothing(tmp_path):
    path, n = str(tmp_path / "shared.sqlite"), 200
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, name, n, start)) for name in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]

    store = AnnotationStore(path)
    seen, switches = set(), 0
    for feature in range(5):
        h = store.history(KEY, feature)
        switches += sum(a.author != b.author for a, b in zip(h, h[1:]))
        assert [e.version for e in h] == list(range(1, len(h) + 1))  # complete, no gaps
        seen |= {(e.author, e.label) for e in h}
        live = store.get(KEY, feature)
        assert (live.version, live.label) == (h[-1].version, h[-1].label)
        # Each process's own edits of this feature appear in the order it made them.
        for name in ("p1", "p2"):
            mine = [int(e.label.split("-")[1]) for e in h if e.author == name]
            assert mine == sorted(mine)
    assert seen == {(name, f"{name}-{i}") for name in ("p1", "p2") for i in range(n)}
    assert switches > 20, "the two writers barely overlapped, so this test did not test concurrency"


# --------------------------------------------------------------------------- claims


def brute_force(claim, acts, tokens, threshold=0.0, mask=None):
    """Count by looping over every position of every window, straight from the definition."""
    acts, tokens = np.atleast_2d(acts), np.atleast_2d(tokens)
    mask = np.ones(acts.shape, bool) if mask is None else np.atleast_2d(mask)
    d, hits, fired, targets = claim["offset"], 0, 0, 0
    for b in range(acts.shape[0]):
        for p in range(acts.shape[1]):
            if p + d >= acts.shape[1] or not mask[b, p]:
                continue
            f = acts[b, p] > threshold
            t = int(tokens[b, p + d]) in claim["tokens"]
            fired, targets, hits = fired + f, targets + t, hits + (f and t)
    return hits, fired, targets


def test_claim_score_on_a_hand_made_example():
    # "fires one token before 7 or 9". Window 0: fires at 1 (next is 7: hit), 3 (next is 2: miss) and 5
    # (last position: nothing follows, not counted); 2 and 4 are followed by 9 and 7 without firing.
    # Window 1: fires at 0 before 9 but position 0 is masked (BOS); fires at 2 before 7 (hit).
    acts = np.array([[0.0, 2.0, 0.0, 0.5, 0.0, 3.0],
                     [1.0, 0.0, 0.7, 0.0, 0.0, 0.0]])
    tokens = np.array([[1, 4, 7, 9, 2, 7],
                       [1, 9, 3, 7, 5, 6]])
    mask = np.ones_like(acts, dtype=bool)
    mask[:, 0] = False
    s = score_claim(CLAIM, acts, tokens, mask=mask)
    assert (s.hits, s.fired, s.targets) == (2, 3, 4)  # targets: w0 p1, p2, p4; w1 p2
    assert (s.precision, s.recall) == (2 / 3, 2 / 4)
    assert (s.hits, s.fired, s.targets) == brute_force(CLAIM, acts, tokens, mask=mask)
    # A threshold of 0.6 drops the weak firing at w0 p3 (a miss): precision rises.
    s = score_claim(CLAIM, acts, tokens, threshold=0.6, mask=mask)
    assert (s.hits, s.fired, s.targets, s.precision) == (2, 2, 4, 1.0)


@pytest.mark.parametrize("offset", [0, 1, 2, 5])
def test_claim_score_matches_brute_force_on_random_windows(offset):
    rng = np.random.default_rng(offset)
    acts = np.where(rng.random((6, 20)) < 0.3, rng.random((6, 20)), 0.0)
    tokens = rng.integers(0, 8, (6, 20))
    mask = rng.random((6, 20)) < 0.9
    claim = {"kind": "fires_before", "offset": offset, "tokens": [2, 5]}
    for threshold in (0.0, 0.4):
        hits, fired, targets = brute_force(claim, acts, tokens, threshold, mask)
        s = score_claim(claim, torch.tensor(acts), torch.tensor(tokens), threshold=threshold,
                        mask=torch.tensor(mask))
        assert (s.hits, s.fired, s.targets) == (hits, fired, targets)
        assert s.precision == pytest.approx(hits / fired) and s.recall == pytest.approx(hits / targets)
    one = score_claim(claim, acts[0], tokens[0])  # a single window, "pos"
    assert (one.hits, one.fired, one.targets) == brute_force(claim, acts[0], tokens[0])


def test_claim_score_edge_cases_and_bad_input():
    claim = {"kind": "fires_before", "offset": 4, "tokens": [1]}
    assert score_claim(claim, np.ones(3), np.ones(3, int)) == score_claim(claim, np.ones(4), np.ones(4, int))
    assert score_claim(claim, np.ones(3), np.ones(3, int)).precision is None  # nothing can be checked
    quiet = score_claim(CLAIM, np.zeros(5), np.array([7, 7, 7, 7, 7]))
    assert (quiet.precision, quiet.recall) == (None, 0.0)
    with pytest.raises(SaexError, match="one shape"):
        score_claim(CLAIM, np.zeros((2, 5)), np.zeros((2, 4), int))
    with pytest.raises(SaexError, match="token_ids must be integers"):
        score_claim(CLAIM, np.zeros(5), np.zeros(5))
    with pytest.raises(SaexError, match="NaN"):
        score_claim(CLAIM, np.array([0.0, np.nan]), np.zeros(2, int))
    with pytest.raises(SaexError, match="no claim"):
        score_claim(None, np.zeros(5), np.zeros(5, int))
    assert validate_claim({"kind": "fires_before", "offset": 0, "tokens": [3, 3, 1]})["tokens"] == [3, 1]
