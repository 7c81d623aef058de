"""TopKEncoderFP32 (the exact fp32 TopK encoder for machines without fast bf16) against
sae-lens's dense `encode` and the bf16 TopKEncoder, and how `sparse_encoder` chooses."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import sae.precision as saex_precision
from sae.index.encoder import DenseEncoder, NonFiniteInput, TopKEncoder, TopKEncoderFP32, sparse_encoder
from sae.index.stream import EncodeJob
from sae.runs.load import load_sae

HOOK = "blocks.0.hook_resid_post"
D = 32


def _save_topk(path, d_sae: int, k: int, seed: int = 0, bias: float = 0.0, twins: int = 0):
    """A TopK SAE saved by sae-lens itself, with random weights. bias shifts b_enc (negative:
    rows with fewer than k positive pre-activations); twins: latents 1, 3, 5, ... (that many)
    copy the encoder of latents 0, 2, 4, ... (exact ties in every row), and as many more
    pairs differ by one fp32 ulp in the bias (near-ties)."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=HOOK)))
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d_sae, generator=g) / D ** 0.5
    b = 0.1 * torch.randn(d_sae, generator=g) + bias
    for i in range(2 * twins):
        W[:, 2 * i + 1] = W[:, 2 * i]
        b[2 * i + 1] = b[2 * i] if i < twins else torch.nextafter(b[2 * i], torch.tensor(torch.inf))
    with torch.no_grad():
        sae.W_enc.copy_(W)
        sae.b_enc.copy_(b)
        sae.W_dec.copy_(torch.randn(d_sae, D, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(D, generator=g))
    sae.save_model(path)
    return load_sae(path)


def _data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) * torch.rand(n, 1, generator=g) * 4


def _near_tie_rows(sae, x: torch.Tensor, k: int) -> set[int]:
    """Rows whose k-th and (k+1)-th largest pre-activations (in float64) are positive and
    within 1e-5 (relative and absolute): there either latent may take the k-th place."""
    m = sae.sae
    pre = ((x.double() - m.b_dec.double()) @ m.W_enc.double() + m.b_enc.double()).topk(k + 1, dim=1).values
    kth, nxt = pre[:, k - 1], pre[:, k]
    return set(torch.nonzero((kth > 0) & (kth - nxt <= 1e-5 * kth.abs() + 1e-5)).flatten().tolist())


def _assert_same_codes(got: torch.Tensor, ref: torch.Tensor, ties: set[int]) -> None:
    """Equal codes, except that rows with a (near-)tie at the k-th place may take either
    latent there: the swapped values equal the row's k-th value up to fp32 rounding."""
    differ = ((got != 0) != (ref != 0)).any(1).nonzero().flatten().tolist()
    assert set(differ) <= ties, f"rows {sorted(set(differ) - ties)[:10]} differ without a tie at the k-th place"
    for r in differ:
        a, b = got[r], ref[r]
        kth = b[b != 0].min()
        swapped = torch.cat([a[(a != 0) & (b == 0)], b[(b != 0) & (a == 0)]])
        torch.testing.assert_close(swapped, kth.expand_as(swapped), rtol=1e-5, atol=1e-5)
    both = (got != 0) & (ref != 0)
    torch.testing.assert_close(got[both], ref[both], rtol=1e-5, atol=1e-5)


def _dense(codes, n: int, d_sae: int) -> torch.Tensor:
    return torch.from_numpy(codes.dense(n, d_sae))


# d_sae 300: blocks of one latent; 2000: blocks of 7 latents and 2 of padding; 4608: the demo's shape.
@pytest.mark.parametrize("d_sae,k,bias", [(300, 8, 0.0), (2000, 16, 0.0), (4608, 32, 0.0), (300, 8, -0.6)])
def test_fp32_encoder_equals_sae_lens_and_the_bf16_encoder(tmp_path, d_sae, k, bias):
    sae = _save_topk(tmp_path / "r", d_sae, k, seed=3, bias=bias, twins=20)
    x = _data(3000)
    x[:40] = sae.sae.b_dec  # pre-activations = b_enc in all these rows, twins tied exactly
    ref = sae.encode(x)
    ties = _near_tie_rows(sae, x, k)
    assert ties, "no ties to test"
    enc = TopKEncoderFP32(sae, block=700)
    if d_sae == 2000:
        assert (enc.width, enc.groups) == (7, 286)
    codes = enc(x)
    got = _dense(codes, len(x), d_sae)
    _assert_same_codes(got, ref, ties)
    assert np.all(np.diff(codes.rows) >= 0) and codes.rows.dtype == codes.cols.dtype == np.int64
    assert codes.vals.dtype == np.float32 and np.all(codes.vals > 0)
    assert enc.dense_rows == 0 and enc.rows_seen == len(x)
    if bias < 0:  # rows with fewer than k positive pre-activations, and rows with none
        nnz = (ref != 0).sum(1)
        assert ((nnz > 0) & (nnz < k)).sum() > 50 and (nnz == 0).sum() > 10
    _assert_same_codes(got, _dense(TopKEncoder(sae)(x), len(x), d_sae), ties)
    xb = x.bfloat16()  # as bf16 stores hold it
    _assert_same_codes(_dense(enc(xb), len(x), d_sae), sae.encode(xb.float()), _near_tie_rows(sae, xb.float(), k))


def test_blocks_and_threads_give_the_same_codes_as_one_call(tmp_path):
    sae = _save_topk(tmp_path / "r", 500, 8, seed=1)
    x = _data(2500, seed=1)
    enc = TopKEncoderFP32(sae, block=256)
    enc(x[:37])  # the per-thread buffer then grows
    whole = enc(x)
    blocks = [enc.encode_block(x[i:i + enc.block], i) for i in range(0, len(x), enc.block)]
    assert all(len(failed) == 0 for _, failed in blocks)
    for got in (enc.finish(x, blocks), EncodeJob(enc, x).result()):
        for f in ("rows", "cols", "vals"):
            np.testing.assert_array_equal(getattr(got, f), getattr(whole, f))
    # Two threads at once, as the index's stream runs it (each with its own output buffer).
    job = EncodeJob(enc, x)
    helper = threading.Thread(target=job.work)
    helper.start()
    got = job.result()
    helper.join()
    for f in ("rows", "cols", "vals"):
        np.testing.assert_array_equal(getattr(got, f), getattr(whole, f))
    assert len(enc(x[:0]).rows) == 0
    with pytest.raises(NonFiniteInput):
        enc(torch.full((4, D), float("nan")))


@pytest.fixture
def fresh_decision():
    saex_precision._decide.cache_clear()
    yield
    saex_precision._decide.cache_clear()


def test_sparse_encoder_takes_the_precision_asked_for(tmp_path, monkeypatch, fresh_decision):
    loaded = _save_topk(tmp_path / "r", 300, 8)
    fp32, bf16 = sparse_encoder(loaded, precision="fp32"), sparse_encoder(loaded, precision="bf16")
    assert type(fp32) is TopKEncoderFP32 and fp32.precision == "fp32" and fp32.decision is None
    assert fp32.precision_reason == "precision=fp32 asked for"
    assert type(bf16) is TopKEncoder and bf16.precision == "bf16" and bf16.decision is None
    assert type(sparse_encoder(loaded, fast=False)) is DenseEncoder
    with pytest.raises(ValueError, match="precision"):
        sparse_encoder(loaded, precision="fp16")
    monkeypatch.setenv("SAEX_FAST_BF16", "0")
    saex_precision._decide.cache_clear()
    auto = sparse_encoder(loaded)
    assert type(auto) is TopKEncoderFP32 and auto.precision == "fp32" and auto.decision.fast_bf16 is False
    assert "SAEX_FAST_BF16=0" in auto.precision_reason
    monkeypatch.setenv("SAEX_FAST_BF16", "1")
    saex_precision._decide.cache_clear()
    auto = sparse_encoder(loaded)
    assert type(auto) is TopKEncoder and auto.precision == "bf16" and auto.decision.fast_bf16 is True


def test_sparse_encoder_keeps_sae_lens_for_other_saes(tmp_path, monkeypatch, fresh_decision):
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    m = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D, d_sae=40, metadata=SAEMetadata(hook_name=HOOK)))
    m.save_model(tmp_path / "j")
    monkeypatch.setenv("SAEX_FAST_BF16", "0")
    for precision in ("auto", "fp32", "bf16"):
        enc = sparse_encoder(load_sae(tmp_path / "j"), precision=precision)
        assert type(enc) is DenseEncoder and enc.precision == "fp32" and "not a plain TopK SAE" in enc.precision_reason
