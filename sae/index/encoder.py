"""Sparse SAE codes for many vectors at once, equal to sae-lens's dense `encode`.

The feature index encodes every token of a held-out store, so encoding speed is the
index's speed. sae-lens computes a dense fp32 matmul and then keeps k of d_sae values;
for a TopK SAE on CPU that matmul and the top-k over d_sae columns cost most of the time.
Two encoders get the same codes faster and exactly; `sparse_encoder` picks one by what is
fast on this machine (`sae.precision`: a timed probe, or `SAEX_FAST_BF16=0/1`):

`TopKEncoder`, where bf16 matmuls are fast (native bf16: AVX-512 BF16, AMX):

1. a bf16 matmul (about 4x the fp32 speed) ranks the pre-activations approximately;
2. per row, the latents whose bf16 value reaches a threshold are kept as candidates:
   about k + margin of them. The threshold comes from the maxima of blocks of latents, and
   only blocks whose maximum reaches it are searched, with integer compares on the bf16
   bit patterns (`torch.topk` over d_sae columns is slower than the matmul on CPU);
3. the candidates' pre-activations are recomputed in fp32 (a sampled matrix product over
   just those pairs) and the k largest kept;
4. a bound on the bf16 error (input and weight rounding, output rounding, fp32
   accumulation) proves, row by row, that no latent below the threshold could beat the
   k-th exact value. Rows where the proof fails (under 1% on real data) are encoded
   densely in fp32, so the result equals sae-lens's whatever the data, up to fp32
   rounding: a near-tie at the k-th place (within ~1e-6 relative) can go either way, as it
   does in sae-lens itself between batch sizes.

`TopKEncoderFP32`, everywhere else. On CPUs without native bf16 (AVX2 only) torch emulates
bf16 matmuls at 1/10 to 1/100 of the fp32 speed: under AVX2 emulation TopKEncoder ran ~35x
slower than this encoder at 576 -> 4608 latents. It computes the fp32 matmul sae-lens
computes, into a reused per-thread buffer, then runs the same block-maxima candidate search
(step 2; the values are exact, so the threshold is the k-th largest block maximum, step 3
only keeps the k largest, and no proof or fallback is needed). It skips sae-lens's top-k
over d_sae columns and its dense output: about 1.4x sae-lens's speed at 576 -> 4608
latents, k 32 (a plain top-k after the same matmul: about 1.25x).

Other architectures (and TopK SAEs with input normalisation or decoder-norm rescaling)
go through `DenseEncoder`, which calls sae-lens's own `encode`.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sae.precision import Speed, resolve
from sae.runs.load import LoadedSAE

# CSR tensors are "beta" in torch; the one product used here is tested against sae-lens.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

_FP32_UNIT = 2.0 ** -24


@dataclass
class Codes:
    """Non-zero latent activations of n vectors: entry i is latent `cols[i]` of vector
    `rows[i]` with value `vals[i]`. Rows ascend; columns within a row are unordered."""

    rows: np.ndarray  # int64
    cols: np.ndarray  # int64
    vals: np.ndarray  # float32

    def dense(self, n: int, d_sae: int) -> np.ndarray:
        out = np.zeros((n, d_sae), dtype=np.float32)
        out[self.rows, self.cols] = self.vals
        return out


def _codes_from_dense(acts: torch.Tensor, row_offset: int = 0) -> Codes:
    nz = acts.nonzero()  # != 0, not > 0: signed architectures (AbsTopK) count too
    rows, cols = nz[:, 0], nz[:, 1]
    return Codes((rows + row_offset).cpu().numpy(), cols.cpu().numpy(), acts[rows, cols].float().cpu().numpy())


def _concat(parts: list[Codes]) -> Codes:
    if not parts:
        return Codes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return Codes(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("rows", "cols", "vals")))


class BlockEncoder:
    """What the index's encoders share: `block` rows at a time go through `encode_block`
    (which threads may call on parts of one chunk, see sae.index.build) and `finish`
    assembles the blocks' codes in order."""

    block: int

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> Codes:
        """x "n d_in" (any float dtype, CPU) -> the codes sae-lens's encode gives."""
        return self.finish(x, [self.encode_block(x[i:i + self.block], i) for i in range(0, len(x), self.block)])

    def encode_block(self, x: torch.Tensor, offset: int) -> tuple[Codes, np.ndarray]:
        raise NotImplementedError

    def finish(self, x: torch.Tensor, blocks: list[tuple[Codes, np.ndarray]]) -> Codes:
        raise NotImplementedError


class DenseEncoder(BlockEncoder):
    """sae-lens's `encode` in chunks, turned into sparse codes. Any architecture, any device.

    Like `TopKEncoder`, it encodes `block` rows at a time (`encode_block`) and assembles the
    blocks (`finish`), so that several threads can share one chunk (see sae.index.build)."""

    precision = "fp32"  # sae-lens's own computation

    def __init__(self, sae: LoadedSAE, chunk: int = 4096):
        self.sae, self.block = sae, chunk
        self.decision: Speed | None = None  # what sparse_encoder's choice rested on, if it asked
        self.precision_reason: str | None = None  # why sparse_encoder chose this (manifests record it)

    def encode_block(self, x: torch.Tensor, offset: int) -> tuple[Codes, np.ndarray]:
        xi = x.float()
        check_finite(xi)
        return _codes_from_dense(self.sae.encode(xi), offset), np.zeros(0, np.int64)

    def finish(self, x: torch.Tensor, blocks: list[tuple[Codes, np.ndarray]]) -> Codes:
        return _concat([c for c, _ in blocks])


def exact_pre_acts(xc: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor, starts: torch.Tensor,
                   counts: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(xc @ w_enc + b_enc) in fp32 at the pairs (row i, cols[starts[i] : starts[i] + counts[i]]),
    computed only there (a sampled dense-dense product: no n x d_sae matrix)."""
    n = len(starts)
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(counts, 0)
    pattern = torch.sparse_csr_tensor(crow, cols, torch.zeros(len(cols)), size=(n, w_enc.shape[1]),
                                      check_invariants=False)
    dots = torch.sparse.sampled_addmm(pattern, xc, w_enc, beta=0.0).values()
    return dots + b_enc[cols]


class TopKEncoder(BlockEncoder):
    """Exact sparse codes of a TopK SAE from a bf16 prefilter (see the module docstring).

    margin: how many candidates beyond k the threshold aims at; more makes the per-row
    proof succeed more often (fewer dense fallbacks) at the cost of more exact work.
    block: rows per bf16 matmul (`encode_block`). Its output buffer is reused per thread:
    a fresh 75 MB output (8192 rows) page-faulted in on every call made the encoder run at
    0.75x. 1024-row blocks encode as fast as 8192-row ones and let two threads share a chunk
    finely (sae.index.build)."""

    precision = "bf16"  # the prefilter's; the codes are exact fp32

    def __init__(self, sae: LoadedSAE, margin: int = 20, block: int = 1024):
        m = sae.sae
        if not supports_fast_topk(sae):
            raise ValueError("TopKEncoder needs a plain TopK SAE (see supports_fast_topk)")
        self.k = int(sae.cfg["k"])
        self.d_sae = sae.d_sae
        self.k2 = min(self.k + margin, self.d_sae)
        self.block = block
        W = m.W_enc.detach().float().cpu()
        self.W = W
        self.W_cols = W.t().contiguous().t()  # column-major: the sampled product reads columns
        self.b_enc = m.b_enc.detach().float().cpu()
        self.b_dec = (m.b_dec.detach().float().cpu() if m.cfg.apply_b_dec_to_input else torch.zeros(sae.d_in))
        # Latents fall into G blocks of `width` consecutive latents (G >= 4 * k2 where
        # possible) whose maxima give each row a threshold; -inf padding makes the blocks
        # even. The bf16 weights are stored block-strided (output column w * G + g holds
        # latent g * width + w), so the block maxima are an elementwise max of `width`
        # contiguous rows of G values, and a block's values gather as one strided row.
        self.width, self.groups = _block_shape(self.d_sae, self.k2)
        pad = self.groups * self.width - self.d_sae
        W_hi = W.bfloat16()
        self.W_hi = _block_strided(torch.cat([W_hi, torch.zeros(W.shape[0], pad, dtype=torch.bfloat16)], 1),
                                   self.groups, self.width)
        # The bf16 pass reads x itself, not x - b_dec: activations stored in bf16 then go in
        # without a rounding (or a conversion pass), and b_dec moves into the bias.
        c = (self.b_enc.double() - self.b_dec.double() @ W.double()).float()
        c_hi = c.bfloat16()
        self.b_hi = _block_strided(torch.cat([c_hi, torch.full((pad,), -torch.inf, dtype=torch.bfloat16)])[None],
                                   self.groups, self.width)[0]
        W_lo = W - W_hi.float()
        self.norm_hi = float(W_hi.float().norm(dim=0).max())
        self.norm_lo = float(W_lo.norm(dim=0).max())
        self.bias_err = float((c - c_hi.float()).abs().max()) + 1e-6 * float(c.abs().max())  # + c's own rounding
        self.bias_max = float(c_hi.float().abs().max())
        self.single_rounding = _addmm_rounds_once(self.W_hi.shape)
        self._local = threading.local()  # per thread: the bf16 matmul's output, reused between blocks
        self.dense_rows = 0  # rows that needed the dense fallback (for the benchmark)
        self.rows_seen = 0
        self.decision: Speed | None = None  # what sparse_encoder's choice rested on, if it asked
        self.precision_reason: str | None = None  # why sparse_encoder chose this (manifests record it)

    # ------------------------------------------------------------------ pieces

    def _error_bound(self, n_hi: torch.Tensor, n_lo: torch.Tensor | None) -> torch.Tensor:
        """Per row: a bound on |exact pre-activation - the bf16 matmul's fp32 accumulator|
        for every latent (Cauchy-Schwarz on each rounding term, plus fp32 accumulation).
        n_hi: the norms of the rows as fed to the bf16 matmul; n_lo: the norms of their
        rounding errors (None when the input was bf16 already: no rounding)."""
        accumulate = (self.W.shape[0] + 1) * _FP32_UNIT * (n_hi * self.norm_hi + self.bias_max)
        rounding = n_hi * self.norm_lo + self.bias_err
        if n_lo is not None:
            rounding = rounding + n_lo * self.norm_hi + n_lo * self.norm_lo
        return 1.02 * (rounding + accumulate)  # 2% for the fp32 rounding of this bound itself

    def _candidates(self, pre: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, every latent whose bf16 pre-activation reaches the row's threshold: the
        k2-th largest of the G block maxima, so at least k2 latents reach it, and not many
        more. Only the blocks whose maximum reaches it are searched.

        pre: "n width*G" bf16 pre-activations in the block-strided layout, read as int16
        bit patterns: for positive bf16 values integer order is numeric order (negative
        values are negative integers), and integer compares are cheaper than bf16 ones on
        CPU. Returns (rows, latents, threshold bits per row), rows ascending and latents
        ascending within a row (CSR order)."""
        rows, latents, _, thr = _block_candidates(pre.view(torch.int16), self.groups, self.width, self.k2)
        return rows, latents, thr

    def _dense_rows(self, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sae-lens's computation for a few rows: fp32 matmul, top-k, relu."""
        pre = torch.addmm(self.b_enc, xc, self.W)
        v, idx = pre.topk(self.k, dim=1, sorted=False)
        return v.relu(), idx

    # ------------------------------------------------------------------ encode

    @torch.no_grad()
    def finish(self, x: torch.Tensor, blocks: list[tuple[Codes, np.ndarray]]) -> Codes:
        """The codes of x from its blocks' `encode_block` results (in order): the unproven
        rows of every block are encoded densely together (a matmul per block would read W
        each time), and entries that are not positive are dropped."""
        parts = [c for c, _ in blocks]
        failed = np.concatenate([f for _, f in blocks]) if blocks else np.zeros(0, np.int64)
        self.rows_seen += len(x)
        self.dense_rows += len(failed)
        if len(failed):
            xf = x[torch.from_numpy(failed)].float().sub_(self.b_dec)
            v, idx = self._dense_rows(xf)
            parts.append(Codes(failed.repeat(self.k), idx.reshape(-1).numpy(), v.reshape(-1).numpy()))
        out = _concat(parts)
        if len(failed):
            order = np.argsort(out.rows, kind="stable")
            out = Codes(out.rows[order], out.cols[order], out.vals[order])
        pos = out.vals > 0
        return Codes(out.rows[pos], out.cols[pos].astype(np.int64), out.vals[pos].astype(np.float32))

    @torch.no_grad()
    def encode_block(self, x: torch.Tensor, offset: int) -> tuple[Codes, np.ndarray]:
        """The codes of the rows of x (at most `block` of them) whose top k the bf16 pass
        proves (values not yet clipped at 0), and the other rows (offset added to both).
        Threads may call it at once."""
        check_finite(x)
        n, k = len(x), self.k
        xf = x.float()
        if x.dtype == torch.bfloat16:  # fed to the bf16 matmul unrounded
            x_hi, n_hi, n_lo = x, torch.linalg.vector_norm(xf, dim=1), None
        else:
            x_hi = x.bfloat16()
            lo = xf - x_hi.float()
            n_hi, n_lo = torch.linalg.vector_norm(x_hi.float(), dim=1), torch.linalg.vector_norm(lo, dim=1)
        xc = xf.sub_(self.b_dec) if xf is not x else x - self.b_dec  # fp32, as sae-lens computes it
        out = getattr(self._local, "out", None)
        if out is None or len(out) < n:
            out = self._local.out = torch.empty(n, self.W_hi.shape[1], dtype=torch.bfloat16)
        pre = torch.addmm(self.b_hi, x_hi, self.W_hi, out=out[:n])
        rows, cols, thr = self._candidates(pre)
        counts = np.bincount(rows, minlength=n)
        starts = np.cumsum(counts) - counts
        exact = exact_pre_acts(xc, self.W_cols, self.b_enc, torch.from_numpy(starts), torch.from_numpy(counts),
                               torch.from_numpy(cols)).numpy()
        # The k best exact values of each row: one sort of (row, value, index in row). Values
        # at or below 0 count as 0: relu drops them, and a row whose k-th value is not
        # positive fails the proof below and goes dense.
        local = np.arange(len(rows)) - starts[rows]
        lb = bit_width(int(counts.max(initial=1)))
        descending = 0x7FFFFFFF - np.maximum(exact, 0).view(np.int32).astype(np.int64)
        order = np.sort((rows << (31 + lb)) | (descending << lb) | local)
        enough = counts >= k
        pick = (starts[enough][:, None] + np.arange(k)).reshape(-1)
        at = starts[enough].repeat(k) + (order[pick] & ((1 << lb) - 1))
        vals = exact[at].reshape(-1, k)
        chosen = cols[at].reshape(-1, k)
        # Every latent left out has a bf16 value below the row's threshold t, so its exact
        # value is below t + one bf16 ulp of t (output rounding) + the rounding bound.
        t = torch.from_numpy(thr.astype(np.int16)).view(torch.bfloat16).float()
        ulp = t.abs() * 2.0 ** -7 if self.single_rounding else (t.abs() + self.bias_max) * 2.0 ** -7
        bound = (t + ulp + self._error_bound(n_hi, n_lo)).numpy()
        proven = np.zeros(n, bool)
        proven[enough] = vals[:, -1] > bound[enough]  # vals[:, -1]: each row's k-th largest
        ok = proven[enough]
        codes = Codes(np.flatnonzero(enough)[ok].repeat(k) + offset, chosen[ok].reshape(-1), vals[ok].reshape(-1))
        return codes, np.flatnonzero(~proven) + offset


class TopKEncoderFP32(BlockEncoder):
    """Exact sparse codes of a TopK SAE from sae-lens's own fp32 matmul, for machines
    without fast bf16 (see the module docstring). Same interface as `TopKEncoder`.

    block: rows per fp32 matmul (`encode_block`), into an output buffer reused per thread
    (two threads share a chunk, sae.index.build). The weights are stored block-strided, as
    TopKEncoder stores its bf16 ones, so that the block maxima are an elementwise max."""

    precision = "fp32"

    def __init__(self, sae: LoadedSAE, block: int = 1024):
        m = sae.sae
        if not supports_fast_topk(sae):
            raise ValueError("TopKEncoderFP32 needs a plain TopK SAE (see supports_fast_topk)")
        self.k = int(sae.cfg["k"])
        self.d_sae = sae.d_sae
        self.block = block
        W = m.W_enc.detach().float().cpu()
        b_enc = m.b_enc.detach().float().cpu()
        self.b_dec = (m.b_dec.detach().float().cpu() if m.cfg.apply_b_dec_to_input else torch.zeros(sae.d_in))
        # The k-th largest block maximum is the threshold: at least k latents reach it (the
        # block maxima), and since the values are exact, every one of the top k does.
        self.width, self.groups = _block_shape(self.d_sae, self.k)
        pad = self.groups * self.width - self.d_sae
        self.W = _block_strided(torch.cat([W, torch.zeros(W.shape[0], pad)], 1), self.groups, self.width)
        self.b_enc = _block_strided(torch.cat([b_enc, torch.full((pad,), -torch.inf)])[None],
                                    self.groups, self.width)[0]  # padding never reaches a threshold
        self._local = threading.local()  # per thread: the matmul's output, reused between blocks
        self.dense_rows = 0  # no dense fallback here (the manifest's field, as for TopKEncoder)
        self.rows_seen = 0
        self.decision: Speed | None = None  # what sparse_encoder's choice rested on, if it asked
        self.precision_reason: str | None = None  # why sparse_encoder chose this (manifests record it)

    def finish(self, x: torch.Tensor, blocks: list[tuple[Codes, np.ndarray]]) -> Codes:
        """The codes of x from its blocks' `encode_block` results, in order."""
        self.rows_seen += len(x)
        return _concat([c for c, _ in blocks])

    @torch.no_grad()
    def encode_block(self, x: torch.Tensor, offset: int) -> tuple[Codes, np.ndarray]:
        """The codes of the rows of x (at most `block` of them; offset added to the rows) and
        no unproven rows. Threads may call it at once."""
        check_finite(x)
        n, k = len(x), self.k
        xc = torch.sub(x.float(), self.b_dec)  # fp32, as sae-lens computes it
        out = getattr(self._local, "out", None)
        if out is None or len(out) < n:
            out = self._local.out = torch.empty(n, self.W.shape[1])
        pre = torch.addmm(self.b_enc, xc, self.W, out=out[:n])
        # Candidates: the positive values reaching the row's threshold, as int32 bit patterns
        # (for positive floats integer order is numeric order). A row with fewer than k of
        # them has fewer than k positive values: relu keeps exactly those.
        rows, cols, bits, _ = _block_candidates(pre.view(torch.int32), self.groups, self.width, k)
        counts = np.bincount(rows, minlength=n)
        if counts.max(initial=0) > k:  # the k largest of each row: one sort of (row, value, index in row)
            starts = np.cumsum(counts) - counts
            local = np.arange(len(rows)) - starts[rows]
            lb = bit_width(int(counts.max()))
            order = np.sort((rows << (31 + lb)) | ((0x7FFFFFFF - bits.astype(np.int64)) << lb) | local)
            keep = local < k  # sorting keeps the rows in place: their first k slots
            at = starts[rows[keep]] + (order[keep] & ((1 << lb) - 1))
            rows, cols, bits = rows[keep], cols[at], bits[at]
        return Codes(rows + offset, cols, bits.view(np.float32)), np.zeros(0, np.int64)


def _block_shape(d_sae: int, m: int) -> tuple[int, int]:
    """(width, groups): latents fall into `groups` blocks of `width` consecutive latents,
    groups >= 4 * m where possible (m: how many a row's threshold must let through)."""
    width = max(1, d_sae // max(256, 4 * m))
    return width, -(-d_sae // width)


def _block_candidates(bits: torch.Tensor, groups: int, width: int,
                      m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, every value reaching the row's threshold: the m-th largest of its `groups`
    block maxima (at least the smallest positive value), so at least m values reach it
    where that many are positive, and not many more. Only the blocks whose maximum reaches
    it are searched.

    bits: "n width*groups" values in the block-strided layout (`_block_strided`), viewed as
    signed integers of their width: for positive floats integer order is numeric order, and
    negative floats are negative integers. Returns (rows, latents, value bits, threshold bits
    per row), rows ascending and latents ascending within a row (CSR order)."""
    n, G, W = len(bits), groups, width
    blocks = bits.view(n, W, G)
    bmax = blocks.amax(1).numpy()
    thr = np.partition(bmax, G - m, axis=1)[:, G - m]
    thr = np.maximum(thr, 1)  # no positive threshold: take the positive values
    hit = np.flatnonzero(bmax >= thr[:, None])
    r = hit // G
    g = hit - r * G
    values = blocks.transpose(1, 2)[torch.from_numpy(r), torch.from_numpy(g)].numpy()  # "hit W"
    ok = np.flatnonzero(values >= thr[r, None])
    i = ok // W
    return r[i], g[i] * W + (ok - i * W), values.reshape(-1)[ok], thr


def _block_strided(a: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """Columns reordered so that column w * groups + g holds column g * width + w."""
    return a.reshape(len(a), groups, width).transpose(1, 2).reshape(len(a), groups * width).contiguous()


def _addmm_rounds_once(shape: tuple[int, int]) -> bool:
    """Whether bf16 addmm (at this weight shape) adds the bias to the fp32 accumulator and
    rounds once, as oneDNN does; if it rounded the product first, the error bound must
    also cover that rounding. Probe: 256 + 1 - 256 is 1 with one rounding, 0 with two."""
    d, m = shape
    if d < 2:
        return False
    a = torch.zeros(256, d, dtype=torch.bfloat16)
    a[:, :2] = 1
    b = torch.zeros(d, m, dtype=torch.bfloat16)
    b[0], b[1] = 256, 1
    out = torch.addmm(torch.full((m,), -256.0, dtype=torch.bfloat16), a, b)
    return bool((out == 1).all())


def bit_width(n: int) -> int:
    """Bits needed to hold the non-negative integer n (at least 1)."""
    return max(int(n).bit_length(), 1)


def value_key(v: np.ndarray) -> np.ndarray:
    """An int64 in [0, 2^32) that orders float32 values high to low (smaller = higher value)."""
    u = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32).astype(np.int64)
    ordered = np.where(u & 0x80000000, 0xFFFFFFFF - u, u | 0x80000000)  # ascending with v
    return 0xFFFFFFFF - ordered


class NonFiniteInput(ValueError):
    """The vectors to encode hold NaN or inf."""


def check_finite(x: torch.Tensor) -> None:
    # One sum is enough to notice NaN/inf (an overflowing sum of finite values is then
    # confirmed element-wise), instead of a full isfinite pass.
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise NonFiniteInput("NaN/inf in the vectors to encode")


def supports_fast_topk(sae: LoadedSAE) -> bool:
    """A TopK SAE whose encode is relu(topk((x - b_dec) @ W_enc + b_enc)): no input
    normalisation, no decoder-norm rescaling, on CPU."""
    cfg = sae.cfg
    return (sae.architecture == "topk" and sae.device.type == "cpu"
            and not cfg.get("rescale_acts_by_decoder_norm", False)
            and cfg.get("normalize_activations", "none") == "none"
            and cfg.get("reshape_activations", "none") == "none"
            and isinstance(cfg.get("k"), int) and cfg["k"] >= 1)


PRECISIONS = ("auto", "bf16", "fp32")


def sparse_encoder(sae: LoadedSAE, fast: bool = True,
                   precision: str = "auto") -> DenseEncoder | TopKEncoder | TopKEncoderFP32:
    """The fastest exact encoder for this SAE. For a plain TopK SAE (`supports_fast_topk`):
    `TopKEncoder` (bf16 prefilter) where bf16 is fast on this CPU, else `TopKEncoderFP32`;
    precision "bf16" or "fp32" forces one, "auto" asks `sae.precision`. Anything else (or
    fast=False): `DenseEncoder`. The encoder's `precision` says which ("bf16" or "fp32"),
    `precision_reason` why, and `decision` what an "auto" choice rested on."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not (fast and supports_fast_topk(sae)):
        enc = DenseEncoder(sae)
        enc.precision_reason = ("sae-lens's own encode (fast=False)" if not fast else
                                "sae-lens's own encode: not a plain TopK SAE on the CPU")
        return enc
    chosen, decision = resolve(precision, "cpu")  # supports_fast_topk: the SAE is on the CPU
    enc = TopKEncoder(sae) if chosen == "bf16" else TopKEncoderFP32(sae)
    enc.decision = decision
    enc.precision_reason = decision.reason if decision is not None else f"precision={precision} asked for"
    return enc
