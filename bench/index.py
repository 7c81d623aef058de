"""Feature-index speed on the demo SAE (TopK, 4608 latents) and its held-out store.

    python bench/index.py [--run checkpoints/demo/sae] [--store checkpoints/demo/acts-heldout]

Prints, on 2 threads:
0. which encoder `sparse_encoder` (so `saex index`) chooses here, and why: TopKEncoder (bf16
   prefilter) where bf16 is fast, TopKEncoderFP32 otherwise (`sae.precision`, SAEX_FAST_BF16);
1. encoding alone, tokens/s: sae-lens's dense `encode` (fp32) + nonzero, against our exact
   sparse encoders, TopKEncoderFP32 and (where bf16 is fast; emulated bf16 would take hours)
   TopKEncoder, taking turns chunk by chunk on the same tokens (and checks they agree). All
   of them give sae-lens's fp32 codes, so each ratio is against sae-lens's fp32 encode;
2. the streaming pass of `saex index` with the chosen encoder (encode + every per-feature
   statistic, the two threads overlapping as in `saex index`), tokens/s, median of --repeats runs;
3. the whole build (setup: loading the SAE and model; stream; finish: profiles, output
   effects, neighbours, writing), into a temporary copy of the run folder.
The machine's load average is printed too: on a shared machine compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sae.data.store import ActivationStore  # noqa: E402
from sae.index.build import IndexConfig, build_index  # noqa: E402
from sae.index.encoder import DenseEncoder, TopKEncoder, TopKEncoderFP32, sparse_encoder  # noqa: E402
from sae.index.stats import FeatureStats  # noqa: E402
from sae.index.stream import stream  # noqa: E402
from sae.precision import speed  # noqa: E402
from sae.runs.load import load_sae  # noqa: E402


def chunks(store: ActivationStore, tokens_per_chunk: int):
    T, d = store.context_size, store.d_model
    per = max(1, tokens_per_chunk // T)
    for k in range(store.n_shards):
        acts, flags, toks = store.acts(k), store.flags(k).numpy(), store.tokens(k).numpy()
        for w0 in range(0, len(acts), per):
            w1 = min(w0 + per, len(acts))
            ordinary = np.flatnonzero(flags[w0:w1].reshape(-1) == 0)
            yield k, w0, toks[w0:w1], ordinary, acts[w0:w1].reshape(-1, d)[torch.from_numpy(ordinary)]


def _check_agree(a: np.ndarray, b: np.ndarray) -> int:
    """Rows where the two codes pick different latents; fails unless every such difference
    is a near-tie (values within 1e-5 relative of each other) at the k-th place."""
    rows = np.flatnonzero(((a != 0) != (b != 0)).any(1))
    for r in rows:
        only = np.concatenate([a[r][(a[r] != 0) & (b[r] == 0)], b[r][(b[r] != 0) & (a[r] == 0)]])
        kth = min(a[r][a[r] != 0].min(), b[r][b[r] != 0].min())
        if np.abs(only - kth).max() > 1e-5 * abs(kth):
            raise SystemExit(f"the encoders disagree on row {r} beyond rounding")
    both = (a != 0) & (b != 0)
    if not np.allclose(a[both], b[both], rtol=1e-5, atol=1e-6):
        raise SystemExit("the encoders' values disagree")
    return len(rows)


DENSE = "sae-lens encode (dense fp32)"
FP32 = "TopKEncoderFP32 (fp32 matmul, exact)"
BF16 = "TopKEncoder (bf16 prefilter, exact)"


def report_choice(sae) -> None:
    enc = sparse_encoder(sae)
    why = speed("cpu", announce=False).reason
    print(f"sparse_encoder chooses {type(enc).__name__} (precision {enc.precision}): {why}")


def bench_encoders(sae, store) -> None:
    encoders = {DENSE: DenseEncoder(sae, chunk=8192), FP32: TopKEncoderFP32(sae)}
    if speed("cpu", announce=False).fast_bf16:
        encoders[BF16] = TopKEncoder(sae)
    took = dict.fromkeys(encoders, 0.0)
    n = 0
    n_differ = dict.fromkeys(encoders, 0)
    for _, _, _, _, x in chunks(store, 8192):
        dense = None
        for name, enc in encoders.items():
            t = time.perf_counter()
            codes = enc(x)
            took[name] += time.perf_counter() - t
            if dense is None:
                dense = codes.dense(len(x), sae.d_sae)
            else:
                n_differ[name] += _check_agree(dense, codes.dense(len(x), sae.d_sae))
        n += len(x)
    base = took[DENSE]
    print(f"\nencoding {n:,} tokens ({sae.d_sae} latents), same chunks, taking turns (ratio: against sae-lens's "
          "fp32 encode, whose codes both sparse encoders give):")
    for name, s in took.items():
        print(f"  {name:<40} {n / s:>10,.0f} tokens/s  {base / s:5.2f}x")
    if BF16 not in encoders:
        print(f"  {BF16}: not timed, bf16 is not fast on this CPU (torch emulates it)")
    else:
        fast = encoders[BF16]
        print(f"  dense fallback rows of the bf16 path: {fast.dense_rows / fast.rows_seen:.2%}")
    differ = ", ".join(f"{name.split()[0]} {n_differ[name]}" for name in encoders if name != DENSE)
    print(f"  rows whose latents differ from sae-lens's: {differ} (each a near-tie at the k-th place, within 1e-5 "
          "relative: fp32 rounding, which also flips such ties in sae-lens between batch sizes)")


def bench_stream(sae, store, run: str, chunk_tokens: int, repeats: int) -> None:
    """The streaming pass exactly as `saex index` runs it (encoding in a worker thread while
    the statistics fold in the previous chunk), timed `repeats` times."""
    vocab = int(store.manifest["model"]["vocab_size"])
    cfg = IndexConfig(run=str(run), progress=False, chunk_tokens=chunk_tokens)
    n = store.n_windows * store.context_size
    rates = []
    for _ in range(repeats):
        stats = FeatureStats(sae.d_sae, vocab, store.context_size)
        enc = sparse_encoder(sae)
        busy = {"encoding": 0.0, "statistics": 0.0}
        lock = threading.Lock()

        def timed(name, fn):
            def run(*a):
                t = time.perf_counter()
                out = fn(*a)
                with lock:
                    busy[name] += time.perf_counter() - t
                return out
            return run

        stats.add = timed("statistics", stats.add)
        enc.encode_block = timed("encoding", enc.encode_block)
        t = time.perf_counter()
        stream(store, stats, enc, 0, lambda k: None, chunk_tokens=cfg.chunk_tokens,
               checkpoint_seconds=cfg.checkpoint_seconds, progress=cfg.progress)
        wall = time.perf_counter() - t
        t = time.perf_counter()
        stats.flush()
        merge = time.perf_counter() - t
        rates.append(n / wall)
        print(f"  streaming pass: {wall:.2f} s, {n / wall:,.0f} tokens/s "
              f"(thread-seconds encoding {busy['encoding']:.2f}, "
              f"folding in statistics {busy['statistics']:.2f}); then the final pair merge {merge:.2f} s, which "
              "`saex index` overlaps with the output effects")
    print(f"streaming pass over {n:,} tokens with {type(enc).__name__} (chunks up to {chunk_tokens:,}), "
          f"median of {repeats}: {statistics.median(rates):,.0f} tokens/s")


def bench_build(run: Path, store: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        for f in ("cfg.json", "sae_weights.safetensors", "run.json"):
            if (run / f).exists():
                shutil.copy(run / f, copy / f)
        t = time.perf_counter()
        out = build_index(IndexConfig(run=str(copy), store=str(store), progress=False))
        wall = time.perf_counter() - t
        m = json.loads((out / "manifest.json").read_text())
        sizes = {k: v["bytes"] / 1e6 for k, v in m["files"].items()}
    s = m["seconds"]
    print(f"\nwhole build (build_index): {wall:.1f} s = setup {s['setup']:.1f} + stream {s['stream']:.1f} "
          f"({m['stream_tokens_per_s']:,.0f} tokens/s) + finish {s['finish']:.1f}")
    print("  files: " + ", ".join(f"{k} {v:.1f} MB" for k, v in sizes.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="checkpoints/demo/sae")
    ap.add_argument("--store", default="checkpoints/demo/acts-heldout")
    ap.add_argument("--chunk-tokens", type=int, default=IndexConfig.chunk_tokens)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the streaming pass")
    ap.add_argument("--skip-build", action="store_true", help="skip the whole-build timing")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sae, store = load_sae(args.run), ActivationStore(args.store)
    print(f"{args.run}: {sae.architecture}, d_sae {sae.d_sae}, k {sae.cfg.get('k')}; store {args.store}: "
          f"{store.n_windows * store.context_size:,} tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")
    report_choice(sae)
    bench_encoders(sae, store)
    print()
    bench_stream(sae, store, args.run, args.chunk_tokens, args.repeats)
    if not args.skip_build:
        bench_build(Path(args.run), Path(args.store))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
