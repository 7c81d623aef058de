"""TopK and BatchTopK sparse autoencoders as trained here (dense forward, sparse everything else),
and `load_fast_topk`, which reads a TopK run folder back into one.

A TopK encoder's output depends on only k of its d_sae pre-activations per vector, so its
gradient is zero everywhere else. Autograd does not know that: it runs the backward of the
dense encoder matmul, twice the forward's cost. Here the encoder's forward is one dense
bf16 matmul with no autograd; the chosen pre-activations enter the graph through
`_ChosenPreActs`, whose backward touches only the chosen (vector, latent) pairs (a CSR
sparse-dense product and an `embedding_bag`). The decoder is an `embedding_bag` over the
active latents, forward and backward O(nnz * d_in). Weights stay fp32, the optimizer's
master copy.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sae.errors import SaexError
from sae.runs.files import CFG_FILE, WEIGHTS_FILE

# CSR tensors are "beta" in torch; the one product used here is tested against dense autograd.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class TopKCodes(NamedTuple):
    """Sparse activations of a batch, row-major: vector `rows[i]` has latent `cols[i]` at `vals[i]`.
    `offsets[b]` is where vector b's entries start (the layout `embedding_bag` takes)."""

    vals: torch.Tensor  # "nnz" float32
    cols: torch.Tensor  # "nnz" int64
    rows: torch.Tensor  # "nnz" int64
    offsets: torch.Tensor  # "batch" int64

    def dense(self, d_sae: int) -> torch.Tensor:
        out = torch.zeros(len(self.offsets), d_sae, dtype=self.vals.dtype, device=self.vals.device)
        return out.index_put_((self.rows, self.cols), self.vals)

    @property
    def l0(self) -> float:
        return int((self.vals > 0).sum()) / max(1, len(self.offsets))


class _ChosenPreActs(torch.autograd.Function):
    """Pre-activations (x_c @ W_enc + b_enc) at chosen (row, col) pairs.

    The values come in already computed (from the dense no-grad matmul); the backward
    computes the gradients of x_c, W_enc and b_enc from the chosen pairs alone."""

    @staticmethod
    def forward(ctx, xc, W_enc, b_enc, values, rows, cols, offsets):
        ctx.save_for_backward(xc, W_enc, rows, cols, offsets)
        return values

    @staticmethod
    def backward(ctx, g):
        xc, W_enc, rows, cols, offsets = ctx.saved_tensors
        g = g.to(xc.dtype)
        W_rows = W_enc.t().contiguous()  # embedding_bag on a transposed view is ~30x slower
        grad_xc = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_xc = F.embedding_bag(cols, W_rows, offsets, per_sample_weights=g, mode="sum")
        if ctx.needs_input_grad[1]:
            # dL/dW_enc[:, j] = sum over vectors i that chose j of g_ij * x_c[i]: a CSR matrix
            # (latent x vector) times x_c. Sorting by latent builds the CSR index.
            order = cols.argsort(stable=True)
            counts = torch.bincount(cols, minlength=W_enc.shape[1])
            crow = torch.zeros(W_enc.shape[1] + 1, dtype=torch.long, device=g.device)
            crow[1:] = counts.cumsum(0)
            G_t = torch.sparse_csr_tensor(crow, rows[order], g[order], (W_enc.shape[1], xc.shape[0]),
                                          check_invariants=False)
            grad_W = (G_t @ xc).t().contiguous()
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(W_enc.shape[1], dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        return grad_xc, grad_W, grad_b, None, None, None, None


def _fixed_k_codes(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """ "batch k" values and indices -> flat (vals, cols, rows, offsets)."""
    b, k = idx.shape
    ar = torch.arange(b, device=idx.device)
    return vals.reshape(-1), idx.reshape(-1), ar.repeat_interleave(k), ar * k


def batch_topk_entries(pre: torch.Tensor, k: int, hint: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), row-major, of the k * batch largest positive pre-activations of the batch.

    `hint` (the previous batch's cut-off) makes it fast: if at least k * batch values exceed
    0.8 * hint, the winners are all among them, so one comparison and a top-k over
    those few is exact (~4x faster than the candidates below).

    A top-k over all batch * d_sae values is slow on CPU (~290 ms at 4096 x 4608). Each
    row's 4k largest are candidates; the batch's top among them is exact for every row
    that did not have all its candidates kept. Rows that did ("full" rows: one vector that
    takes far more than its share) may hold more winners, so their whole rows join the
    candidates and the top is taken again: still exact, and cheap while such rows are few."""
    n = min(k * len(pre), pre.numel())
    if hint > 0:
        rows, cols = (pre > 0.8 * hint).nonzero(as_tuple=True)
        if n <= len(rows) <= 8 * n:
            top = pre[rows, cols].topk(n, sorted=False).indices
            return rows[top.sort().values], cols[top.sort().values]
    m = min(pre.shape[1], 4 * k)
    pos = pre.relu()
    cand_v, cand_i = pos.topk(m, dim=-1, sorted=False)
    kept = cand_v.flatten().topk(n, sorted=False)
    rows, cols = kept.indices // m, cand_i.flatten()[kept.indices]
    if m < pre.shape[1]:
        full = (cand_v.min(dim=-1).values >= kept.values.min()).nonzero().squeeze(1)
        if len(full):
            others = torch.ones(len(pre), dtype=torch.bool, device=pre.device)
            others[full] = False
            o_rows = others.nonzero().squeeze(1)
            vals = torch.cat([cand_v[o_rows].flatten(), pos[full].flatten()])
            all_rows = torch.cat([o_rows.repeat_interleave(m), full.repeat_interleave(pre.shape[1])])
            all_cols = torch.cat([cand_i[o_rows].flatten(),
                                  torch.arange(pre.shape[1], device=pre.device).repeat(len(full))])
            top = vals.topk(n, sorted=False).indices
            rows, cols = all_rows[top], all_cols[top]
    order = (rows * pre.shape[1] + cols).argsort()
    return rows[order], cols[order]


class FastTopKSAE(nn.Module):
    """x -> relu(topk((x - b_dec) @ W_enc + b_enc)) -> acts @ W_dec + b_dec.

    `batch_topk=True` keeps the k * batch largest pre-activations of the whole batch
    instead of k per vector (Bussmann et al. 2024) and tracks the threshold that
    inference uses (a JumpReLU, as sae-lens saves it). Same parameter names and shapes
    as sae-lens (`W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in], `b_enc`, `b_dec`)."""

    def __init__(self, d_in: int, d_sae: int, k: int, batch_topk: bool = False,
                 threshold_lr: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        self.d_in, self.d_sae, self.k, self.batch_topk = d_in, d_sae, k, batch_topk
        self.threshold_lr = threshold_lr
        w = torch.randn(d_sae, d_in, generator=generator)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        # Tied initialisation (Gao et al. 2024): the encoder starts as the decoder's transpose.
        self.W_enc = nn.Parameter(w.t().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # BatchTopK's inference threshold: a running mean of the smallest kept activation
        # (double, as sae-lens keeps it: the EMA drifts in fp32).
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))
        self._last_cut = 0.0  # the previous batch's cut-off: a hint that makes the next BatchTopK fast

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """ "batch d_in" -> "batch d_sae" (before the sparsity rule)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor, bf16: bool = False) -> tuple[TopKCodes, torch.Tensor, torch.Tensor]:
        """(codes, pre, xc): sparse activations (differentiable w.r.t. the parameters),
        the dense pre-activations (no grad; AuxK picks dead latents from them) and x - b_dec."""
        xc = x - self.b_dec
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            pre = torch.addmm(self.b_enc, xc.detach(), self.W_enc)
        if self.batch_topk:
            if self.training:
                rows, cols = batch_topk_entries(pre, self.k, self._last_cut)
                self._last_cut = float(pre[rows, cols].min()) if len(rows) else 0.0
            else:
                rows, cols = (pre > self.threshold.to(pre.dtype)).nonzero(as_tuple=True)
            values = pre[rows, cols].to(x.dtype)
            offsets = torch.zeros(len(x), dtype=torch.long, device=x.device)
            offsets[1:] = torch.bincount(rows, minlength=len(x)).cumsum(0)[:-1]
        else:
            v, idx = pre.topk(self.k, dim=-1, sorted=False)
            values, cols, rows, offsets = _fixed_k_codes(v.to(x.dtype), idx)
        vals = _ChosenPreActs.apply(xc, self.W_enc, self.b_enc, values, rows, cols, offsets).relu()
        return TopKCodes(vals, cols, rows, offsets), pre, xc

    @torch.no_grad()
    def update_threshold(self, smallest_kept: torch.Tensor) -> None:
        """BatchTopK: move the inference threshold towards this batch's smallest kept
        activation (inf when nothing fired: no update)."""
        if torch.isfinite(smallest_kept):
            lr = self.threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * smallest_kept.double())

    def decode(self, codes: TopKCodes) -> torch.Tensor:
        """Sparse codes -> "batch d_in" reconstruction."""
        with torch.autocast(codes.vals.device.type, enabled=False):
            out = F.embedding_bag(codes.cols, self.W_dec, codes.offsets,
                                  per_sample_weights=codes.vals.to(self.W_dec.dtype), mode="sum")
        return out + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, TopKCodes]:
        codes, _, _ = self.encode(x)
        return self.decode(codes), codes

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        """ "batch d_sae" activations (zeros outside the active latents)."""
        codes, _, _ = self.encode(x)
        return codes.dense(self.d_sae)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the part of W_dec's gradient that would change row norms, which the
        renormalisation after the step would undo anyway."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad.sub_(parallel * self.W_dec)


def auxk_loss(sae: FastTopKSAE, xc: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor,
              dead: torch.Tensor, aux_k: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024): reconstruct the main reconstruction's residual with the
    top `aux_k` *dead* latents, so they get gradient and come back to life.
    Normalised by the residual's variance; zero when no latent is dead."""
    dead_ids = dead.nonzero().squeeze(1)
    if len(dead_ids) == 0:
        return residual.new_zeros(())
    v, local = pre.index_select(1, dead_ids).topk(min(aux_k, len(dead_ids)), dim=-1, sorted=False)
    values, cols, rows, offsets = _fixed_k_codes(v.to(xc.dtype), dead_ids[local])
    vals = _ChosenPreActs.apply(xc, sae.W_enc, sae.b_enc, values, rows, cols, offsets).relu()
    with torch.autocast(pre.device.type, enabled=False):
        recon = F.embedding_bag(cols, sae.W_dec, offsets, per_sample_weights=vals, mode="sum")
    denom = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
    return (recon - residual).pow(2).sum(-1).mean() / denom


def load_fast_topk(path: str | Path) -> FastTopKSAE:
    """A FastTopKSAE from a SAELens-format TopK run folder (raw-activation space).
    For any architecture, and for inference, use sae.runs.load.load_sae."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        cfg = json.loads((path / CFG_FILE).read_text())
        w = load_file(str(path / WEIGHTS_FILE))
    except FileNotFoundError:
        raise SaexError(f"{path} holds no trained SAE (cfg.json + sae_weights.safetensors)",
                        "give a run folder made by `saex train`") from None
    except Exception as e:
        raise SaexError(f"the SAE in {path} is unreadable ({type(e).__name__}: {e})",
                        "the files are truncated or not SAELens format: train it again") from None
    if cfg.get("architecture") != "topk":
        raise SaexError(f"{path} holds a {cfg.get('architecture')} SAE", "this loader reads TopK SAEs")
    sae = FastTopKSAE(cfg["d_in"], cfg["d_sae"], cfg["k"])
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            if tuple(w[name].shape) != tuple(getattr(sae, name).shape):
                raise SaexError(f"{path}: {name} has shape {tuple(w[name].shape)}, cfg.json implies "
                                f"{tuple(getattr(sae, name).shape)}", "the checkpoint is corrupt: train it again")
            getattr(sae, name).copy_(w[name])
    return sae
