"""Automatic labels (sae/labels/auto.py): a planted feature gets the planted label, scores
equal a brute-force count per position, the random-direction control scores low, and an
accepted label becomes a normal annotation with history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL
from sae.labels.auto import (
    LabelConfig,
    Predicate,
    best_prefix,
    control_sae,
    label_features,
    read_labels,
    read_summary,
    window_half,
)
from sae.runs.load import load_sae
from tests.helpers import save_topk, write_store

HOOK = "blocks.0.hook_resid_post"  # the hook write_store records
D = 32  # d_model of the tiny model
T = 16


def _save_topk(path, **kw):
    return save_topk(path, d_in=D, hook_name=HOOK, **kw)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_lm):
    """Feature 3 fires exactly one token before token X (and nowhere else); 16 features, top-1."""
    root = tmp_path_factory.mktemp("planted-labels")
    rng = np.random.default_rng(5)
    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    others = [t for t in range(3, 60) if t != X]
    n = 64
    tokens = rng.choice(others, size=(n, T)).astype(np.int32)
    tokens[rng.random((n, T)) < 0.1] = X
    g = torch.Generator().manual_seed(6)
    acts = 0.3 * torch.randn(n, T, D, generator=g)
    before = np.zeros((n, T), bool)
    before[:, :-1] = tokens[:, 1:] == X
    acts[torch.from_numpy(before)] += 4 * torch.eye(D)[3]
    store = write_store(root / "acts-heldout", acts, shard_windows=16, tokens=tokens)
    b_enc = torch.zeros(16)
    b_enc[3] = -2.0  # without the planted signal feature 3 never wins the top-1
    run = _save_topk(root / "run", d_sae=16, k=1, W_enc=torch.eye(D)[:, :16], b_enc=b_enc, W_dec=torch.eye(D)[:16])
    cfg = LabelConfig(run=str(run), store=str(store), split_block=2, progress=False)
    label_features(cfg, lm=tiny_lm)
    return run, store, X, tiny_lm


def test_the_planted_feature_gets_fires_1_before_x_with_f1_near_1(planted):
    run, _, X, lm = planted
    labels = read_labels(run)
    assert len(labels) == 16
    rec = labels[3]
    assert rec["predicate"] == {"kind": "fires_before", "offset": 1, "tokens": [X]}
    assert rec["f1"] > 0.95 and rec["precision"] > 0.95 and rec["recall"] > 0.95
    assert rec["source"] == "auto" and "before" in rec["label"] and rec["n_fired"] > 0
    summary = read_summary(run)
    assert summary["real"]["n"] > 0 and summary["control"]["n"] > 0
    # the control's median best F1 is low, and below the planted SAE's best
    assert summary["control"]["median"] < 0.5
    assert summary["control"]["median"] < rec["f1"]


def test_a_complete_labelling_is_reused(planted, capsys):
    run, store, _, lm = planted
    before = (run / "labels.jsonl").read_text()
    label_features(LabelConfig(run=str(run), store=str(store), split_block=2, progress=False), lm=lm)
    assert "already complete" in capsys.readouterr().err
    assert (run / "labels.jsonl").read_text() == before


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, tiny_lm):
    """A random TopK SAE on random vectors with few distinct tokens (pairs repeat), BOS-like
    special tokens and some outliers."""
    root = tmp_path_factory.mktemp("random-labels")
    W = 24
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(W, T, D, generator=g)
    flags = torch.zeros(W, T, dtype=torch.uint8)
    flags[:, 0] = FLAG_SPECIAL
    out = torch.randperm(W * T, generator=g)[:6]
    flags.view(-1)[out] |= FLAG_OUTLIER
    tokens = np.random.default_rng(2).integers(3, 20, size=(W, T)).astype(np.int32)
    store = write_store(root / "acts-heldout", acts, shard_windows=5, flags=flags, tokens=tokens)
    run = _save_topk(root / "run", d_sae=48, k=4)
    cfg = LabelConfig(run=str(run), store=str(store), split_block=3, control=False, chunk_tokens=3 * T,
                      min_count=1, progress=False)
    label_features(cfg, lm=tiny_lm)
    return run, acts.numpy(), flags.numpy(), tokens, cfg


def _brute(pred: dict, f: int, dense, flags, tokens, half: int, split_block: int):
    """(tp, n_pred, n_fired, n) counted position by position."""
    tp = n_pred = n_fired = n = 0
    W = len(tokens)
    for w in range(W):
        if (w // split_block) % 2 != half:
            continue
        for p in range(T):
            if flags[w, p] != 0:
                continue
            n += 1
            fired = dense[w, p, f] > 0
            if pred["kind"] == "position":
                holds = p in pred["positions"]
            else:
                d = {"fires_before": pred.get("offset"), "fires_after": -1, "boosts_output": 1}[pred["kind"]]
                holds = 0 <= p + d < T and int(tokens[w, p + d]) in pred["tokens"]
            tp += fired and holds
            n_pred += holds
            n_fired += fired
    return tp, n_pred, n_fired, n


def test_scores_equal_a_brute_force_count_per_position(random_run):
    run, acts, flags, tokens, cfg = random_run
    sae = load_sae(run)
    with torch.no_grad():
        dense = sae.sae.encode(torch.from_numpy(acts).reshape(-1, D)).reshape(len(acts), T, -1).numpy()
    labels = read_labels(run)
    checked = set()
    for f, rec in labels.items():
        for cand in rec.get("candidates", []):
            tp, n_pred, n_fired, n = _brute(cand["predicate"], f, dense, flags, tokens, 1, cfg.split_block)
            assert rec["n_fired"] == n_fired
            want_f1 = 2 * tp / (n_fired + n_pred) if n_fired + n_pred else None
            assert cand["f1"] == pytest.approx(want_f1, abs=1e-6)
            if n_pred:
                assert cand["precision"] == pytest.approx(tp / n_pred, abs=1e-6)
            if n_fired:
                assert cand["recall"] == pytest.approx(tp / n_fired, abs=1e-6)
                tnr = (n - n_fired - n_pred + tp) / (n - n_fired)
                assert cand["balanced_accuracy"] == pytest.approx((tp / n_fired + tnr) / 2, abs=1e-6)
            checked.add(cand["predicate"]["kind"])
    assert {"fires_before", "fires_after", "boosts_output", "position"} <= checked


def test_predicates_round_trip_and_read_as_claims(tiny_lm):
    p = Predicate("fires_before", (5, 7), 2)
    assert Predicate.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert p.claim() == {"kind": "fires_before", "offset": 2, "tokens": [5, 7]}
    assert Predicate("fires_after", (5,)).claim() is None
    assert Predicate("boosts_output", (5,)).claim() == {"kind": "fires_before", "offset": 1, "tokens": [5]}
    assert "right after BOS" in Predicate("position", (1,)).text([])
    assert list(window_half(np.arange(8), 2)) == [0, 0, 1, 1, 0, 0, 1, 1]
    # F1 = 2c/(fired + b): the best prefix of (4/4, 1/1, 1/10) with 5 firings is the first two
    assert best_prefix(np.array([4.0, 1, 1]), np.array([4.0, 1, 10]), 5, 8) == 2


def test_the_control_keeps_shape_and_norms(planted):
    run, *_ = planted
    sae = load_sae(run)
    ctrl = control_sae(sae, seed=1)
    assert ctrl.sae.W_enc.shape == sae.sae.W_enc.shape
    torch.testing.assert_close(ctrl.sae.W_enc.norm(dim=0), sae.sae.W_enc.norm(dim=0))
    torch.testing.assert_close(ctrl.sae.W_dec.norm(dim=1), sae.sae.W_dec.norm(dim=1))
    assert not torch.equal(ctrl.sae.W_enc, sae.sae.W_enc)
    assert torch.equal(sae.sae.W_enc, torch.eye(D)[:, :16])  # the real SAE is untouched


def test_accepting_a_label_creates_an_annotation_with_history(planted, tmp_path):
    from sae.labels.auto import accept_label
    from sae.labels.records import SAEKey
    from sae.labels.store import AnnotationStore

    run, _, X, _ = planted
    sae = load_sae(run)
    key = SAEKey("tiny", HOOK, sae.content_hash)
    store = AnnotationStore(tmp_path / "a.sqlite")
    rec = read_labels(run)[3]
    ann = accept_label(store, key, rec, "ada")
    assert ann.label == rec["label"] and ann.author == "auto (accepted by ada)"
    assert ann.claim == {"kind": "fires_before", "offset": 1, "tokens": [X]}
    assert "auto" in ann.tags and f"F1 {rec['f1']:.2f}" in ann.description
    hist = store.history(key, 3)
    assert [h.action for h in hist] == ["set"] and hist[0].author == "auto (accepted by ada)"


def test_cli_labels_a_run_and_bad_input_exits_2(planted, tiny_model_dir, tmp_path, capsys):
    import shutil

    from saex.cli import main

    run, store, X, _ = planted
    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("labels*"))
    assert main(["label", str(mine), "--store", str(store), "--model", str(tiny_model_dir), "--split-block", "2",
                 "--control", "no", "--progress", "no"]) == 0
    out = capsys.readouterr().out
    assert "labelled" in out and "median best-label F1" in out
    assert read_labels(mine)[3]["predicate"] == {"kind": "fires_before", "offset": 1, "tokens": [X]}
    assert read_summary(mine)["control"] is None
    assert main(["label", str(mine), "--max-tokens", "0"]) == 2
    assert "max_tokens must be at least 1" in capsys.readouterr().err


def test_any_explainer_plugs_in_and_is_scored_the_same_way(random_run, tiny_lm):
    from sae.data.store import ActivationStore
    from sae.index.tables import vocab_strings
    from sae.labels.auto import label_sae

    run, acts, flags, tokens, cfg = random_run

    class Fixed:  # e.g. an LLM explainer: reads the record, returns predicates
        def propose(self, record):
            return [Predicate("fires_before", (5, 5, 10 ** 6), 1), Predicate("position", (1, 2))]

    sae = load_sae(run)
    vocab = vocab_strings(tiny_lm, int(tiny_lm.model.get_output_embeddings().weight.shape[0]))
    recs = label_sae(sae, ActivationStore(run.parent / "acts-heldout"), cfg, vocab, tiny_lm, explainer=Fixed())
    with torch.no_grad():
        dense = sae.sae.encode(torch.from_numpy(acts).reshape(-1, D)).reshape(len(acts), T, -1).numpy()
    f = next(r["feature"] for r in recs if r["label"] and r["n_fired"])
    for cand in recs[f]["candidates"]:
        tp, n_pred, n_fired, _ = _brute(cand["predicate"], f, dense, flags, tokens, 1, cfg.split_block)
        assert cand["f1"] == pytest.approx(2 * tp / (n_fired + n_pred), abs=1e-6)
    assert recs[f]["candidates"][0]["predicate"]["tokens"] == [5, 10 ** 6]
