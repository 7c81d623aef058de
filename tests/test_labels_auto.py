"""Automatic labels (sae/labels/): a planted feature gets the planted label; token-level and
detection scores equal a brute-force count; delphi's draw is what it says; the split keeps a
document in one half; the controls are what they say; a killed run resumes to the same result;
an accepted label becomes an annotation with history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL, ActivationStore
from sae.labels import auto, resume
from sae.labels.auto import LabelConfig, label_features, read_summary
from sae.labels.controls import control_sae, decoder_shuffled_sae
from sae.labels.detection import DECILES, draw, feature_rng
from sae.labels.heldout import split_positions
from sae.labels.predicates import Predicate
from sae.labels.propose import best_prefix, greedy_detection
from sae.labels.words import WORD_CLASSES, token_class
from sae.runs.files import read_labels
from sae.runs.load import load_sae
from tests.helpers import save_topk, write_store

HOOK = "blocks.0.hook_resid_post"  # the hook write_store records
D = 32  # d_model of the tiny model
T = 16
EX = 8  # example window length in these tests


def _save_topk(path, **kw):
    return save_topk(path, d_in=D, hook_name=HOOK, **kw)


def _one_feature_run(root, tokens, fires, strength=None):
    """A top-1 SAE whose feature 3 fires exactly at `fires` ("W T"), on a store of these tokens."""
    n = len(tokens)
    acts = 0.3 * torch.randn(n, T, D, generator=torch.Generator().manual_seed(6))
    s = torch.full((n, T), 4.0) if strength is None else 4 * torch.from_numpy(strength).float()
    at = torch.from_numpy(fires)
    acts[at] += s[at][:, None] * torch.eye(D)[3]
    store = write_store(root / "acts-heldout", acts, shard_windows=16, tokens=tokens)
    b_enc = torch.zeros(16)
    b_enc[3] = -2.0  # without the planted signal feature 3 never wins the top-1
    run = _save_topk(root / "run", d_sae=16, k=1, W_enc=torch.eye(D)[:, :16], b_enc=b_enc, W_dec=torch.eye(D)[:16])
    return run, store


def _planted_store(root, X, offset, n=96, seed=5):
    """Feature 3 of a top-1 SAE fires exactly `offset` tokens before token X (0: on X)."""
    rng = np.random.default_rng(seed)
    others = [t for t in range(3, 60) if t != X]
    tokens = rng.choice(others, size=(n, T)).astype(np.int32)
    tokens[rng.random((n, T)) < 0.05] = X
    at = np.zeros((n, T), bool)
    at[:, :T - offset] = tokens[:, offset:] == X
    return _one_feature_run(root, tokens, at, 1 + 3 * rng.random((n, T)))  # activations spread over deciles


def _cfg(run, store, **kw):
    base = dict(run=str(run), store=str(store), split_block=2, example_len=EX, progress=False)
    return LabelConfig(**(base | kw))


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_lm):
    root = tmp_path_factory.mktemp("planted-labels")
    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    run, store = _planted_store(root, X, 1)
    label_features(_cfg(run, store), lm=tiny_lm)
    return run, store, X, tiny_lm


def test_the_planted_feature_gets_fires_right_before_x(planted):
    run, _, X, lm = planted
    labels = read_labels(run)
    assert len(labels) == 16
    rec = labels[3]
    assert rec["predicate"] == {"kind": "token", "values": [X], "offset": 1}
    assert rec["label"] == f"fires right before {{{lm.tokenizer.decode([X])!r}}}"
    assert rec["f1"] > 0.95 and rec["precision"] > 0.95 and rec["recall"] > 0.95
    # every activating window holds an X right after a firing, no quiet one does (but for a
    # window whose X sits at its first position, with the firing in the window before)
    assert rec["detection"]["balanced_accuracy"] > 0.9 and rec["fuzzing"]["balanced_accuracy"] > 0.9
    assert rec["source"] == "auto" and rec["scorable"] and rec["n_fired"] > 0
    s = read_summary(run)
    assert set(s["variants"]) == {"real", "random", "shuffled"}
    rnd = s["variants"]["random"]
    assert rnd["detection"]["median"] < rec["detection"]["balanced_accuracy"]
    assert rnd["f1"]["median"] < 0.5


def test_a_complete_labelling_is_reused(planted, capsys):
    run, store, _, lm = planted
    before = (run / "labels.jsonl").read_text()
    label_features(_cfg(run, store), lm=lm)
    assert "already complete" in capsys.readouterr().err
    assert (run / "labels.jsonl").read_text() == before


def test_an_ngram_feature_gets_an_ngram_label(tmp_path, tiny_lm):
    """Feature 3 fires on token B only right after token A (B elsewhere and A elsewhere: quiet)."""
    rng = np.random.default_rng(3)
    A, B = 7, 9
    n = 96
    tokens = rng.choice([t for t in range(3, 60) if t not in (A, B)], size=(n, T)).astype(np.int32)
    tokens[rng.random((n, T)) < 0.08] = A
    tokens[rng.random((n, T)) < 0.08] = B
    hit = np.zeros((n, T), bool)
    hit[:, 1:] = (tokens[:, 1:] == B) & (tokens[:, :-1] == A)
    run, store = _one_feature_run(tmp_path, tokens, hit)
    label_features(_cfg(run, store, control=False), lm=tiny_lm)
    rec = read_labels(run)[3]
    assert rec["predicate"] in ({"kind": "ngram", "values": [[A, B]]},
                                {"kind": "and", "parts": [{"kind": "token", "values": [B], "offset": 0},
                                                          {"kind": "token", "values": [A], "offset": -1}]},
                                {"kind": "and", "parts": [{"kind": "token", "values": [A], "offset": -1},
                                                          {"kind": "token", "values": [B], "offset": 0}]})
    assert rec["precision"] > 0.95 and rec["recall"] > 0.95


# --------------------------------------------------------------------------- brute force


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, tiny_lm):
    """A random TopK SAE on random vectors with few distinct tokens (pairs repeat), BOS-like
    special tokens and some outliers."""
    root = tmp_path_factory.mktemp("random-labels")
    W = 48
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(W, T, D, generator=g)
    flags = torch.zeros(W, T, dtype=torch.uint8)
    flags[:, 0] = FLAG_SPECIAL
    out = torch.randperm(W * T, generator=g)[:6]
    flags.view(-1)[out] |= FLAG_OUTLIER
    tokens = np.random.default_rng(2).integers(3, 12, size=(W, T)).astype(np.int32)
    store = write_store(root / "acts-heldout", acts, shard_windows=5, flags=flags, tokens=tokens)
    run = _save_topk(root / "run", d_sae=24, k=4)
    cfg = _cfg(run, store, split_block=3, control=False, chunk_tokens=3 * T, min_count=1, min_precision=0.0,
               wordnet=False, per_decile=2, non_activating=12)
    label_features(cfg, lm=tiny_lm)
    return run, acts.numpy(), flags.numpy(), tokens, cfg


def _holds(pred: dict, tokens, w: int, p: int, vocab) -> bool:
    """Whether a predicate (JSON) holds at window w, position p, read off the tokens directly."""
    k = pred["kind"]
    if k in ("and", "or"):
        a, b = (_holds(q, tokens, w, p, vocab) for q in pred["parts"])
        return (a and b) if k == "and" else (a or b)
    if k == "position":
        return p in pred["values"]
    if k in ("token", "boosts_output"):
        d = pred.get("offset", 1 if k == "boosts_output" else 0)
        return 0 <= p + d < T and int(tokens[w, p + d]) in pred["values"]
    if k == "ngram":
        return any(p - len(g) + 1 >= 0 and list(tokens[w, p - len(g) + 1:p + 1]) == g for g in pred["values"])
    if k == "class":  # these tests' tokens are single punctuation marks (classes checked by hand elsewhere)
        q = p + pred["offset"]
        return q < T and WORD_CLASSES[token_class(vocab[int(tokens[w, q])])] in pred["values"]
    raise AssertionError(f"no brute force for {k}")


def _dense(run, acts):
    sae = load_sae(run)
    with torch.no_grad():
        return sae.sae.encode(torch.from_numpy(acts).reshape(-1, D)).reshape(len(acts), T, -1).numpy()


def _usable(flags, w, p, split_block):
    """Half of a position (no blank-line separators in these tokens: blocks decide)."""
    return -1 if flags[w, p] != 0 else (w // split_block) % 2


def test_token_scores_equal_a_brute_force_count_per_position(random_run, tiny_lm):
    run, acts, flags, tokens, cfg = random_run
    dense = _dense(run, acts)
    vocab = [tiny_lm.tokenizer.decode([i]) for i in range(64)]
    checked = set()
    for f, rec in read_labels(run).items():
        for kind, d in (rec.get("by_kind") or {}).items():
            tp = n_pred = n_fired = n = 0
            for w in range(len(tokens)):
                for p in range(T):
                    if _usable(flags, w, p, cfg.split_block) != 1:
                        continue
                    n += 1
                    fired, holds = dense[w, p, f] > 0, _holds(d["predicate"], tokens, w, p, vocab)
                    tp += fired and holds
                    n_pred += holds
                    n_fired += fired
            assert rec["n_fired"] == n_fired
            assert d["f1"] == pytest.approx(2 * tp / (n_fired + n_pred) if n_fired + n_pred else None, abs=1e-6)
            if n_pred:
                assert d["precision"] == pytest.approx(tp / n_pred, abs=1e-6)
            if n_fired and n_fired < n:
                tnr = (n - n_fired - n_pred + tp) / (n - n_fired)
                assert d["balanced_accuracy"] == pytest.approx((tp / n_fired + tnr) / 2, abs=1e-6)
            checked.add(kind)
    assert {"token", "ngram", "position"} <= checked


def test_delphi_draw_and_detection_score_by_brute_force(random_run, tiny_lm):
    """The draw takes 5 windows from each decile of the window maxima (computed here from the
    dense codes) and 50 quiet windows, all from the scoring half; the label's balanced
    accuracy on them equals a window-by-window count."""
    from sae.index.tables import vocab_strings
    from sae.labels.auto import _separator, build_context
    from sae.labels.detection import firings_in
    from sae.labels.heldout import SCORE, encode_firings

    run, acts, flags, tokens, cfg = random_run
    dense = _dense(run, acts)
    store = ActivationStore(cfg.store)
    vocab = vocab_strings(tiny_lm, int(tiny_lm.model.get_output_embeddings().weight.shape[0]))
    ctx = build_context(store, vocab, cfg, _separator(tiny_lm))
    fir = encode_firings(load_sae(run), store, ctx.split)
    labels = read_labels(run)
    per = T // EX
    n_checked = 0
    for f, rec in labels.items():
        hp, ha = firings_in(fir, ctx.split, f, SCORE)
        sample = draw(ctx.split, hp, ha, SCORE, feature_rng(cfg.seed, f, SCORE), cfg.per_decile,
                      cfg.non_activating, 10, ctx.usable_examples)
        assert (sample is None) == (not rec["scorable"])
        if sample is None:
            continue
        # window maxima by brute force, over usable positions of scoring-half windows
        maxima = {}
        for w in range(len(tokens)):
            if (w // cfg.split_block) % 2 != 1:
                continue
            for j in range(per):
                ps = [p for p in range(j * EX, (j + 1) * EX) if flags[w, p] == 0]
                if ps:
                    maxima[w * per + j] = max(float(dense[w, p, f]) for p in ps)
        act = sorted((m, e) for e, m in maxima.items() if m > 0)
        quiet = {e for e, m in maxima.items() if m <= 0}
        deciles = np.array_split(np.array([e for _, e in act]), DECILES)
        drawn = sample.windows[sample.active]
        for i, dec in enumerate(deciles):
            assert sum(e in set(dec.tolist()) for e in drawn) == min(cfg.per_decile, len(dec))
        assert set(sample.windows[~sample.active].tolist()) <= quiet
        assert (~sample.active).sum() == min(cfg.non_activating, len(quiet))
        # the label's verdict per window, by brute force
        pred = rec["predicate"]
        if pred is None:
            continue
        verdict = [any(_holds(pred, tokens, e // per, p, vocab) for p in range((e % per) * EX, (e % per + 1) * EX)
                       if flags[e // per, p] == 0) for e in sample.windows]
        y = sample.active
        v = np.array(verdict)
        want = ((v & y).sum() / y.sum() + (~v & ~y).sum() / (~y).sum()) / 2
        assert rec["detection"]["balanced_accuracy"] == pytest.approx(want, abs=1e-6)
        n_checked += 1
    assert n_checked >= 5


# --------------------------------------------------------------------------- pieces


def test_split_leaves_a_documents_tail_out_of_both_halves():
    """Block size 2: windows 0-1 propose, 2-3 score. Window 2 continues the document of window 1
    until the separator (token 99) at position 3; window 3 has no boundary before it."""
    tokens = np.full((4, 8), 5)
    tokens[2, 3] = 99
    flags = np.zeros((4, 8), np.uint8)
    flags[:, 0] = FLAG_SPECIAL
    s = split_positions(tokens, flags, split_block=2, example_len=4, separator=99)
    half = s.half.reshape(4, 8)
    assert list(half[0]) == [-1] + [0] * 7
    assert list(half[2]) == [-1, -1, -1, -1] + [1] * 4  # BOS, the tail, and the separator itself
    assert list(half[3]) == [-1] + [1] * 7
    assert list(s.example_half) == [0, 0, 0, 0, 1, 1, 1, 1]
    # a boundary with no separator in the next window leaves that one window out
    tokens2 = np.full((4, 8), 5)
    tokens2[3, 6] = 99
    half2 = split_positions(tokens2, np.zeros((4, 8), np.uint8), 2, 4, 99).half.reshape(4, 8)
    assert (half2[2] == -1).all() and (half2[3] == 1).all()
    # a store without separators is split by blocks alone
    half3 = split_positions(np.full((4, 8), 5), np.zeros((4, 8), np.uint8), 2, 4, 99).half.reshape(4, 8)
    assert list(half3[:, 0]) == [0, 0, 1, 1]


def test_greedy_detection_and_best_prefix_by_hand():
    # F1 = 2c/(fired + b): the best prefix of (4/4, 1/1, 1/10) with 5 firings is the first two
    assert best_prefix(np.array([4.0, 1, 1]), np.array([4.0, 1, 10]), 5, 8) == 2
    from sae.labels.detection import Sample

    # 4 activating windows (weight 1/8 each) and 2 quiet ones (1/4 each); value 0 covers
    # activating 0, 1; value 1 covers activating 2 and quiet 0; value 2 covers quiet 1 only
    y = np.array([1, 1, 1, 1, 0, 0], bool)
    w = np.array([1 / 8] * 4 + [1 / 4] * 2)
    M = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    s = Sample(np.arange(6), y, w, np.zeros(6), np.zeros((6, 1)), np.ones((6, 1), bool))
    # value 0 gains 2/8; value 1 then gains 1/8 - 1/4 < 0: stop
    assert greedy_detection(M, s, 5) == [0]


def test_predicates_round_trip_read_format_1_and_read_as_claims():
    kinds = [Predicate("token", (5, 7), 2), Predicate("token", (5,), -2), Predicate("ngram", ((1, 2), (3, 4))),
             Predicate("class", ("punctuation",), 1), Predicate("lexname", ("noun.animal",)),
             Predicate("next_noun", ("noun.person", "noun.animal")), Predicate("position", (1, 2)),
             Predicate("boosts_output", (9,))]
    kinds += [Predicate("and", parts=(kinds[0], kinds[4])), Predicate("or", parts=(kinds[1], kinds[2]))]
    for p in kinds:
        assert Predicate.from_json(json.loads(json.dumps(p.to_json()))) == p
        assert p.text([f"t{i}" for i in range(10)])
    assert Predicate.from_json({"kind": "fires_before", "offset": 2, "tokens": [5, 7]}) == kinds[0]
    assert Predicate.from_json({"kind": "fires_after", "tokens": [5]}) == Predicate("token", (5,), -1)
    assert Predicate.from_json({"kind": "position", "positions": [1]}) == Predicate("position", (1,))
    assert kinds[0].claim() == {"kind": "fires_before", "offset": 2, "tokens": [5, 7]}
    assert kinds[1].claim() is None and kinds[4].claim() is None
    assert kinds[7].claim() == {"kind": "fires_before", "offset": 1, "tokens": [9]}
    assert "right after BOS" in Predicate("position", (1,)).text([])
    assert Predicate("token", (1,), -1).text(["a", " b"]) == "fires right after {' b'}"
    with pytest.raises(Exception, match="offset"):
        Predicate("token", (1,), 7)


def test_the_controls_keep_shape_and_norms_and_the_shuffle_keeps_the_encoder(planted):
    run, *_ = planted
    sae = load_sae(run)
    ctrl = control_sae(sae, seed=1)
    assert ctrl.sae.W_enc.shape == sae.sae.W_enc.shape
    torch.testing.assert_close(ctrl.sae.W_enc.norm(dim=0), sae.sae.W_enc.norm(dim=0))
    torch.testing.assert_close(ctrl.sae.W_dec.norm(dim=1), sae.sae.W_dec.norm(dim=1))
    assert not torch.equal(ctrl.sae.W_enc, sae.sae.W_enc)
    assert torch.equal(sae.sae.W_enc, torch.eye(D)[:, :16])  # the real SAE is untouched
    for seed in range(5):
        sh = decoder_shuffled_sae(sae, seed)
        assert torch.equal(sh.sae.W_enc, sae.sae.W_enc) and torch.equal(sh.sae.b_enc, sae.sae.b_enc)
        # each decoder row is another latent's: a permutation without fixed points
        perm = [int(torch.nonzero((sae.sae.W_dec == row).all(1))[0]) for row in sh.sae.W_dec]
        assert sorted(perm) == list(range(16)) and all(p != i for i, p in enumerate(perm))


def test_the_shuffled_control_differs_from_the_sae_only_in_output_labels(planted):
    run, *_ = planted
    s = read_summary(run)
    real, sh = s["variants"]["real"], s["variants"]["shuffled"]
    for kind, d in real["kinds"].items():
        if kind != "boosts_output" and kind in sh["kinds"] and d["n"] == sh["kinds"][kind]["n"]:
            assert sh["kinds"][kind]["median_f1"] == pytest.approx(d["median_f1"])


def test_a_killed_run_resumes_to_the_same_labels(tmp_path, tiny_lm, monkeypatch):
    import shutil

    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    run, store = _planted_store(tmp_path / "a", X, 0)
    cfg = _cfg(run, store)
    label_features(cfg, lm=tiny_lm)
    whole = (run / "labels.jsonl").read_text()
    other = tmp_path / "b"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("labels*"))

    calls = {"n": 0}
    real_label = auto.FeatureLabeller.label

    def dies(self, f):
        calls["n"] += 1
        if f == 11:
            raise KeyboardInterrupt  # as a kill would, after features 0-10 (chunks of 4 written)
        return real_label(self, f)

    monkeypatch.setattr(resume, "PARTIAL_CHUNK", 4)
    monkeypatch.setattr(auto.FeatureLabeller, "label", dies)
    monkeypatch.setattr(auto, "run_variants", lambda labs, d, partial, progress: {
        n: resume._label_job_direct((lab, d, partial / f"{n}.jsonl", False), n) for n, lab in labs.items()})
    with pytest.raises(KeyboardInterrupt):
        label_features(_cfg(other, store), lm=tiny_lm)
    saved = (other / auto.PARTIAL_DIR / "real.jsonl").read_text().splitlines()
    assert [json.loads(x)["feature"] for x in saved] == list(range(8))
    assert not (other / "labels.jsonl").exists() and read_summary(other) is None
    monkeypatch.setattr(auto.FeatureLabeller, "label", lambda self, f: (calls.__setitem__("n", calls["n"] + 1),
                                                                          real_label(self, f))[1])
    calls["n"] = 0
    label_features(_cfg(other, store), lm=tiny_lm)
    assert calls["n"] == 3 * 16 - 8  # the real SAE's first 8 features were not labelled again
    assert (other / "labels.jsonl").read_text() == whole
    assert not (other / auto.PARTIAL_DIR).exists()


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
    assert ann.label == "right before 'astronomer'" and ann.author == "auto (accepted by ada)"  # the short form
    assert rec["label"] == "fires right before {' astronomer'}" and rec["label"] in ann.description  # and the full
    assert ann.claim == {"kind": "fires_before", "offset": 1, "tokens": [X]}
    assert "auto" in ann.tags and f"F1 {rec['f1']:.2f}" in ann.description
    assert f"detection balanced accuracy {rec['detection']['balanced_accuracy']:.2f}" in ann.description
    hist = store.history(key, 3)
    assert [h.action for h in hist] == ["set"] and hist[0].author == "auto (accepted by ada)"


def test_cli_labels_a_run_and_bad_input_exits_2(planted, tiny_model_dir, tmp_path, capsys):
    import shutil

    from saex.cli import main

    run, store, X, _ = planted
    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("labels*"))
    assert main(["label", str(mine), "--store", str(store), "--model", str(tiny_model_dir), "--split-block", "2",
                 "--example-len", str(EX), "--control", "no", "--progress", "no"]) == 0
    out = capsys.readouterr().out
    assert "labelled" in out and "detection" in out and "random-direction" not in out
    assert read_labels(mine)[3]["predicate"] == {"kind": "token", "values": [X], "offset": 1}
    assert set(read_summary(mine)["variants"]) == {"real"}
    assert main(["label", str(mine), "--max-values", "0"]) == 2
    assert "max_values must be at least 1" in capsys.readouterr().err


def test_any_explainer_plugs_in_and_is_scored_the_same_way(random_run, tiny_lm):
    from sae.index.tables import vocab_strings
    from sae.labels.auto import label_sae

    run, acts, flags, tokens, cfg = random_run

    class Fixed:  # reads the evidence, returns predicates
        def propose(self, evidence):
            return [Predicate("token", (5, 5, 10 ** 6), 1), Predicate("position", (1, 2))]

    vocab = vocab_strings(tiny_lm, int(tiny_lm.model.get_output_embeddings().weight.shape[0]))
    recs = label_sae(load_sae(run), ActivationStore(cfg.store), cfg, vocab, tiny_lm, explainer=Fixed())
    dense = _dense(run, acts)
    f = next(r["feature"] for r in recs if r["label"] and r["n_fired"])
    for kind, d in recs[f]["by_kind"].items():
        tp = n_pred = n_fired = 0
        for w in range(len(tokens)):
            for p in range(T):
                if _usable(flags, w, p, cfg.split_block) == 1:
                    fired, holds = dense[w, p, f] > 0, _holds(d["predicate"], tokens, w, p, vocab)
                    tp, n_pred, n_fired = tp + (fired and holds), n_pred + holds, n_fired + fired
        assert d["f1"] == pytest.approx(2 * tp / (n_fired + n_pred), abs=1e-6)
    assert recs[f]["by_kind"]["token"]["predicate"]["values"] == [5, 10 ** 6]


def test_the_llm_explainer_is_scored_on_held_out_windows_and_resumes(tmp_path, tiny_lm, server, monkeypatch):
    """A fake OpenAI-compatible model names the most marked token and answers 1 for windows
    that contain it; the planted feature fires on " astronomer", so its explanation names it
    and classifies the held-out windows well. A rerun after a kill asks nothing twice."""
    import re
    from collections import Counter

    from tests import fake_llm

    def model(messages):
        user = messages[1]["content"]
        expl = re.search(r"^Latent explanation: (.*)$", user, re.M)
        if expl:
            word = expl.group(1).split()[-1]
            return str([int(word in ex) for ex in re.findall(r"^Example \d+: (.*)$", user, re.M)])
        marked = Counter(m.strip() for m in re.findall(r"<<(.*?)>>", user))
        return f"[EXPLANATION]: the word {marked.most_common(1)[0][0]}"

    monkeypatch.setattr(fake_llm, "fake_model", model)
    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    run, store = _planted_store(tmp_path, X, 0)
    cfg = _cfg(run, store, explainer=f"openai:{server.url}/org/fake", llm_features=16)
    label_features(cfg, lm=tiny_lm)
    rec = read_labels(run)[3]
    assert rec["llm"]["explanation"] == "the word astronomer" and rec["llm"]["error"] is None
    assert rec["llm"]["detection"]["balanced_accuracy"] > 0.9
    assert rec["llm"]["detection"]["n_activating"] == rec["detection"]["n_activating"]  # the same windows
    s = read_summary(run)["llm"]
    scorable = [f for f, r in read_labels(run).items() if r["scorable"]]
    assert s["features"] == scorable and s["detection"]["real"]["n"] + s["errors"]["real"] == len(scorable)
    assert "random" in s["detection"]
    explained = [r for r in server.requests if "[EXPLANATION]" in r["body"]["messages"][0]["content"]]
    # one explanation per sampled feature and variant; a feature with too few windows asks nothing
    assert len(explained) == 2 * len(scorable) - s["errors"]["real"] - s["errors"]["random"]
    # a rerun with the same settings reuses the complete labels: no request at all
    n = len(server.requests)
    label_features(cfg, lm=tiny_lm)
    assert len(server.requests) == n


def test_a_run_killed_during_the_llm_stage_asks_nothing_twice(tmp_path, tiny_lm, server, monkeypatch):
    from sae.errors import SaexError
    from tests import fake_llm

    asked: list[str] = []
    broken = {"after": 3}

    def model(messages):
        user = messages[1]["content"]
        if "Latent explanation:" in user:
            return str([int("astronomer" in line) for line in user.splitlines() if line.startswith("Example ")])
        asked.append(user)
        if broken["after"] is not None and len(asked) > broken["after"]:
            raise RuntimeError("server down")  # the client sees a dropped connection
        return "[EXPLANATION]: the word astronomer"

    monkeypatch.setattr(fake_llm, "fake_model", model)
    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    run, store = _planted_store(tmp_path, X, 0)
    cfg = _cfg(run, store, explainer=f"openai:{server.url}/org/fake", llm_features=16, control=False)
    with pytest.raises(SaexError):
        label_features(cfg, lm=tiny_lm)
    done = (run / auto.PARTIAL_DIR / "llm-real.jsonl").read_text().splitlines()
    assert len([x for x in done if json.loads(x)["explanation"]]) == 3
    broken["after"] = None
    first = list(asked)
    label_features(cfg, lm=tiny_lm)
    scorable = sum(1 for r in read_labels(run).values() if r["scorable"])
    again = asked[len(first):]
    assert len(again) == scorable - 3  # the three explained features were not asked again


def test_a_lookahead_feature_gets_its_article_narrowed_by_the_next_nouns_category(tmp_path, tiny_lm):
    """Feature 3 fires on " a" / " an" only when a person noun (astronomer, king) follows; the
    articles before animals and things are quiet. The label is the article, and the WordNet
    category of the next noun: an 'and' of token and next_noun."""
    tok = {s: tiny_lm.tokenizer.encode(s)[-1] for s in (" a", " an", " astronomer", " king", " owl", " cat",
                                                            " house", " umbrella", " mountain")}
    rng = np.random.default_rng(4)
    n = 128
    tokens = rng.integers(3, 28, size=(n, T)).astype(np.int32)  # punctuation and digits: no words between
    fires = np.zeros((n, T), bool)
    for w in range(n):
        for p in range(1, T - 1, 3):
            if rng.random() < 0.6:
                noun = rng.choice([" astronomer", " king", " owl", " cat", " house", " umbrella", " mountain"])
                art = " an" if noun in (" astronomer", " owl", " umbrella") else " a"
                tokens[w, p], tokens[w, p + 1] = tok[art], tok[noun]
                fires[w, p] = noun in (" astronomer", " king")
    run, store = _one_feature_run(tmp_path, tokens, fires)
    label_features(_cfg(run, store, control=False), lm=tiny_lm)
    rec = read_labels(run)[3]
    best_and = rec["by_kind"]["and"]
    parts = {p["kind"]: p for p in best_and["predicate"]["parts"]}
    assert parts["next_noun"]["values"] == ["noun.person"]
    assert parts["token"]["offset"] == 0 and parts["token"]["values"][0] in (tok[" a"], tok[" an"])
    assert best_and["precision"] > 0.95
    assert "before a noun of WordNet's noun.person" in best_and["label"]
