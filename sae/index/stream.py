"""The index's streaming pass: encode an activation store chunk by chunk on one core while
the other folds the codes into the running statistics (`sae.index.stats.FeatureStats`).

Torch and NumPy release the GIL, so two threads share the cores: a worker encodes the next
chunks while the main thread folds in the current one, then helps to encode what is left
of the next, block by block, so whichever side is slower the other helps.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.index.encoder import NonFiniteInput
from sae.index.stats import FeatureStats


def store_chunks(store: ActivationStore, first_shard: int, windows: int):
    """(shard, first window in shard, token ids, flat ordinary positions, their vectors, last chunk
    of the shard?) for chunks of whole windows. The first chunks are smaller (1/8, 1/4, 1/2 of
    `windows`), and so are the last ones of the store (half of what is left), so that neither
    thread waits long for the other at the start or at the end."""
    d = store.d_model
    smallest = max(1, windows // 8)
    size = smallest
    for k in range(first_shard, store.n_shards):
        acts, toks, flags = store.acts(k), store.tokens(k).numpy(), store.flags(k).numpy()
        w0 = 0
        while w0 < len(acts):
            left = len(acts) - w0
            if k == store.n_shards - 1:
                size = min(size, max(smallest, (left + 1) // 2))
            w1 = w0 + min(size, left)
            ordinary = np.flatnonzero(flags[w0:w1].reshape(-1) == 0)
            yield k, w0, toks[w0:w1], ordinary, acts[w0:w1].reshape(-1, d)[torch.from_numpy(ordinary)], w1 == len(acts)
            w0, size = w1, min(2 * size, windows)


class EncodeJob:
    """One chunk's encoding, `block` rows at a time. The worker thread starts it; the
    statistics thread, once it has folded in the previous chunk, helps with the blocks that
    are left, so neither core waits for the other whichever side is slower."""

    def __init__(self, encoder, x: torch.Tensor):
        self.encoder, self.x = encoder, x
        self.starts = range(0, len(x), encoder.block)
        self.results: list = [None] * len(self.starts)
        self.taken = self.finished = 0
        self.lock = threading.Lock()
        self.all_done = threading.Event()
        if not self.starts:
            self.all_done.set()

    def work(self) -> None:
        while True:
            with self.lock:
                if self.taken == len(self.starts):
                    return
                i = self.taken
                self.taken += 1
            start = self.starts[i]
            try:
                res = self.encoder.encode_block(self.x[start:start + self.encoder.block], start)
            except BaseException as e:  # handed to the thread that collects the result
                res = e
            with self.lock:
                self.results[i] = res
                self.finished += 1
                if self.finished == len(self.starts):
                    self.all_done.set()

    def cancel(self) -> None:
        with self.lock:
            self.taken = len(self.starts)

    def result(self):
        self.work()
        self.all_done.wait()
        for r in self.results:
            if isinstance(r, BaseException):
                raise r
        return self.encoder.finish(self.x, self.results)


def stream(store: ActivationStore, stats: FeatureStats, encoder, first_shard: int, save, *,
           chunk_tokens: int, checkpoint_seconds: float, progress: bool = True) -> None:
    """Encode the next chunks in a worker thread while this thread folds in the current one,
    then helps to encode what is left of the next (`EncodeJob`). Torch and NumPy release
    the GIL, so the cores share the work; each thread's torch ops get half of torch's threads."""
    from tqdm.auto import tqdm

    T = store.context_size
    shard_windows = int(store.manifest["shard_windows"])
    total = sum(s["n_windows"] for s in store.manifest["shards"][first_shard:]) * T
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="index", disable=not progress, smoothing=0.1)
    last_save = time.monotonic()
    chunks = store_chunks(store, first_shard, max(1, chunk_tokens // T))
    pending: deque = deque()
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=1)

    def start_next() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            job = EncodeJob(encoder, chunk[4])
            pool.submit(job.work)
            pending.append((chunk, job))

    torch.set_num_threads(max(1, threads // 2))
    try:
        start_next()
        start_next()  # two chunks ahead: the worker never waits for this thread to hand it work
        while pending:
            (k, w0, toks, ordinary, _, shard_done), job = pending.popleft()
            try:
                codes = job.result()
            except NonFiniteInput:
                raise SaexError(f"NaN/inf activations in shard {k} of {store.path}",
                                "harvest the store again (with --precision fp32 if it persists)") from None
            start_next()
            stats.add((k * shard_windows + w0) * T, toks, ordinary, codes.cols, ordinary[codes.rows], codes.vals)
            bar.update(toks.size)
            if shard_done and k + 1 < store.n_shards and time.monotonic() - last_save >= checkpoint_seconds:
                save(k + 1)  # merges the pending pair runs first
                last_save = time.monotonic()
    finally:
        for _, job in pending:
            job.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(threads)
    bar.close()
