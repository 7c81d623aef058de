"""Builders shared by the test modules (plain functions; shared fixtures live in
conftest.py). Test modules import from here, never from each other.

- write_store, planted_data, write_planted_store: small activation stores from arrays
- train_cfg: the TrainConfig the training tests start from
- save_sae: a random sae-lens SAE at a block of the tiny model
- save_topk: a TopK SAE saved by sae-lens itself, random weights unless given
- SELECT_PROMPTS, TEST_PROMPTS, write_prompts: prompt files for `saex lookahead`
- assert_equal_nonempty: an equality check that fails when there is nothing to compare
"""

from __future__ import annotations

import json
from contextlib import contextmanager
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


def write_planted_store(out: Path, n_windows: int = 64, seed: int = 0):
    """(store, x, feats): n_windows windows of 128 planted vectors (d_in 16, 32 features,
    3 a vector), 8 windows a shard."""
    x, feats = planted_data(n_windows * 128, d_in=16, n_features=32, k=3, seed=seed)
    return write_store(out, x.reshape(n_windows, 128, 16), shard_windows=8), x, feats


def train_cfg(store, out, **kw):
    """A TrainConfig for a small TopK SAE on a planted store (keywords override)."""
    from training.config import TrainConfig

    base = dict(store=str(store), out=str(out), d_sae=64, k=4, batch_size=256, epochs=8, lr=1e-2, lr_end=1e-3,
                warmup_steps=10, dead_after=2000, device="cpu", progress=False, shards_in_memory=8)
    base.update(kw)
    return TrainConfig(**base)


def save_sae(path, lm, seed=0, arch="standard", d_sae=96, layer=1):
    """A random sae-lens SAE at blocks.{layer} of the model `lm`, with encoder biases that
    make a fair share of latents fire."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    d = lm.d_model
    cls, extra = {"standard": ("StandardSAE", {}), "topk": ("TopKSAE", {"k": 8})}[arch]
    cfg = getattr(sae_lens, cls + "Config")(
        d_in=d, d_sae=d_sae, **extra,
        metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post", hf_hook_name=f"model.layers.{layer}",
                             model_name=lm.spec, model_weights_sha256=lm.weights_sha256))
    sae = getattr(sae_lens, cls)(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, d_sae, generator=g) / d ** 0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d, generator=g) / d ** 0.5)
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(d, generator=g))
    sae.save_model(path)
    return path


# (prompt, noun, article) rows in the tiny model's vocabulary (conftest.py WORDS).
SELECT_PROMPTS = [("the person studies the stars and it is called", "astronomer", "an"),
                  ("the king saw the light of the river and", "owl", "an"),
                  ("the queen of the night was", "umbrella", "an"),
                  ("her word for the fire is", "egg", "an"),
                  ("her dog and his cat were by the", "house", "a"),
                  ("in the dark the bird", "king", "a"),
                  ("the water of the river was", "book", "a"),
                  ("from the mountain to the tree was", "dog", "a")]
TEST_PROMPTS = [("the day of the song was", "hour", "an"), ("his book of music was", "apple", "an"),
                ("it was the light of", "island", "an"), ("the earth and the night were", "cat", "a"),
                ("their letter was", "sword", "a"), ("on the water the", "tree", "a")]


def write_prompts(path: Path, rows) -> Path:
    """(prompt, noun, article) rows -> a prompt .jsonl file as `saex lookahead` reads it."""
    path.write_text("".join(json.dumps(dict(zip(("prompt", "noun", "article"), r))) + "\n" for r in rows))
    return path


def assert_equal_nonempty(actual, expected, msg=None) -> None:
    """actual == expected, and expected is not empty: two empty lists compare equal, so a
    comparison against a brute-force list that came out empty would test nothing."""
    assert len(expected) > 0, f"vacuous comparison: the expected value is empty{f' ({msg})' if msg else ''}"
    assert actual == expected, msg


def save_topk(path, d_in: int = 32, d_sae: int = 64, k: int = 4, seed: int = 0, W_enc=None, b_enc=None, W_dec=None,
              hook_name: str = "blocks.0.hook_resid_post", model_name: str | None = None):
    """A TopK SAE saved by sae-lens itself (random weights unless given; the hook write_store records)."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name=hook_name, **({"model_name": model_name} if model_name else {}))
    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=meta))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5 if W_enc is None else W_enc)
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g) if b_enc is None else b_enc)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) if W_dec is None else W_dec)
        sae.b_dec.copy_(0.1 * torch.randn(d_in, generator=g))
    sae.save_model(path)
    return path


@contextmanager
def added_after_block(lm, layer: int, add):
    """While inside: the residual after block `layer` of `lm` becomes h + add(input_ids, h)."""
    seen = {}
    h1 = lm.model.get_input_embeddings().register_forward_pre_hook(lambda m, a: seen.__setitem__("ids", a[0]))

    def plant(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h + add(seen["ids"], h)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    h2 = lm.layers[layer].register_forward_hook(plant)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()
