"""The feature index (sae/index/) against brute-force computations on
small stores: every statistic is recomputed here from sae-lens's dense encode with plain
loops, and the search API must find a feature planted to fire before a given token."""

from __future__ import annotations

import bisect
import json
import shutil

import numpy as np
import pytest
import torch

from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL
from sae.errors import SaexError
from sae.index.build import IndexConfig, build_index
from sae.index.encoder import DenseEncoder, NonFiniteInput, TopKEncoder
from sae.index.reader import FeatureIndex
from sae.index.search import by_current_token, by_label, by_output_token, by_upcoming_token, neighbours
from sae.index.stats import hist_edges, sample_priority
from sae.runs.load import load_sae
from saex.cli import main
from tests.helpers import assert_equal_nonempty, save_topk, write_store

HOOK = "blocks.0.hook_resid_post"  # the hook write_store records
D = 32  # d_model of the tiny model
W, T = 12, 16  # windows, tokens per window of the small store


def _save_topk(path, **kw):
    return save_topk(path, d_in=D, hook_name=HOOK, **kw)


@pytest.fixture(scope="module")
def data():
    """A 3-shard store: BOS-like special tokens at position 0, and outliers with huge
    activations that would top every feature if they were encoded."""
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(W, T, D, generator=g)
    flags = torch.zeros(W, T, dtype=torch.uint8)
    flags[:, 0] = FLAG_SPECIAL
    acts[:, 0] *= 30
    out = torch.randperm(W * T, generator=g)[:6]
    flags.view(-1)[out] |= FLAG_OUTLIER
    acts.view(-1, D)[out] *= 40
    rng = np.random.default_rng(2)
    tokens = rng.integers(3, 40, size=(W, T)).astype(np.int32)  # few distinct ids: pairs repeat
    for w in (6, 10):  # repeated text: exact ties between windows in other chunks and shards
        acts[w], flags[w], tokens[w] = acts[1], flags[1], tokens[1]
    return acts, flags, tokens


@pytest.fixture(scope="module")
def built(tmp_path_factory, data, tiny_lm):
    acts, flags, tokens = data
    root = tmp_path_factory.mktemp("features")
    store = write_store(root / "acts-heldout", acts, shard_windows=5, flags=flags, tokens=tokens)
    run = _save_topk(root / "run")
    cfg = IndexConfig(run=str(run), store=str(store), chunk_tokens=2 * T, top_k=5, reservoir=8, bands=3, per_band=2,
                      min_pair_count=1, profile_min_count=2, top_tokens=6, progress=False)
    build_index(cfg, lm=tiny_lm)
    return run, store, cfg


@pytest.fixture(scope="module")
def brute(built, data):
    """Everything recomputed from sae-lens's dense encode of the store."""
    run, _, cfg = built
    acts, flags, tokens = data
    sae = load_sae(run)
    with torch.no_grad():
        dense = sae.sae.encode(acts.reshape(-1, D)).reshape(W, T, -1).numpy().copy()
    dense[flags.numpy() != 0] = 0  # special and outlier positions are never encoded
    return dense


def _context(tokens, dense, f, w, t, before=10, after=5):
    span = [q for q in range(t - before, t + after + 1) if 0 <= q < T]
    return [int(tokens[w, q]) for q in span], [float(dense[w, q, f]) for q in span]


# --------------------------------------------------------------------------- encoding


def _assert_same_codes(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal codes, except that a tie at the k-th place (equal values, up to fp32 rounding)
    may go to either latent, as it does in torch.topk itself."""
    differ = ((got != 0) != (ref != 0)).any(1).nonzero().flatten()
    assert len(differ) <= max(2, len(got) // 500)
    for r in differ:
        a, b = got[r], ref[r]
        kth = b[b != 0].min()
        swapped = torch.cat([a[(a != 0) & (b == 0)], b[(b != 0) & (a == 0)]])
        torch.testing.assert_close(swapped, kth.expand_as(swapped), rtol=1e-5, atol=1e-6)
    both = (got != 0) & (ref != 0)
    torch.testing.assert_close(got[both], ref[both], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d_sae,k", [(300, 8), (2000, 16)])  # 2000: blocks of 7 latents and 2 of padding
def test_topk_encoder_equals_sae_lens_and_its_fallback_is_exercised(tmp_path, d_sae, k):
    run = _save_topk(tmp_path / "r", d_sae=d_sae, k=k, seed=3)
    sae = load_sae(run)
    if d_sae == 2000:
        enc = TopKEncoder(sae)
        assert (enc.width, enc.groups) == (7, 286)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, D, generator=g) * torch.rand(3000, 1, generator=g) * 4
    x[:50] = -x[:50].abs() - sae.sae.b_dec  # rows with few positive pre-activations
    ref = sae.encode(x)
    assert TopKEncoder(sae).single_rounding  # bf16 addmm adds the bias before its one rounding
    fallbacks = {}
    for margin, once in ((20, True), (0, True), (20, False)):  # margin 0: the proof fails often
        enc = TopKEncoder(sae, margin=margin, block=700)
        enc.single_rounding = once  # False: the bound also covers a rounding before the bias
        codes = enc(x)
        _assert_same_codes(torch.from_numpy(codes.dense(len(x), sae.d_sae)), ref)
        assert np.all(np.diff(codes.rows) >= 0)
        fallbacks[margin, once] = enc.dense_rows
    assert fallbacks[0, True] > fallbacks[20, True]
    xb = x.bfloat16()  # as bf16 stores hold it: fed to the bf16 matmul unrounded
    _assert_same_codes(torch.from_numpy(TopKEncoder(sae)(xb).dense(len(x), sae.d_sae)), sae.encode(xb.float()))
    with pytest.raises(NonFiniteInput):
        enc(torch.full((4, D), float("nan")))


def test_dense_encoder_handles_any_architecture(tmp_path):
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D, d_sae=40, metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.threshold.fill_(0.5)
    sae.save_model(tmp_path / "j")
    loaded = load_sae(tmp_path / "j")
    x = torch.randn(100, D)
    got, ref = torch.from_numpy(DenseEncoder(loaded, chunk=33)(x).dense(100, 40)), loaded.encode(x)
    assert torch.equal(got != 0, ref != 0)
    torch.testing.assert_close(got, ref)  # chunks of 33 rows: the matmul may round differently


# --------------------------------------------------------------------------- statistics


def test_density_mean_and_histograms_equal_brute_force(built, brute, data):
    run, _, _ = built
    index = FeatureIndex(run)
    fires = (brute != 0).sum((0, 1))
    n_tok = int((data[1].numpy() == 0).sum())
    assert index.tokens_indexed == n_tok
    assert np.array_equal(index.array("fires"), fires)
    np.testing.assert_allclose(index.array("density"), fires / n_tok, rtol=1e-6)
    sums = brute.sum((0, 1))
    np.testing.assert_allclose(index.array("mean_activation"), np.where(fires > 0, sums / np.maximum(fires, 1), 0),
                               rtol=1e-5)
    edges = [float(e) for e in hist_edges()]
    for f in range(brute.shape[2]):
        vals = brute[..., f][brute[..., f] != 0]
        counts = np.zeros(len(edges) - 1, int)
        for v in vals:
            counts[min(max(bisect.bisect_right(edges, abs(float(v))) - 1, 0), len(edges) - 2)] += 1
        page = index.feature(f)
        assert np.array_equal(page.hist_counts, counts), f
        assert (page.max_activation == pytest.approx(vals.max(), rel=1e-6) if len(vals)
                else np.isnan(page.max_activation))


def test_top_examples_equal_brute_force_and_skip_special_and_outlier_tokens(built, brute, data):
    run, _, cfg = built
    _, flags, tokens = data
    index = FeatureIndex(run)
    for f in range(brute.shape[2]):
        peaks = []
        for w in range(W):
            col = brute[w, :, f]
            if (col != 0).any():
                t = int(np.argmax(col))  # first position of the window's maximum
                peaks.append((-col[t], w * T + t))
        expected = sorted(peaks)[:cfg.top_k]
        got = index.feature(f).top_examples
        assert [(e.window, e.position) for e in got] == [divmod(g, T) for _, g in expected], f
        for e, (v, g) in zip(got, expected):
            assert e.value == pytest.approx(-v, rel=1e-5)
            assert flags[e.window, e.position] == 0
            toks, acts = _context(tokens, brute, f, *divmod(g, T))
            assert e.tokens == toks and e.tokens[e.center] == tokens[e.window, e.position]
            np.testing.assert_allclose(e.acts, acts, rtol=1e-5, atol=1e-6)


def test_quantile_band_examples_equal_brute_force(built, brute, data):
    run, _, cfg = built
    index = FeatureIndex(run)
    for f in range(brute.shape[2]):
        w, t = np.nonzero(brute[..., f])
        g = w * T + t
        prio = sample_priority(g, np.full(len(g), f), cfg.seed)
        sample = sorted(zip(prio.tolist(), g.tolist()))[:cfg.reservoir]  # bottom-k by (priority, position)
        by_value = sorted(sample, key=lambda pg: (-brute[pg[1] // T, pg[1] % T, f], pg[1]))
        bands = [list(b) for b in np.array_split(np.array(by_value, dtype=np.int64).reshape(-1, 2), cfg.bands)]
        page = index.feature(f)
        got = {b.band: b for b in page.bands}
        for b, members in enumerate(bands):
            if not len(members):
                assert b not in got
                continue
            picked = sorted((int(p), int(gg)) for p, gg in members)[:cfg.per_band]
            picked.sort(key=lambda pg: (-brute[pg[1] // T, pg[1] % T, f], pg[1]))
            assert [(e.window, e.position) for e in got[b].examples] == [divmod(gg, T) for _, gg in picked], (f, b)
            values = [brute[gg // T, gg % T, f] for _, gg in members]
            assert got[b].low == pytest.approx(min(values), rel=1e-6)
            assert got[b].high == pytest.approx(max(values), rel=1e-6)


def _pair_counts(brute, flags, tokens, offsets):
    """counts[d][(token, feature)], fires_at[d][f], token_count[d][token], positions_at[d]."""
    counts, fires_at, token_count, positions = [], [], [], []
    ordinary = flags.numpy() == 0
    for d in offsets:
        c, fa, tc, n = {}, np.zeros(brute.shape[2], int), {}, 0
        for w in range(W):
            for t in range(T - d):
                if ordinary[w, t]:
                    n += 1
                    tc[tokens[w, t + d]] = tc.get(tokens[w, t + d], 0) + 1
                    for f in np.flatnonzero(brute[w, t]):
                        c[(int(tokens[w, t + d]), int(f))] = c.get((int(tokens[w, t + d]), int(f)), 0) + 1
                        fa[f] += 1
        counts.append(c), fires_at.append(fa), token_count.append(tc), positions.append(n)
    return counts, fires_at, token_count, positions


def test_next_token_profiles_and_lifts_equal_brute_force(built, brute, data):
    run, _, cfg = built
    _, flags, tokens = data
    index = FeatureIndex(run)
    assert index.offsets == [0, 1, 2, 3]
    counts, fires_at, token_count, positions = _pair_counts(brute, flags, tokens, index.offsets)
    for f in range(brute.shape[2]):
        page = index.feature(f)
        for j, d in enumerate(index.offsets):
            rows = [(tok, c) for (tok, ff), c in counts[j].items() if ff == f]
            lift = {tok: (c / fires_at[j][f]) / (token_count[j][tok] / positions[j]) for tok, c in rows}
            by_count = sorted(rows, key=lambda r: (-r[1], r[0]))[:cfg.top_tokens]
            assert [(s.token, s.count) for s in page.following[d]] == by_count, (f, d)
            for s in page.following[d]:
                assert s.lift == pytest.approx(lift[s.token], rel=1e-5)
                assert s.precision == pytest.approx(s.count / fires_at[j][f], rel=1e-6)
            strong = [(tok, c) for tok, c in rows if c >= cfg.profile_min_count]
            by_lift = sorted(strong, key=lambda r: (-np.float32(lift[r[0]]), r[0]))[:cfg.top_tokens]
            assert [(s.token, s.count) for s in page.following_by_lift[d]] == by_lift, (f, d)


@pytest.mark.parametrize("rank", ["precision", "recall", "lift", "count", "f1"])
def test_token_searches_equal_brute_force(built, brute, data, rank):
    run, _, _ = built
    _, flags, tokens = data
    index = FeatureIndex(run)
    counts, fires_at, token_count, positions = _pair_counts(brute, flags, tokens, index.offsets)
    got, want = [], []  # (token, offset, feature) in rank order; (17, 3) ranks nothing, 11 pairs do
    for token in (5, 17, 30):
        for j, d in enumerate(index.offsets):
            rows = []
            for (tok, f), c in counts[j].items():
                if tok == token and c >= 2:
                    p, r = c / fires_at[j][f], c / token_count[j][tok]
                    score = {"precision": p, "recall": r, "lift": p / (token_count[j][tok] / positions[j]),
                             "count": c, "f1": 2 * p * r / (p + r)}[rank]
                    rows.append((-score, -c, f))
            want += [(token, d, f) for _, _, f in sorted(rows)[:10]]
            search = by_current_token if d == 0 else by_upcoming_token
            kw = {} if d == 0 else {"offset": d}
            got += [(token, d, h.feature) for h in search(index, token, top=10, min_count=2, rank=rank, **kw)]
    assert_equal_nonempty(got, want)


# --------------------------------------------------------------------------- weights


def test_output_effects_equal_a_hand_computation(built, tiny_lm):
    run, _, cfg = built
    index = FeatureIndex(run)
    w_dec = load_sae(run).sae.W_dec.detach()
    norm = tiny_lm.model.model.norm  # LlamaRMSNorm: its scale frozen, the direct effect is the gain times d
    U = tiny_lm.model.lm_head.weight.detach()
    effect = (w_dec * norm.weight) @ U.T
    effect = effect - effect.mean(1, keepdim=True)
    for f in (0, 7, 63):
        page = index.feature(f)
        want = effect[f].argsort(descending=True)[:cfg.top_tokens]
        assert [t for t, _, _ in page.boosted] == want.tolist()
        np.testing.assert_allclose([v for _, _, v in page.boosted], effect[f, want].numpy(), rtol=1e-4, atol=1e-5)
        low = effect[f].argsort()[:cfg.top_tokens]
        assert [t for t, _, _ in page.suppressed] == low.tolist()
    for token in (3, 100):
        want = effect[:, token].argsort(descending=True)[:10]
        hits = by_output_token(index, token, top=10)
        assert [h.feature for h in hits] == want.tolist()
        np.testing.assert_allclose([h.score for h in hits], effect[want, token].numpy(), rtol=1e-4, atol=1e-5)


def test_decoder_neighbours_equal_brute_force(built):
    run, _, cfg = built
    index = FeatureIndex(run)
    w = load_sae(run).sae.W_dec.detach()
    w = w / w.norm(dim=1, keepdim=True)
    cos = w @ w.T
    cos.fill_diagonal_(-2)
    for f in (0, 5, 40):
        want = cos[f].argsort(descending=True)[:cfg.neighbours]
        hits = neighbours(index, f)
        assert [h.feature for h in hits] == want.tolist()
        np.testing.assert_allclose([h.score for h in hits], cos[f, want].numpy(), rtol=1e-5)
        assert [n for n, _ in index.feature(f).neighbours] == want.tolist()


# --------------------------------------------------------------------------- lookahead search


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_lm):
    """A store in which feature 3 fires exactly one token before token X and nowhere else."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(5)
    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    others = [t for t in range(3, 60) if t != X]
    tokens = rng.choice(others, size=(40, T)).astype(np.int32)
    tokens[rng.random((40, T)) < 0.1] = X
    g = torch.Generator().manual_seed(6)
    acts = 0.3 * torch.randn(40, T, D, generator=g)
    before = np.zeros((40, T), bool)
    before[:, :-1] = tokens[:, 1:] == X
    acts[torch.from_numpy(before)] += 4 * torch.eye(D)[3]
    store = write_store(root / "acts-heldout", acts, shard_windows=16, tokens=tokens)
    b_enc = torch.zeros(16)
    b_enc[3] = -2.0  # without the planted signal feature 3 never wins the top-1
    run = _save_topk(root / "run", d_sae=16, k=1, W_enc=torch.eye(D)[:, :16], b_enc=b_enc,
                     W_dec=torch.eye(D)[:16])
    build_index(IndexConfig(run=str(run), store=str(store), progress=False), lm=tiny_lm)
    return FeatureIndex(run), X, before


def test_search_by_upcoming_token_finds_the_planted_feature(planted):
    index, X, before = planted
    for token in (X, index.vocab[X]):  # by id and by its text
        hits = by_upcoming_token(index, token, offset=1)
        assert hits[0].feature == 3
        assert hits[0].precision == pytest.approx(1.0)
        assert hits[0].count == int(before.sum())
        assert hits[0].lift > 5 and all(h.precision < 0.5 for h in hits[1:])
    on_x = [h for h in by_current_token(index, X, rank="precision", top=100) if h.feature == 3]
    assert not on_x or on_x[0].precision < 0.5  # it fires before X, not on it
    assert index.feature(3).following[1][0].token == X
    assert index.feature(3).following_by_lift[1][0].token == X


def test_search_by_label_takes_pairs_or_a_callable():
    labels = [(4, "about to say astronomer"), (9, "Astronomer"), (2, "stars"), (7, "astronomer names")]
    hits = by_label(labels, "astronomer")
    assert [h.feature for h in hits] == [9, 7, 4]
    assert [h.feature for h in by_label(lambda: iter(labels), "say ASTRONOMER")] == [4]
    with pytest.raises(SaexError, match="empty"):
        by_label(labels, "  ")


# --------------------------------------------------------------------------- format, resume, errors


def test_a_feature_page_reads_only_its_own_slices(built):
    run, _, _ = built
    index = FeatureIndex(run)
    index.feature(11)
    assert set(index._cache) <= {"hist_edges", "fires_at"}  # small global arrays only
    m = json.loads((run / "index" / "manifest.json").read_text())
    assert m["tokens_indexed"] == index.tokens_indexed and m["d_sae"] == 64
    assert len(index.vocab) == index.vocab_size
    page = index.feature(0)
    assert page.boosted[0][1] == index.vocab[page.boosted[0][0]]


def _arrays(run):
    from safetensors.numpy import load_file

    out = {}
    for name in ("features.safetensors", "search.safetensors"):
        out.update(load_file(str(run / "index" / name)))
    return out


def test_an_interrupted_build_resumes_to_the_same_index(tmp_path, built, tiny_lm, monkeypatch):
    from sae.index.stats import FeatureStats

    run, store, cfg = built
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for f in ("cfg.json", "sae_weights.safetensors"):
            shutil.copy(run / f, tmp_path / name / f)
    kw = cfg.content() | {"store": str(store), "chunk_tokens": cfg.chunk_tokens,
                                                             "progress": False, "checkpoint_seconds": 0}
    build_index(IndexConfig(run=str(tmp_path / "a"), **kw), lm=tiny_lm)
    real_add, calls = FeatureStats.add, []

    def add_then_die(self, *a, **k):
        calls.append(1)
        if len(calls) == 5:  # in the second shard (3 chunks of 2 windows per shard of 5)
            raise KeyboardInterrupt
        return real_add(self, *a, **k)

    monkeypatch.setattr(FeatureStats, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(IndexConfig(run=str(tmp_path / "b"), **kw), lm=tiny_lm)
    monkeypatch.setattr(FeatureStats, "add", real_add)
    assert (tmp_path / "b" / "index" / "partial" / "state.safetensors").exists()
    with pytest.raises(SaexError, match="did not finish"):
        FeatureIndex(tmp_path / "b")
    build_index(IndexConfig(run=str(tmp_path / "b"), **kw), lm=tiny_lm)
    m = json.loads((tmp_path / "b" / "index" / "manifest.json").read_text())
    assert m["resumed_after_shard"] == 1
    assert not (tmp_path / "b" / "index" / "partial").exists()
    a, b = _arrays(tmp_path / "a"), _arrays(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


def test_the_index_does_not_depend_on_the_chunking(tmp_path, built, tiny_lm):
    """One window per chunk, and whole shards per chunk, give the fixture's index (chunks of
    two windows, with the smaller first and last chunks of the streaming pass)."""
    run, store, cfg = built
    kw = cfg.content() | {"store": str(store), "progress": False}
    for name, chunk in (("one", T), ("whole", 64 * T)):
        (tmp_path / name).mkdir()
        for f in ("cfg.json", "sae_weights.safetensors"):
            shutil.copy(run / f, tmp_path / name / f)
        build_index(IndexConfig(run=str(tmp_path / name), chunk_tokens=chunk, **kw), lm=tiny_lm)
        a, b = _arrays(run), _arrays(tmp_path / name)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), (name, k)


def test_a_complete_index_is_reused_and_other_settings_rebuild_it(built, tiny_lm, capsys):
    run, store, cfg = built
    before = (run / "index" / "manifest.json").stat().st_mtime_ns
    build_index(cfg, lm=tiny_lm)
    assert "already complete" in capsys.readouterr().err
    assert (run / "index" / "manifest.json").stat().st_mtime_ns == before
    other = IndexConfig(**{**cfg.__dict__, "top_k": 3})
    build_index(other, lm=tiny_lm)
    assert len(FeatureIndex(run).feature(0).top_examples) <= 3
    build_index(cfg, lm=tiny_lm)  # back to the fixture's settings for the other tests
    assert len(FeatureIndex(run).feature(0).top_examples) == 5


def test_cli_builds_the_index_and_bad_input_exits_2(built, tiny_model_dir, tmp_path, capsys):
    run, store, _ = built
    (tmp_path / "r").mkdir()
    for f in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(run / f, tmp_path / "r" / f)
    assert main(["index", str(tmp_path / "r"), "--store", str(store), "--model", str(tiny_model_dir),
                 "--progress", "no", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "features" in out and str(tmp_path / "r" / "index") in out
    assert len(FeatureIndex(tmp_path / "r").feature(1).top_examples) <= 3
    assert main(["index", str(tmp_path / "nowhere"), "--store", str(store), "--progress", "no"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "r"), "--top-k", "0"]) == 2
    assert "top_k must be at least 1" in capsys.readouterr().err


def test_bad_input_gets_one_clear_error(built, tiny_lm, tmp_path, data):
    run, store, cfg = built
    with pytest.raises(SaexError, match="no run folder"):
        IndexConfig()
    with pytest.raises(SaexError, match="reservoir"):
        IndexConfig(run="x", reservoir=3, bands=2, per_band=2)
    with pytest.raises(SaexError, match="no complete feature index"):
        FeatureIndex(tmp_path)
    index = FeatureIndex(run)
    with pytest.raises(SaexError, match="does not exist"):
        index.feature(64)
    with pytest.raises(SaexError, match="not a single token"):
        by_upcoming_token(index, "no such token at all")
    with pytest.raises(SaexError, match="outside the vocabulary"):
        by_current_token(index, 10 ** 6)
    with pytest.raises(SaexError, match="offset 9"):
        by_upcoming_token(index, 5, offset=9)
    with pytest.raises(SaexError, match="at least 1"):
        by_upcoming_token(index, 5, offset=0)
    with pytest.raises(SaexError, match="unknown ranking"):
        by_current_token(index, 5, rank="best")
    # a store of another width, and NaN activations
    acts, flags, tokens = data
    wide = write_store(tmp_path / "wide", torch.randn(2, T, D + 1), tokens=tokens[:2])
    with pytest.raises(SaexError, match="d_model|dimensional"):
        build_index(IndexConfig(run=str(run), store=str(wide), progress=False), lm=tiny_lm)
    bad = acts.clone()
    bad[7, 3, 0] = float("nan")
    nan_store = write_store(tmp_path / "nan", bad, shard_windows=5, flags=flags, tokens=tokens)
    (tmp_path / "r2").mkdir()
    for f in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(run / f, tmp_path / "r2" / f)
    threads = torch.get_num_threads()
    with pytest.raises(SaexError, match="NaN/inf activations in shard 1"):
        build_index(IndexConfig(run=str(tmp_path / "r2"), store=str(nan_store), progress=False), lm=tiny_lm)
    assert not (tmp_path / "r2" / "index" / "manifest.json").exists()
    assert torch.get_num_threads() == threads  # the stream halves torch's threads while it runs, then restores them


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_during_a_build_then_rerun_gives_the_same_index(tmp_path, tiny_model_dir, seed):
    """SIGKILL at a random moment after the build has saved its state at least once; the
    rerun resumes and the index equals an uninterrupted build's, array for array."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    g = torch.Generator().manual_seed(seed)
    # Long enough (240 windows, 120 shards) that a kill up to 0.1 s after the first saved
    # state always lands mid-build, however fast the machine.
    acts = torch.randn(240, T, D, generator=g)
    tokens = np.random.default_rng(seed).integers(3, 40, size=(240, T)).astype(np.int32)
    store = write_store(tmp_path / "acts-heldout", acts, shard_windows=2, tokens=tokens)
    runs = []
    for name in ("whole", "killed"):
        runs.append(_save_topk(tmp_path / name))
    root = __import__("pathlib").Path(__file__).resolve().parents[1]

    def cmd(run):
        return [sys.executable, "-m", "saex", "index", str(run), "--store", str(store), "--model",
                str(tiny_model_dir), "--chunk-tokens", str(T), "--checkpoint-seconds", "0", "--top-k", "5",
                "--reservoir", "8", "--bands", "3", "--per-band", "2", "--progress", "false", "--device", "cpu"]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd(runs[0]), check=True, cwd=root, env=env, capture_output=True)
    proc = subprocess.Popen(cmd(runs[1]), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = runs[1] / "index" / "partial" / "state.safetensors"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(random.Random(seed).uniform(0, 0.1))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (runs[1] / "index" / "manifest.json").exists(), "the build finished before the kill: make it longer"
    with pytest.raises(SaexError):
        FeatureIndex(runs[1])  # a killed build never loads as complete
    done = subprocess.run(cmd(runs[1]), cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((runs[1] / "index" / "manifest.json").read_text())["resumed_after_shard"] is not None
    a, b = _arrays(runs[0]), _arrays(runs[1])
    assert a.keys() == b.keys()
    for k in a:
        if k != "manifest":
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


def test_pair_counts_are_the_same_whether_runs_merge_early_or_at_the_end():
    """Each chunk's (offset, token, feature) keys become a sorted run, split among key-range
    buckets; a bucket merges when its pending runs pass the budget, and all merge at flush.
    The counts must not depend on when: both equal a count with np.unique over the same
    firings."""
    from sae.index.stats import FeatureStats

    rng = np.random.default_rng(5)
    n_win, F, V, per = 12, 30, 9, 3
    tokens = rng.integers(0, V, size=(n_win, T)).astype(np.int32)
    chunks = []
    for w0 in range(0, n_win, per):
        pos = np.arange(per * T)
        f = np.stack([rng.integers(0, F, len(pos)), rng.integers(0, F, len(pos))], 1)
        f[:, 1] = np.where(f[:, 1] == f[:, 0], (f[:, 0] + 1) % F, f[:, 1])  # two distinct features
        chunks.append((w0, pos, f.reshape(-1), np.repeat(pos, 2)))
    tables = []
    for budget in (1, 10 ** 9):  # 1: every bucket merges at once, and the state is flushed after every chunk
        stats = FeatureStats(F, V, T, top_k=2, reservoir=2, lookahead=2, pair_buckets=5, bucket_budget=budget)
        for w0, pos, f, p in chunks:
            stats.add(w0 * T, tokens[w0:w0 + per], pos, f, p, np.ones(len(f), np.float32))
            if budget == 1:
                stats.flush()
        tables.append(stats.pair_tables())
    for k in tables[0]:
        assert np.array_equal(tables[0][k], tables[1][k]), k
    brute = []
    for w0, _, f, p in chunks:
        win, t = w0 + p // T, p % T
        for d in range(3):
            ok = t + d < T
            brute.append(((d * V + tokens[win[ok], t[ok] + d]) * F + f[ok]).astype(np.int64))
    key, count = np.unique(np.concatenate(brute), return_counts=True)
    assert np.array_equal(tables[0]["pair_key"], key)
    assert np.array_equal(tables[0]["pair_count"], count)


# --------------------------------------------------------------------------- words of several tokens


def test_a_word_of_several_tokens_is_searched_on_its_first_piece(planted, tiny_lm):
    from sae.index.search import first_piece

    index, X, before = planted
    word = " astronomers"
    ids = tiny_lm.tokenizer.encode(word, add_special_tokens=False)
    assert len(ids) >= 2 and ids[0] == X and word not in index.vocab
    for tok in (tiny_lm.tokenizer, None):  # the model's split, and the greedy fallback on the vocabulary
        piece = first_piece(index, word, tokenizer=tok)
        assert piece.query == X and piece.ids == ids
        assert piece.note.startswith(f"' astronomers' is {len(ids)} tokens (' astronomer', ")
        assert "searching on the first, ' astronomer'" in piece.note
        assert ("index's vocabulary" in piece.note) == (tok is None)
        assert by_upcoming_token(index, piece.query, offset=1)[0].feature == 3
    single = first_piece(index, " astronomer", tokenizer=tiny_lm.tokenizer)
    assert single.query == " astronomer" and single.note is None
    assert first_piece(index, X).query == X
    bare = first_piece(index, "astronomer", tokenizer=tiny_lm.tokenizer)
    if "astronomer" not in index.vocab:
        assert "With its leading space, ' astronomer' is a single token" in bare.note
    with pytest.raises(SaexError, match="no token"):
        first_piece(index, "")


def test_an_empty_search_says_how_often_the_token_occurs(planted):
    from sae.index.search import no_hits_sentence

    index, X, _ = planted
    n = int(index.array("token_count")[index.offsets.index(2)][X])
    assert by_upcoming_token(index, X, offset=2, min_count=10 ** 6) == []
    text = no_hits_sentence(index, X, offset=2, min_count=10 ** 6)
    times = "once" if n == 1 else f"{n:,} times"
    assert f"' astronomer' occurs only {times} at distance 2 after an indexed token" in text
    assert "fire 2 tokens before it at least 1000000 times" in text and "seen at least 2 times" in text
    assert f"({index.tokens_indexed:,} indexed tokens)" in text
    assert by_upcoming_token(index, X, offset=2, min_count=n) == []
    assert f"occurs {times} at distance 2 after an indexed token" in no_hits_sentence(index, X, 2, min_count=n)
    unseen = next(t for t in range(100, 400) if t != X and index.array("token_count")[1][t] == 0)
    assert "never occurs" in no_hits_sentence(index, unseen, offset=1, min_count=3)
    few = no_hits_sentence(index, X, offset=0, min_count=10 ** 6)
    assert "in the" in few and "indexed tokens" in few and "fire on it" in few


def test_out_puts_the_index_elsewhere_and_the_pair_tables_are_bounded(built, tiny_lm, tmp_path):
    run, store, cfg = built
    before = (run / "index" / "manifest.json").stat().st_mtime_ns
    kw = cfg.content() | {"store": str(store), "progress": False,
                                                             "chunk_tokens": cfg.chunk_tokens}
    out = build_index(IndexConfig(run=str(run), out=str(tmp_path / "index-train"), **kw), lm=tiny_lm)
    assert out == tmp_path / "index-train"
    assert (run / "index" / "manifest.json").stat().st_mtime_ns == before  # the run's own index is untouched
    a, b = FeatureIndex(run), FeatureIndex(out)
    assert b.manifest["pair_entries"] == a.manifest["pair_entries"] > 0
    assert np.array_equal(a.array("pair_count"), b.array("pair_count"))
    with pytest.raises(SaexError, match="reached .* entries, more than max_pair_entries = 10") as e:
        build_index(IndexConfig(run=str(run), out=str(tmp_path / "small"), max_pair_entries=10, **kw), lm=tiny_lm)
    assert "--max-pair-entries" in e.value.fix
