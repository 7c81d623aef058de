"""Cost of a multi-layer harvest against harvesting the deepest layer alone.

Runs `harvest()` end to end (corpus windows, forward, flags, shards written to disk) on the
same windows twice per round, in alternating order: once for the deepest layer alone
(`--layer 25`) and once for all of them (`--layer 5,10,15,20,25`), each into a fresh temp
folder. Prints seconds per run (median over rounds) and the ratio multi / single; the
forward pass is shared, so the difference is the extra storage (one store per layer).

    python bench/harvest_layers.py [--layers 5,10,15,20,25] [--tokens 32768] [--rounds 2] [--precision auto]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="5,10,15,20,25")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--storage-dtype", default="bf16")
    args = ap.parse_args()

    from sae.data.harvest import HarvestConfig, harvest
    from sae.data.models import load_model, parse_layers

    lm = load_model(args.model, device="cpu")
    hooks = parse_layers(args.layers, lm.n_layers, lm.layers_path)
    if hooks is None:
        sys.exit("give at least two layers, e.g. --layers 5,10,15,20,25")
    deepest = str(hooks[-1].layer)
    runs: dict[str, list[float]] = {"single": [], "multi": []}
    root = Path(tempfile.mkdtemp(prefix="saex-bench-layers-"))
    try:
        for r in range(args.rounds + 1):  # round 0 warms up (corpus cache, precision probe)
            order = ("single", "multi") if r % 2 == 0 else ("multi", "single")
            for kind in order:
                out = root / f"{kind}-{r}"
                cfg = HarvestConfig(out=str(out), model=args.model, layer=deepest if kind == "single" else args.layers,
                                    tokens=args.tokens, precision=args.precision, storage_dtype=args.storage_dtype,
                                    compile="no", device="cpu", progress=False)
                t = time.perf_counter()
                harvest(cfg, lm=lm)
                dt = time.perf_counter() - t
                if r:
                    runs[kind].append(dt)
                print(f"round {r} {kind:6s} ({cfg.layer}): {dt:.1f} s", file=sys.stderr)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    single, multi = statistics.median(runs["single"]), statistics.median(runs["multi"])
    n = len(hooks)
    print(f"{args.tokens:,} tokens, {args.precision} forward, {args.storage_dtype} storage, median of {args.rounds}")
    print(f"layer {deepest} alone:       {single:6.1f} s ({args.tokens / single:,.0f} tok/s)")
    print(f"layers {args.layers}: {multi:6.1f} s ({args.tokens / multi:,.0f} tok/s)")
    depth = sum(h.layer + 1 for h in hooks) / (hooks[-1].layer + 1)
    print(f"ratio multi / single: {multi / single:.2f}; {n} separate harvests would cost about "
          f"{depth:.1f}x the single one (blocks run, estimated from depth): {depth * single / multi:.1f}x the multi")

if __name__ == "__main__":
    main()
