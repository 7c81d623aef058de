"""Training throughput: our TopK/BatchTopK loop vs sae-lens's SAETrainer, in one process.

Both train the same architecture with the same config (training/configs/default.toml
unless told otherwise: 4608 latents, k 32, batch 4096) on the same stored activations,
fed the same batches by the same loader, for the same number of steps, taking turns round
by round so that machine noise hits them alike. Ours runs as `autocast = "auto"` chooses
on this machine (bf16 only where it is fast); sae-lens runs in fp32 and, where bf16 is
fast, also with autocast, and the faster of the two is the baseline. Throughput is
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
    bf16, reason = base.bf16("cpu")
    peer = {"fp32": dataclasses.replace(base, backend="saelens", autocast="no")}
    if bf16:
        peer["bf16 autocast"] = dataclasses.replace(base, backend="saelens", autocast="yes")
    ours: list[float] = []
    theirs: dict[str, list[float]] = {k: [] for k in peer}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = dataclasses.replace(base, out=str(Path(tmp) / "run"))
            run = json.loads((train(cfg) / "run.json").read_text())
        ours.append(run["vectors_per_s"])
        for name, c in peer.items():
            theirs[name].append(saelens_vectors_per_second(c, args.steps))
        print(f"round {r + 1}: ours {ours[-1]:,.0f} vectors/s, sae-lens "
              + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in theirs.items()), flush=True)
    rates = {k: statistics.median(v) for k, v in theirs.items()}
    best = max(rates, key=rates.get)
    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "architecture": args.architecture, "d_sae": base.d_sae, "k": base.k, "batch_size": base.batch_size,
              "steps": args.steps, "rounds": args.rounds, "ours_bf16_encoder": bf16, "precision_reason": reason,
              "ours_vectors_per_s": statistics.median(ours), "saelens_vectors_per_s": rates, "saelens_best": best}
    result["ratio"] = result["ours_vectors_per_s"] / rates[best]
    print(f"\n{args.architecture}, {base.d_sae} latents, k {base.k}, batch {base.batch_size}, {args.steps} steps x "
          f"{args.rounds} rounds on {result['cpu']} ({result['threads']} threads, {result['cpu_capability']})")
    print(f"precision: {reason}")
    print("| trainer | vectors/s | ratio to sae-lens's best |\n| --- | ---: | ---: |")
    for name, v in rates.items():
        print(f"| sae-lens SAETrainer, {name} | {v:,.0f} | {v / rates[best]:.2f}x |")
    print(f"| ours (sparse backward, {'bf16' if bf16 else 'fp32'} encoder) | {result['ours_vectors_per_s']:,.0f} | "
          f"{result['ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
