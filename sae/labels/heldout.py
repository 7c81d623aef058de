"""The held-out text a label is proposed and scored on: which positions belong to which half,
the 32-token example windows detection scoring reads, and every feature's firings.

The split is by document. Windows are cut in blocks of `split_block`; even blocks propose,
odd ones score. Documents are joined by a blank line inside the store's windows, so a
document can run over a block boundary: in the first window after each boundary, the
positions up to and including the first blank-line separator are left out of both halves
(the tail of a document the other half holds; the whole window when it has no separator).
A document longer than a window, or with blank lines of its own, can still reach both
halves past that point. A store without any separator is split by blocks alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.runs.load import LoadedSAE

PROPOSE, SCORE = 0, 1


@dataclass
class Split:
    """Per flattened position: `half` 0 (propose), 1 (score) or -1 (left out: special token,
    norm outlier, a document's tail across a boundary); `example` the index of its example
    window (-1 past the last whole one)."""

    half: np.ndarray
    example: np.ndarray
    example_half: np.ndarray
    example_len: int
    T: int

    @property
    def n_examples(self) -> int:
        return len(self.example_half)

    def positions_of(self, examples: np.ndarray) -> np.ndarray:
        """Flattened positions of example windows, "n example_len"."""
        per = self.T // self.example_len
        w, j = np.divmod(np.asarray(examples, np.int64), per)
        return (w * self.T + j * self.example_len)[:, None] + np.arange(self.example_len)[None, :]

    def usable(self, h: int) -> np.ndarray:
        return np.flatnonzero(self.half == h)


def split_positions(tokens: np.ndarray, flags: np.ndarray, split_block: int, example_len: int,
                    separator: int | None) -> Split:
    W, T = tokens.shape
    block_half = (np.arange(W) // split_block) % 2
    half = np.where(flags == 0, block_half[:, None], -1).astype(np.int8)
    if separator is not None and (tokens == separator).any():
        for w in range(1, W):
            if block_half[w] != block_half[w - 1]:
                hit = np.flatnonzero(tokens[w] == separator)
                half[w, :int(hit[0]) + 1 if len(hit) else T] = -1
    per = T // example_len
    q = np.arange(T)
    ex = np.where(q < per * example_len, q // example_len, -1)
    example = np.where(ex[None, :] >= 0, np.arange(W)[:, None] * per + ex[None, :], -1)
    return Split(half.reshape(-1), example.reshape(-1), np.repeat(block_half, per), example_len, T)


@dataclass
class Firings:
    """One SAE's firings at usable positions, sorted by (feature, position): feature f's are
    `pos[ptr[f]:ptr[f+1]]` with activations `act[...]`."""

    ptr: np.ndarray
    pos: np.ndarray
    act: np.ndarray

    def of(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.ptr[f], self.ptr[f + 1]
        return self.pos[lo:hi], self.act[lo:hi]


def encode_firings(sae: LoadedSAE, store: ActivationStore, split: Split, chunk_tokens: int = 32768,
                   progress: bool = False) -> Firings:
    """Every usable position of the store encoded once with the exact sparse encoder."""
    from sae.index.encoder import sparse_encoder

    enc = sparse_encoder(sae)
    T = store.context_size
    per = max(1, chunk_tokens // T)
    pos_parts, f_parts, a_parts = [], [], []
    w_global = 0
    for k in range(store.n_shards):
        acts = store.acts(k)
        for w0 in range(0, len(acts), per):
            w1 = min(len(acts), w0 + per)
            flat = np.arange((w_global + w0) * T, (w_global + w1) * T)
            keep = np.flatnonzero(split.half[flat] >= 0)
            if not len(keep):
                continue
            x = acts[w0:w1].reshape(-1, store.d_model)[torch.from_numpy(keep)]
            codes = enc(x)
            rows, cols, vals = (np.asarray(a) for a in (codes.rows, codes.cols, codes.vals))
            pos = flat[keep][rows]
            ok = vals > 0
            pos_parts.append(pos[ok])
            f_parts.append(cols[ok].astype(np.int64))
            a_parts.append(vals[ok].astype(np.float32))
        w_global += len(acts)
        if progress:
            print(f"\r  encoded shard {k + 1}/{store.n_shards}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    pos = np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64)
    f = np.concatenate(f_parts) if f_parts else np.zeros(0, np.int64)
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, np.float32)
    order = np.lexsort((pos, f))
    return Firings(np.searchsorted(f[order], np.arange(sae.d_sae + 1)), pos[order], a[order])
