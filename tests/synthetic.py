"""Write small activation stores from arrays, for tests that need known activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sae.activations import STORE_FORMAT, _write_manifest, write_shard
from sae.fsutil import write_json_atomic


def write_store(out: Path, acts: torch.Tensor, shard_windows: int = 16, flags: torch.Tensor | None = None,
                tokens: np.ndarray | None = None) -> Path:
    """acts: "window pos d_model" fp32 -> a complete fp32 store; token ids `tokens`
    ("window pos"), or dummy ids when not given."""
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    n, t, d = acts.shape
    flags = torch.zeros(n, t, dtype=torch.uint8) if flags is None else flags
    tokens = (np.arange(n * t, dtype=np.int32).reshape(n, t) % 50 if tokens is None
              else np.asarray(tokens, dtype=np.int32))
    n_shards = -(-n // shard_windows)
    plan = {"format": STORE_FORMAT, "config": {}, "model": {"spec": "synthetic", "weights_sha256": "none", "n_layers": 1,
            "d_model": d}, "hook": {"name": "blocks.0.hook_resid_post", "layer": 0, "module_path": "model.layers.0"},
            "corpus": {"spec": "synthetic", "split": "train", "text_field": "text"}, "context_size": t,
            "prepend_bos": False, "d_model": d, "dtype": "float32", "compute_precision": "fp32",
            "bf16_median_relative_error": None, "special_token_ids": [], "outlier_threshold": 1e9,
            "outlier_rule": "none", "flags": {}, "n_windows": n, "shard_windows": shard_windows, "n_shards": n_shards}
    write_json_atomic(out / "plan.json", plan)
    np.save(out / "tokens.npy", tokens)  # as a harvest writes it: every window's ids in one array
    for k in range(n_shards):
        rows = slice(k * shard_windows, min(n, (k + 1) * shard_windows))
        write_shard(out / "shards", k, rows.start, acts[rows].numpy().astype(np.float32), tokens[rows],
                    flags[rows].numpy())
    _write_manifest(out, plan)
    return out


def planted_data(n_vectors: int, d_in: int = 16, n_features: int = 32, k: int = 3, seed: int = 0):
    """Vectors that are sums of k of n_features random unit directions (plus an offset)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_features, d_in, generator=g)
    feats = feats / feats.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:k] for _ in range(n_vectors)])
    coef = 1 + 2 * torch.rand(n_vectors, k, generator=g)
    x = (coef.unsqueeze(-1) * feats[idx]).sum(1) + 0.5
    return x, feats
