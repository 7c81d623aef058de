"""The TopK sparse autoencoder as trained here: a dense encoder, a sparse decoder.

Decoding touches only the k active latents of each vector (`F.embedding_bag` with the
activations as per-sample weights), so its forward and backward cost O(batch * k * d_in)
instead of O(batch * d_sae * d_in). Weights stay fp32 (the optimizer's master copy); the
encoder matmul runs under bf16 autocast when asked.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FastTopKSAE(nn.Module):
    """x -> relu(topk((x - b_dec) @ W_enc + b_enc)) -> acts @ W_dec + b_dec.

    Same parameter names and shapes as sae-lens (`W_enc` [d_in, d_sae], `W_dec`
    [d_sae, d_in], `b_enc`, `b_dec`), so saving to its format is a copy."""

    def __init__(self, d_in: int, d_sae: int, k: int, generator: torch.Generator | None = None):
        super().__init__()
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        w = torch.randn(d_sae, d_in, generator=generator)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        # Tied initialisation (Gao et al. 2024): the encoder starts as the decoder's transpose.
        self.W_enc = nn.Parameter(w.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """ "batch d_in" -> "batch d_sae" (before TopK)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode_with_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, indices, pre): the k largest pre-activations ReLU'd, both "batch k",
        and all pre-activations "batch d_sae" (AuxK picks dead latents from them)."""
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return vals.float().relu(), idx, pre

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and latent indices of the k largest pre-activations, ReLU'd: both "batch k"."""
        vals, idx, _ = self.encode_with_pre(x)
        return vals, idx

    def decode_sparse(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """ "batch k" values and indices -> "batch d_in" reconstruction."""
        with torch.autocast(vals.device.type, enabled=False):
            out = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals.float(), mode="sum")
        return out + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        vals, idx = self.encode_sparse(x)
        return self.decode_sparse(vals, idx), vals, idx

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        """ "batch d_sae" activations (zeros outside the top k)."""
        vals, idx = self.encode_sparse(x)
        return torch.zeros(x.shape[0], self.d_sae, dtype=vals.dtype, device=x.device).scatter_(-1, idx, vals)

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


def auxk_loss(sae: FastTopKSAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor,
              aux_k: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024): reconstruct the main reconstruction's residual with the
    top `aux_k` *dead* latents, so they get gradient and come back to life.
    Normalised by the residual's variance; zero when no latent is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    k = min(aux_k, n_dead)
    masked = pre.float().masked_fill(~dead, -math.inf)
    vals, idx = masked.topk(k, dim=-1, sorted=False)
    vals = vals.relu()
    with torch.autocast(pre.device.type, enabled=False):
        recon = F.embedding_bag(idx, sae.W_dec, per_sample_weights=vals, mode="sum")
    denom = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
    return (recon - residual).pow(2).sum(-1).mean() / denom
