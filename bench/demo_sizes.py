"""Demo sizes: how the SAE's held-out quality depends on the store's tokens and the epochs trained, and
what the evaluation's bf16 splice changes. The figures behind `saex/demo_plan.py`'s floor and target.

    python bench/demo_sizes.py [--train checkpoints/demo-full/acts-train] [--heldout .../acts-heldout]
        [--sizes 2x8,3x3,3x6,4x2] [--ce-windows 64] [--eval-run checkpoints/demo-full/sae]

1. For each SHARDSxEPOCHS: a store made of the first SHARDS shards of --train (shards linked, not copied;
   its manifest counts only those shards' vectors), the default TopK config trained EPOCHS epochs over it,
   then held-out EV (outliers excluded), dead latents, CE-loss and KL scores on --ce-windows windows (bf16
   splice where bf16 is fast, 95% intervals resampling windows). Each row is a few minutes on 2 cores.
2. With --eval-run: that SAE evaluated on the same windows in fp32 and in bf16, with the seconds each took.
Run on the full-size demo's stores (`saex demo --full --out-dir checkpoints/demo-full`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL  # noqa: E402
from sae.runs.evaluate import evaluate  # noqa: E402
from training.config import load_config  # noqa: E402
from training.train import train  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "default.toml"


def subset_store(src: Path, n_shards: int, out: Path) -> Path:
    """The first n_shards shards of `src` as a store of their own (files linked)."""
    m = json.loads((src / "manifest.json").read_text())
    if n_shards > m["n_shards"]:
        raise SystemExit(f"{src} has only {m['n_shards']} shards")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for k in range(n_shards):
        for part in ("acts.npy", "flags.npy", "json", "tokens.npy"):
            link = out / "shards" / f"{k:05d}.{part}"
            if not link.exists():
                os.symlink((src / "shards" / f"{k:05d}.{part}").resolve(), link)
    flags = np.concatenate([np.load(src / "shards" / f"{k:05d}.flags.npy") for k in range(n_shards)])
    windows = sum(s["n_windows"] for s in m["shards"][:n_shards])
    m |= {"shards": m["shards"][:n_shards], "n_shards": n_shards, "n_windows": windows,
          "n_tokens": windows * m["context_size"], "n_usable": int((flags == 0).sum()),
          "n_special": int(((flags & FLAG_SPECIAL) != 0).sum()), "n_outliers": int(((flags & FLAG_OUTLIER) != 0).sum())}
    np.save(out / "tokens.npy", np.load(src / "tokens.npy")[:windows])
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default="checkpoints/demo-full/acts-train")
    ap.add_argument("--heldout", default="checkpoints/demo-full/acts-heldout")
    ap.add_argument("--sizes", default="2x8,3x3,3x6,4x2", help="SHARDSxEPOCHS, comma-separated")
    ap.add_argument("--ce-windows", type=int, default=64)
    ap.add_argument("--eval-run", default=None, help="also time this SAE's evaluation in fp32 against bf16")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}")
    src = Path(args.train)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'tokens':>10} {'epochs':>6} {'vectors':>10} {'train s':>8} {'EV':>6} {'dead':>6} "
              f"{'CE-loss score (95% CI)':>26} {'KL':>6}")
        for spec in filter(None, args.sizes.split(",")):
            shards, epochs = spec.split("x")
            store = subset_store(src, int(shards), Path(tmp) / f"acts-{shards}")
            t = time.perf_counter()
            run = train(load_config(CONFIG, store=str(store), out=str(Path(tmp) / f"sae-{spec}"),
                                    epochs=float(epochs), progress=False))
            seconds = time.perf_counter() - t
            r = evaluate(run, store=args.heldout, ce_windows=args.ce_windows, precision="auto", progress=False)
            vectors = json.loads((run / "run.json").read_text())["vectors"]
            ci = r["intervals"]["ce_loss_score"]
            tokens = json.loads((store / "manifest.json").read_text())["n_tokens"]
            print(f"{tokens:>10,} {float(epochs):>6g} {vectors:>10,} {seconds:>8.0f} {r['explained_variance']:>6.3f} "
                  f"{r['dead_fraction']:>6.2%} {r['ce_loss_score']:>8.3f} ({ci[0]:.3f}-{ci[1]:.3f})    "
                  f"{r['kl_score']:>6.3f}", flush=True)
    if args.eval_run:
        for precision in ("fp32", "bf16"):
            t = time.perf_counter()
            r = evaluate(args.eval_run, store=args.heldout, ce_windows=args.ce_windows, precision=precision,
                         progress=False)
            print(f"eval {precision}: {time.perf_counter() - t:.0f} s, CE-loss score {r['ce_loss_score']:.5f} "
                  f"{r['intervals']['ce_loss_score']}, KL score {r['kl_score']:.4f}", flush=True)


if __name__ == "__main__":
    main()
