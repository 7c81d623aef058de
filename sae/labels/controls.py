"""Control SAEs that labels are compared with, run through the same labelling pipeline.

- random: every encoder column and decoder row replaced by a Gaussian direction of the same
  norm; biases (and thresholds) kept, so a TopK copy keeps k active latents per token and
  firing rates stay in the trained range. Any label it earns is what chance structure in the
  residual stream gives away: the baseline for every label kind.
- decoder-shuffled: the trained encoder, with the decoder rows permuted among the latents.
  It fires exactly where the trained SAE fires, so every input-side label scores the same by
  construction; only the output-side labels (boosts_output, from the decoder's vocabulary
  projection) change. It is the control for those.
"""

from __future__ import annotations

import copy

import torch

from sae.runs.load import LoadedSAE

CONTROLS = ("random", "shuffled")


def _copy(sae: LoadedSAE) -> LoadedSAE:
    ctrl = copy.copy(sae)
    ctrl.sae = copy.deepcopy(sae.sae)
    return ctrl


def control_sae(sae: LoadedSAE, seed: int = 0) -> LoadedSAE:
    """The random-direction copy (see the module docstring)."""
    ctrl = _copy(sae)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        W = ctrl.sae.W_enc
        r = torch.randn(W.shape, generator=g)
        W.copy_(r / r.norm(dim=0, keepdim=True) * W.norm(dim=0, keepdim=True))
        D = ctrl.sae.W_dec
        r = torch.randn(D.shape, generator=g)
        D.copy_(r / r.norm(dim=1, keepdim=True) * D.norm(dim=1, keepdim=True))
    return ctrl


def decoder_shuffled_sae(sae: LoadedSAE, seed: int = 0) -> LoadedSAE:
    """The trained encoder with the decoder rows permuted (a derangement: no latent keeps its own)."""
    ctrl = _copy(sae)
    n = ctrl.sae.W_dec.shape[0]
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(n, generator=g)
    idx = (perm == torch.arange(n)).nonzero().flatten()
    if len(idx) > 1:  # rotate the fixed points among themselves
        perm[idx] = idx.roll(1)
    elif len(idx) == 1 and n > 1:  # swap the one fixed point with its neighbour's value
        i, j = int(idx[0]), (int(idx[0]) + 1) % n
        perm[i], perm[j] = int(perm[j]), i
    with torch.no_grad():
        ctrl.sae.W_dec.copy_(ctrl.sae.W_dec[perm].clone())
    return ctrl
