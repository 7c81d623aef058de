"""Article-aligned profiles of the feature index (sae/index/aligned.py): the streamed sums
equal a brute-force count over sae-lens's dense encode of a small store (window edges,
special tokens and outliers not counted), forms pool by addition, the onset finds a feature
planted to fire one token before " an", and an index without the file still opens."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL
from sae.index import build as build_mod
from sae.index.aligned import ArticleProfile, article_forms
from sae.index.build import IndexConfig, build_index
from sae.index.reader import FeatureIndex
from sae.runs.load import load_sae
from sae.statistics import onset, stats_from_moments
from tests.helpers import save_topk, write_store

HOOK = "blocks.0.hook_resid_post"
D, W, T = 32, 40, 16
PLANTED = 3  # fires one token before " an"
CAP_A, CAP_AN = 11, 12  # stand-ins for " A" / " An" (the tiny tokenizer splits them)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_lm):
    forms, _ = article_forms(tiny_lm.tokenizer)
    forms = forms | {" A": CAP_A, " An": CAP_AN}
    rng = np.random.default_rng(3)
    tokens = rng.integers(13, 60, size=(W, T)).astype(np.int32)
    r = rng.random((W, T))
    tokens[r < 0.08] = forms[" a"]
    tokens[(r >= 0.08) & (r < 0.16)] = forms[" an"]
    tokens[(r >= 0.16) & (r < 0.19)] = CAP_A
    tokens[(r >= 0.19) & (r < 0.22)] = CAP_AN
    tokens[:, 0] = 1  # BOS-like
    g = torch.Generator().manual_seed(4)
    acts = 0.5 * torch.randn(W, T, D, generator=g)
    before_an = np.zeros((W, T), bool)
    before_an[:, :-1] = np.isin(tokens[:, 1:], [forms[" an"], CAP_AN])
    acts[torch.from_numpy(before_an)] += 5 * torch.eye(D)[PLANTED]
    flags = torch.zeros(W, T, dtype=torch.uint8)
    flags[:, 0] = FLAG_SPECIAL
    out = torch.randperm(W * T, generator=g)[:12]
    flags.view(-1)[out] |= FLAG_OUTLIER
    root = tmp_path_factory.mktemp("aligned")
    store = write_store(root / "acts-heldout", acts, shard_windows=7, flags=flags, tokens=tokens)
    b_enc = torch.zeros(24)
    b_enc[PLANTED] = -2.0
    W_enc = torch.randn(D, 24, generator=g) * 0.3
    W_enc[:, PLANTED] = torch.eye(D)[PLANTED]
    run = save_topk(root / "run", d_in=D, d_sae=24, k=4, hook_name=HOOK, W_enc=W_enc, b_enc=b_enc)
    mp = pytest.MonkeyPatch()
    mp.setattr(build_mod, "article_forms", lambda tok: (forms, {}))
    try:
        build_index(IndexConfig(run=str(run), store=str(store), chunk_tokens=3 * T, progress=False), lm=tiny_lm)
    finally:
        mp.undo()
    return run, store, forms, (acts, flags.numpy(), tokens)


def _brute(run, forms, data, before=8, after=2):
    acts, flags, tokens = data
    sae = load_sae(run)
    with torch.no_grad():
        dense = sae.sae.encode(acts.reshape(-1, D)).reshape(W, T, -1).numpy().astype(np.float64)
    names = list(forms)
    offsets = list(range(-before, after + 1))
    F = dense.shape[-1]
    n = np.zeros((len(names), len(offsets)), np.int64)
    fired = np.zeros((F, len(names), len(offsets)), np.int64)
    s = np.zeros((F, len(names), len(offsets)))
    s2 = np.zeros_like(s)
    for w in range(W):
        for t in range(T):
            if int(tokens[w, t]) not in forms.values():
                continue
            g = names.index(next(k for k, v in forms.items() if v == tokens[w, t]))
            for j, o in enumerate(offsets):
                q = t + o
                if not 0 <= q < T or flags[w, q] != 0:  # outside the window, or never encoded
                    continue
                n[g, j] += 1
                x = dense[w, q]
                fired[:, g, j] += x != 0
                s[:, g, j] += x
                s2[:, g, j] += x * x
    return offsets, n, fired, s, s2


def test_aligned_sums_equal_brute_force(built):
    from safetensors.numpy import load_file

    run, _, forms, data = built
    offsets, n, fired, s, s2 = _brute(run, forms, data)
    got = load_file(str(run / "index" / "aligned.safetensors"))
    assert got["aligned_offsets"].tolist() == offsets
    assert np.array_equal(got["aligned_count"], n)
    assert n[:, 0].sum() < n[:, 8].sum()  # offset -8 falls outside the window more often than 0
    assert np.array_equal(got["aligned_fired"], fired) and fired.sum() > 0
    np.testing.assert_allclose(got["aligned_sum"], s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["aligned_sumsq"], s2, rtol=1e-5, atol=1e-5)
    m = json.loads((run / "index" / "manifest.json").read_text())["aligned"]
    assert m["forms"] == forms and m["offsets"] == offsets
    assert m["articles"] == {"a": [" a", " A"], "an": [" an", " An"]}


def test_reader_pools_forms_and_summarises_with_a_normal_interval(built):
    run, _, forms, data = built
    offsets, n, fired, s, s2 = _brute(run, forms, data)
    index = FeatureIndex(run)
    for f in (0, PLANTED, 17):
        prof = index.feature(f).aligned
        assert prof.offsets == offsets
        for art, gs in (("a", [0, 2]), ("an", [1, 3])):
            row = prof.articles[art]
            cnt = n[gs].sum(0)
            assert row.n == cnt.tolist() and row.fired == fired[f, gs].sum(0).tolist()
            mean = s[f, gs].sum(0) / cnt
            sd = np.sqrt((s2[f, gs].sum(0) - cnt * mean ** 2) / (cnt - 1))
            np.testing.assert_allclose(row.mean, mean, atol=1e-5)
            np.testing.assert_allclose(row.hi, mean + 1.959964 * sd / np.sqrt(cnt), atol=1e-4)
            np.testing.assert_allclose(row.lo, mean - 1.959964 * sd / np.sqrt(cnt), atol=1e-4)
        assert prof.forms[" A"].n == n[2].tolist()


def test_onset_finds_the_feature_planted_before_an(built):
    run, *_ = built
    prof = FeatureIndex(run).feature(PLANTED).aligned
    j = prof.offsets.index(-1)
    assert prof.articles["an"].mean[j] > 2 > 0.5 > prof.articles["a"].mean[j]
    assert prof.onset_an_over_a == -1
    assert prof.onset_a_over_an is None


def test_onset_statistic_on_hand_made_numbers():
    offs = [-2, -1, 0]
    base = stats_from_moments([10, 10, 10], [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    # mean 1 with sd ~0.1 at -1 and 0; at -2 a mean too small to pass the corrected bound
    grp = stats_from_moments([10, 10, 10], [10, 10, 10], [0.5, 10.0, 10.0], [10.0, 10.1, 10.1])
    assert onset(grp, base, offs) == -1
    assert onset(base, grp, offs) is None
    few = stats_from_moments([1, 1, 1], [1, 1, 1], [5.0, 5.0, 5.0], [25.0, 25.0, 25.0])
    assert onset(few, base, offs) is None  # one occurrence is not evidence
    assert np.isnan(few["lo"]).all() and few["mean"].tolist() == [5.0, 5.0, 5.0]


def test_window_edges_and_unencoded_positions_are_not_counted():
    T_ = 6
    prof = ArticleProfile(d_sae=2, context_size=T_, forms={" a": 7, " an": 8}, before=3, after=1)
    state = prof.init_state()
    tok = np.array([7, 0, 0, 0, 0, 8, 0, 0, 8, 0, 0, 7])  # two windows of 6
    ordinary = np.array([i for i in range(12) if i != 7])  # position 7 is not encoded
    f = np.array([0, 1, 0])
    p = np.array([5, 4, 6])  # feature 0 on the " an" at 5; feature 1 before it; feature 0 at window 2's start
    v = np.array([2.0, 3.0, 5.0])
    prof.add(state, tok, ordinary, f, p, v)
    # offsets -3 -2 -1 0 1
    # " a" at 0: offsets 0, +1 (the rest lie before the window); at 11: -3..0 (+1 is past the window)
    # " an" at 5: -3..0 (+1 is in the next window); at 8: -2, 0, +1 (-3 is in the previous window, 7 not encoded)
    assert state["aligned_count"].tolist() == [[1, 1, 1, 2, 1], [1, 2, 1, 2, 1]]
    # firings at 6 (window 2, offset -2 of the " an" at 8) and at 5 (offset 0 of the " an" at 5)
    assert state["aligned_sum"][0].tolist() == [[0, 0, 0, 0, 0], [0, 5, 0, 2, 0]]
    assert state["aligned_sum"][1].tolist() == [[0, 0, 0, 0, 0], [0, 0, 3, 0, 0]]
    assert state["aligned_fired"][0, 1].tolist() == [0, 1, 0, 1, 0]


def test_the_forms_must_be_single_tokens(tiny_lm):
    forms, left_out = article_forms(tiny_lm.tokenizer)
    assert set(forms) == {" a", " an"} and " A" in left_out

    class Splitter:
        def encode(self, text, add_special_tokens=False):
            return [5, 6] if text == " an" else [5]

    forms, left_out = article_forms(Splitter())
    assert forms == {} and "2 tokens" in left_out[" an"]


def test_an_index_without_profiles_opens_and_says_how_to_rebuild(built, tmp_path, tiny_lm, monkeypatch):
    run, store, *_ = built
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "index" / "aligned.safetensors").unlink()
    m = json.loads((old / "index" / "manifest.json").read_text())
    del m["aligned"]
    (old / "index" / "manifest.json").write_text(json.dumps(m))
    index = FeatureIndex(old)
    assert index.feature(0).aligned is None
    assert "--force yes" in index.aligned_note and str(old) in index.aligned_note
    # a model whose articles are not single tokens: built, with a note and no file
    monkeypatch.setattr(build_mod, "article_forms", lambda tok: ({}, {" an": "2 tokens [5, 6]"}))
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    for f in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(run / f, skipped / f)
    build_index(IndexConfig(run=str(skipped), store=str(store), progress=False), lm=tiny_lm)
    index = FeatureIndex(skipped)
    assert not (skipped / "index" / "aligned.safetensors").exists()
    assert index.feature(0).aligned is None and "single tokens" in index.aligned_note
    assert index.manifest["aligned"]["left_out"] == {" an": "2 tokens [5, 6]"}
