"""Training throughput: our TopK/BatchTopK loop vs sae-lens's SAETrainer, in one process.

Both train the same architecture with the same config (training/configs/default.toml
unless told otherwise: 4608 latents, k 32, batch 4096, bf16 autocast) on the same stored
activations, fed the same batches by the same loader, for the same number of steps,
taking turns round by round so that machine noise hits them alike. Throughput is
training vectors per second of wall time inside the training loop (data loading
included, set-up excluded). Prints the median per method and the ratio.

    python bench/train_vs_saelens.py [--store checkpoints/demo/acts-train] [--steps 60] [--rounds 2]
                                     [--architecture topk|batchtopk] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="checkpoints/demo/acts-train")
    ap.add_argument("--config", default=str(ROOT / "training" / "configs" / "default.toml"))
    ap.add_argument("--architecture", default="topk", choices=["topk", "batchtopk"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    import torch

    from bench.harvest import cpu_name
    from sae.data.store import ActivationStore
    from training.config import load_config
    from training.saelens_backend import saelens_vectors_per_second
    from training.train import train

    store = ActivationStore(args.store)
    base = load_config(args.config, store=args.store, architecture=args.architecture, progress=False,
                       checkpoint_every=0, device="cpu")
    base.epochs = args.steps * base.batch_size / store.manifest["n_usable"] + 1e-9
    ours, theirs = [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = dataclasses.replace(base, out=str(Path(tmp) / "run"))
            run = json.loads((train(cfg) / "run.json").read_text())
        ours.append(run["vectors_per_s"])
        theirs.append(saelens_vectors_per_second(dataclasses.replace(base, backend="saelens"), args.steps))
        print(f"round {r + 1}: ours {ours[-1]:,.0f} vectors/s, sae-lens {theirs[-1]:,.0f} vectors/s", flush=True)
    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "architecture": args.architecture, "d_sae": base.d_sae, "k": base.k, "batch_size": base.batch_size,
              "steps": args.steps, "rounds": args.rounds, "autocast": base.autocast,
              "ours_vectors_per_s": statistics.median(ours), "saelens_vectors_per_s": statistics.median(theirs)}
    result["ratio"] = result["ours_vectors_per_s"] / result["saelens_vectors_per_s"]
    print(f"\n{args.architecture}, {base.d_sae} latents, k {base.k}, batch {base.batch_size}, {args.steps} steps x "
          f"{args.rounds} rounds on {result['cpu']} ({result['threads']} threads)")
    print(f"| trainer | vectors/s | ratio |\n| --- | --- | --- |\n"
          f"| sae-lens SAETrainer, autocast | {result['saelens_vectors_per_s']:,.0f} | 1.00x |\n"
          f"| ours (sparse backward, bf16 encoder) | {result['ours_vectors_per_s']:,.0f} | {result['ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
