"""The training data stream: shuffled batches of usable vectors from an activation store,
and the input scale that gives them mean norm sqrt(d_in).

The order is a pure function of (store, seed, batch size, shards_in_memory), so a resumed
run can start at any step without reading the batches before it, and data-parallel ranks
agree on every global batch while each reads only its own slice of it from disk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from sae.data.store import ActivationStore
from sae.errors import SaexError


def total_steps(store: ActivationStore, batch_size: int, epochs: float) -> int:
    return int(store.manifest["n_usable"] * epochs) // batch_size


def batches(store: ActivationStore, batch_size: int, epochs: float, shards_in_memory: int, seed: int,
            start_step: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[tuple[int, torch.Tensor]]:
    """(step, "batch/world_size d_in" fp32) for steps start_step.. of the run.

    Shards are visited in a seeded random order, `shards_in_memory` at a time; the usable
    vectors of such a group are shuffled together and cut into global batches. Rank r of
    `world_size` gets rows [r * b, (r + 1) * b) of each global batch, b = batch / world_size."""
    if batch_size % world_size:
        raise SaexError(f"batch_size {batch_size} does not split evenly over {world_size} processes",
                        f"use a batch_size divisible by {world_size}")
    per_rank = batch_size // world_size
    total = total_steps(store, batch_size, epochs)
    usable = [store.usable_rows(k) for k in range(store.n_shards)]
    g = torch.Generator().manual_seed(seed)
    step = 0
    while step < total:
        order = torch.randperm(store.n_shards, generator=g).tolist()
        for start in range(0, len(order), shards_in_memory):
            group = order[start:start + shards_in_memory]
            sizes = torch.tensor([len(usable[k]) for k in group])
            perm = torch.randperm(int(sizes.sum()), generator=g)
            n_batches = min(len(perm) // batch_size, total - step)
            first = min(max(0, start_step - step), n_batches)
            if first < n_batches:
                mine = (perm[:n_batches * batch_size].view(n_batches, batch_size)
                        [first:, rank * per_rank:(rank + 1) * per_rank])
                data = _read_group(store, group, sizes, usable, mine.reshape(-1), step + first)
                for j in range(n_batches - first):
                    yield step + first + j, data[j * per_rank:(j + 1) * per_rank]
            step += n_batches
            if step >= total:
                return


def estimate_scale(store: ActivationStore, n: int = 100_000) -> tuple[float, torch.Tensor]:
    """(scale, mean): the factor that gives inputs mean norm sqrt(d_in), and the mean
    of the scaled inputs (the initial b_dec), from the first shards."""
    parts, have = [], 0
    for k in range(store.n_shards):
        u = store.usable(k)
        if not torch.isfinite(u).all():
            raise SaexError(f"NaN/inf activations in shard {k} of {store.path} (found while estimating the "
                            "input scale, before training)",
                            "harvest that store again (with --precision fp32 if it persists)")
        parts.append(u)
        have += len(u)
        if have >= n:
            break
    x = torch.cat(parts)[:n]
    if not len(x):
        raise SaexError(f"{store.path} has no usable vectors", "harvest more tokens (or check the outlier threshold)")
    scale = math.sqrt(store.d_model) / float(x.norm(dim=-1).mean())
    return scale, (x * scale).mean(0)


def _read_group(store: ActivationStore, group: list[int], sizes: torch.Tensor, usable: list[torch.Tensor],
                picks: torch.Tensor, step: int) -> torch.Tensor:
    """The vectors at `picks` (indices into the group's concatenated usable vectors)."""
    bounds = torch.cumsum(sizes, 0)
    shard_of = torch.bucketize(picks, bounds, right=True)
    out = torch.empty(len(picks), store.d_model)
    for i, k in enumerate(group):
        where = (shard_of == i).nonzero().squeeze(1)
        if len(where):
            local = picks[where] - (bounds[i] - sizes[i])
            vecs = store.gather(k, usable[k][local])
            if not torch.isfinite(vecs).all():
                raise SaexError(f"NaN/inf activations in shard {k} of {store.path} (found at training step {step})",
                                "harvest that store again (with --precision fp32 if it persists)")
            out[where] = vecs
    return out
