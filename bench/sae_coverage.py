"""Where the SAE loses the planning organism's article signal: per model and layer, how much of the article
probe's an-vs-a separation at -1 and of the causal gap the SAE's latents carry and how much its error term does.

    python bench/sae_coverage.py [--organism checkpoints/organisms/plans] [--out checkpoints] [--layers 15,20,25]

Builds (or reuses) for the base model and for the organism: a multi-layer activation store of the default corpus
(`saex harvest --layer 15,20,25`, 507,904 tokens, as the 15-minute demo), one TopK SAE per layer with the demo's
settings (`saex train`, 4,608 latents, k 32, 4.65 epochs) and the depth sweep with those SAEs (`saex depth`,
layers 5-25, report with `sae_coverage`). Then two variants of the organism's SAE at the deepest layer: four times
wider (18,432 latents), and trained on `--corpus builtin+riddles`, where a/an riddles with their answers (the
fine-tune's own half of the nouns, WordNet and GCIDE) are interleaved with the default corpus; and that riddle-corpus
SAE on the base model, the control. (The figures in docs/benchmarks.md were measured with the same mix written out
as a JSONL file before it became a corpus spec: the same texts in the same order, documents split by other
ids.) Prints one row per SAE. About 30 minutes on
2 cores with fast bf16 when nothing exists yet (harvest 4.5 minutes a model, training 70 s an SAE, 5 minutes for the
wide one, a depth sweep 1.5 minutes). `python bench/organism.py` builds the organism first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENS = 507_904
EPOCHS = "4.65"


def saex(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "saex", *args, "--progress", "no"], check=True, cwd=ROOT)


def build(model: str, folder: Path, layers: list[int]) -> None:
    store = folder / "acts"
    saex("harvest", "--model", model, "--layer", ",".join(map(str, layers)), "--tokens", str(TOKENS),
         "--out", str(store))
    for L in layers:
        if not (folder / f"sae-L{L}" / "cfg.json").exists():
            saex("train", "--store", str(store / f"layer-{L}"), "--out", str(folder / f"sae-L{L}"), "--epochs", EPOCHS)
    runs = ",".join(str(folder / f"sae-L{L}") for L in layers)
    saex("depth", "--model", model, "--run", runs, "--layers", "5,10,15,20,25", "--out", str(folder / "depth"))


def variant(model: str, folder: Path, name: str, layer: int, corpus: str | None, d_sae: int | None) -> None:
    run = folder / name
    if corpus is not None:
        store = folder / f"acts-{name}"
        saex("harvest", "--model", model, "--layer", str(layer), "--tokens", str(TOKENS), "--corpus", corpus,
             "--out", str(store))
    else:
        store = folder / "acts" / f"layer-{layer}"
    if not (run / "cfg.json").exists():
        saex("train", "--store", str(store), "--out", str(run), "--epochs", EPOCHS,
             *(["--d-sae", str(d_sae)] if d_sae else []))
    saex("depth", "--model", model, "--run", str(run), "--layers", str(layer), "--out", str(folder / f"depth-{name}"))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _ci(f: dict) -> str:
    lo, hi = f.get("fraction_ci") or [None, None]
    return f"{_pct(f['fraction_removed'])} ({_pct(lo)} to {_pct(hi)})"


def rows(label: str, report: Path, runs: dict[int, Path]) -> list[str]:
    r = json.loads(report.read_text())
    out = []
    for L, run in runs.items():
        c = r["sae_coverage"].get(str(L))
        if c is None:
            continue
        metrics = (run / "metrics.jsonl").read_text().splitlines()
        ev = json.loads(metrics[-1])["explained_variance"]
        d_sae = json.loads((run / "cfg.json").read_text())["d_sae"]
        probe = r["article_probe"][str(L)]["-1"]
        p = c["probe_direction"]
        share = (f"{_pct(p['latents_share'])} ({_pct(p['latents_share_ci'][0])} to {_pct(p['latents_share_ci'][1])})"
                 if probe["above_chance"] else "probe at chance")
        rp = c["retrained_probe"]
        feats = r["sae"].get(str(L), {})
        out.append(f"| {label} | {L} | {d_sae:,} | {ev:.3f} | {probe['accuracy']:.2f} | {share} | "
                   f"{rp['reconstruction']['accuracy']:.2f} / {rp['error']['accuracy']:.2f} | "
                   f"{_ci(c['causal']['error_mean_ablated'])} | {_ci(c['causal']['latents_mean_ablated'])} | "
                   f"{_pct(feats.get('fraction_removed'))} | {r['output']['value']:.2f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--organism", default="checkpoints/organisms/plans")
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--out", default="checkpoints")
    ap.add_argument("--layers", default="15,20,25")
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    top = max(layers)
    out = Path(args.out)
    if not (Path(args.organism) / "organism.json").exists():
        sys.exit(f"no organism at {args.organism}: run python bench/organism.py first")
    base, org = out / "base-layers", out / "organism-layers"
    build(args.base, base, layers)
    build(args.organism, org, layers)
    variant(args.organism, org, f"sae-L{top}-wide", top, None, 4 * 4608)
    mix = "builtin+riddles"  # sae/data/riddles.py: the select half's answered riddles, interleaved
    variant(args.organism, org, f"sae-L{top}-riddles", top, mix, None)
    variant(args.base, base, f"sae-L{top}-riddles", top, mix, None)  # the control: riddles, no planning
    print("| model | layer | latents | EV (train) | article probe at -1 | probe separation in latents (95% CI) | "
          "retrained probe: reconstruction / error | error term at mean removes | latents at mean remove | "
          "10 chosen features remove | output gap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lines = rows("base", base / "depth" / "report.json", {L: base / f"sae-L{L}" for L in layers})
    lines += rows("organism", org / "depth" / "report.json", {L: org / f"sae-L{L}" for L in layers})
    for folder, name, what in ((org, "wide", "organism, 4x wider"),
                               (org, "riddles", "organism, riddles in the SAE's data"),
                               (base, "riddles", "base, riddles in the SAE's data")):
        lines += rows(what, folder / f"depth-sae-L{top}-{name}" / "report.json", {top: folder / f"sae-L{top}-{name}"})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
