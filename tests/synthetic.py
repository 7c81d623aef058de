"""Write small activation stores from arrays, for tests that need known activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sae.data import store


def write_store(out: Path, acts: torch.Tensor, shard_windows: int = 16, flags: torch.Tensor | None = None,
                tokens: np.ndarray | None = None) -> Path:
    """acts: "window pos d_model" fp32 -> a complete fp32 store (the library's own writer)."""
    return store.write_store(out, acts, tokens, flags, shard_windows=shard_windows)


def planted_data(n_vectors: int, d_in: int = 16, n_features: int = 32, k: int = 3, seed: int = 0):
    """Vectors that are sums of k of n_features random unit directions (plus an offset)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_features, d_in, generator=g)
    feats = feats / feats.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:k] for _ in range(n_vectors)])
    coef = 1 + 2 * torch.rand(n_vectors, k, generator=g)
    x = (coef.unsqueeze(-1) * feats[idx]).sum(1) + 0.5
    return x, feats
