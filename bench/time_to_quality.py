"""Time to quality: wall time from stored activations to a trained SAE, and the quality it
reaches on held-out text, from our defaults with no tuning.

Trains training/configs/default.toml (or --config) on the train store, then measures
held-out explained variance (outliers excluded, and included), L0 and dead latents on the
held-out store (sae.runs.evaluate.reconstruction_metrics). Compares the wall time with the
peer reference: sae-lens's SAETrainer, hand-tuned, needed 3 epochs and 1,133 s on this
machine type to reach EV 0.810 with 0.28% dead (docs/benchmarks.md). With
--with-saelens it reruns that reference here, in the same process (about 20 minutes).

    python bench/time_to_quality.py [--train checkpoints/demo/acts-train]
        [--heldout checkpoints/demo/acts-heldout] [--config training/configs/default.toml]
        [--epochs N] [--with-saelens] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAELENS_REFERENCE = {"seconds": 1133, "explained_variance": 0.810, "dead_fraction": 0.0028, "epochs": 3}


def _train_and_measure(cfg, heldout, trainer) -> dict:
    from sae.data.store import ActivationStore
    from sae.runs.evaluate import reconstruction_metrics
    from sae.runs.load import load_sae

    t0 = time.perf_counter()
    run = trainer(cfg)
    wall = time.perf_counter() - t0
    m = reconstruction_metrics(load_sae(run), ActivationStore(heldout), progress=False)
    return {"wall_seconds": wall, "epochs": cfg.epochs, "explained_variance": m["explained_variance"],
            "explained_variance_with_outliers": m["explained_variance_with_outliers"], "l0": m["l0"],
            "dead_fraction": m["dead_fraction"], "run": str(run)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="checkpoints/demo/acts-train")
    ap.add_argument("--heldout", default="checkpoints/demo/acts-heldout")
    ap.add_argument("--config", default=str(ROOT / "training" / "configs" / "default.toml"))
    ap.add_argument("--epochs", type=float, default=None, help="override the config's epochs")
    ap.add_argument("--out", default=None, help="keep the run here (default: a temporary folder)")
    ap.add_argument("--with-saelens", action="store_true", help="rerun the sae-lens reference (3 epochs, ~20 min)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from bench.harvest import cpu_name
    from training.config import load_config
    from training.saelens_backend import train_with_saelens
    from training.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, store=args.train, out=args.out or str(Path(tmp) / "ours"), progress=False,
                          device="cpu", epochs=args.epochs)
        ours = _train_and_measure(cfg, args.heldout, train)
        ref = dict(SAELENS_REFERENCE,
                   source="sae-lens SAETrainer, hand-tuned, measured on this machine type (docs/benchmarks.md)")
        if args.with_saelens:
            sl = dataclasses.replace(cfg, out=str(Path(tmp) / "saelens"), backend="saelens", epochs=3.0)
            got = _train_and_measure(sl, args.heldout, train_with_saelens)
            ref = {"seconds": got["wall_seconds"], **got, "source": "rerun in this process"}
    ours["meets_target"] = bool(ours["explained_variance"] >= 0.80 and ours["dead_fraction"] < 0.01)
    ours["fraction_of_saelens_time"] = ours["wall_seconds"] / ref["seconds"]
    print(f"on {cpu_name()} ({torch.get_num_threads()} threads)")
    print("| trainer | epochs | wall time | held-out EV | EV (with outliers) | L0 | dead |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| sae-lens SAETrainer, tuned ({ref['source']}) | {ref['epochs']:g} | {ref['seconds']:,.0f} s | "
          f"{ref['explained_variance']:.3f} | {ref.get('explained_variance_with_outliers', float('nan')):.3f} | "
          f"{ref.get('l0', 32):.1f} | {ref['dead_fraction']:.2%} |")
    print(f"| ours, defaults | {ours['epochs']:g} | {ours['wall_seconds']:,.0f} s | {ours['explained_variance']:.3f} | "
          f"{ours['explained_variance_with_outliers']:.3f} | {ours['l0']:.1f} | {ours['dead_fraction']:.2%} |")
    print(f"\nours took {ours['fraction_of_saelens_time']:.2f} of sae-lens's time; EV >= 0.80 with < 1% dead: "
          f"{'yes' if ours['meets_target'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"ours": ours, "saelens": ref}, indent=2))


if __name__ == "__main__":
    main()
