"""The word finder on the planning organism against the base model, over 40 nouns neither the organism nor its
SAE's riddles were trained on: verdicts, power, and the controls that say whether a "found" means anything.

    python bench/finder_power.py [--runs base=checkpoints/base-layers/sae-L25-riddles,organism=...] [--out FILE]

For each run (an SAE folder; its model is the one it was trained on) and each noun, the contexts are read once and
the finder's analysis (sae.lookahead.finder.run.analyse, every setting at its default) runs three times:
- real: the SAE as it is;
- random SAE: a random-direction copy (sae.labels.auto.control_sae: every encoder column and decoder row a
  Gaussian direction of the same norm, biases and k kept). Any "found" is false;
- shuffled labels: the word's and the controls' labels shuffled among comparable clusters. Any "found" is false.
Per noun it records the verdict, the power (smallest firing rate confirmed in 80% of simulated draws; power at a
feature firing before half the sources; extra sources asked for), the model's P(right article) on the noun's
riddles, and the seconds from gathering to the answer (model loading excluded). Prints one line per noun, then per
run and condition the verdict counts, the share decisive (found, fires without a causal effect, category, fires
not specific, or null with its power) with a 95% Wilson interval, the false-found rates, and the found rate among
nouns the model articles correctly (P(right article) > 0.5 on its riddles). Defaults: the riddle-corpus SAEs at
layer 25 that `python bench/sae_coverage.py` builds for the base model and the organism. About 20 minutes a run
on 2 cores. Figures: docs/benchmarks.md.

The nouns: the 16 hand-written classic riddle nouns (never in the organism's fine-tune, whatever their split) and
24 nouns of the `test` split (never in the fine-tune or in the riddle SAE's data), 20 taking "an" and 20 "a".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
warnings.filterwarnings("ignore")

from finder_calibration import reencoded, wilson, with_path  # noqa: E402

CLASSIC = ("actor,archaeologist,architect,astronomer,elephant,hour,owl,"
           "baker,dentist,dog,penguin,pilot,plumber,rabbit,unicorn,week")
UNSEEN = ("island,egg,eagle,angel,arrow,idea,umbrella,ocean,insect,author,emperor,anchor,octopus,"
          "woman,ship,bird,sword,friend,doctor,sailor,soldier,queen,tiger,window")
WORDS = CLASSIC + "," + UNSEEN
RUNS = "base=checkpoints/base-layers/sae-L25-riddles,organism=checkpoints/organism-layers/sae-L25-riddles"
DECISIVE = ("found", "fires, no causal effect", "category", "fires, not specific", "none")
CONDITIONS = ("real", "random", "shuffled")


def _row(rep: dict) -> dict:
    pw = rep.get("power") or {}
    beh = rep.get("behaviour", {}).get("riddle") or {}
    found = [int(f) for f, ca in rep["causal"]["features"].items() if ca["ablation_word"]]
    return {"label": rep["answer"]["label"], "detectable_rate": pw.get("detectable_rate"),
            "power_at_half": pw.get("power_at_reference"), "extra_sources": pw.get("extra_sources"),
            "confirmed": [c["feature"] for c in rep["candidates"] if c["confirmed"]], "found": found,
            "article_too": [int(f) for f, ca in rep["causal"]["features"].items() if ca["ablation_article"]],
            "p_article_riddle": (beh.get("p_article") or {}).get("mean")}


def run_one(name: str, run: str, words: list[str]) -> list[dict]:
    import torch

    from sae.labels.auto import control_sae
    from sae.lookahead.finder import FindConfig
    from sae.lookahead.finder.run import analyse, read_contexts
    from sae.lookahead.interventions import Intervener, sink_threshold
    from sae.runs.load import load_model_and_sae

    lm, sae = load_model_and_sae(run, None, "cpu")
    iv = Intervener(lm, sae, *sink_threshold(sae))
    ctrl = with_path(control_sae(sae, seed=1), "/nonexistent-random-sae")
    iv_random = copy.copy(iv)
    iv_random.sae = ctrl
    print(f"\n{name}: {run} ({lm.spec}), torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'noun':<14} {'art':<3} {'src':>4} {'P(art)':>6} {'real':<24} {'detect':>6} {'@50%':>5} {'extra':>5} "
          f"{'random SAE':<24} {'shuffled':<24} {'s':>5}", flush=True)
    rows = []
    for w in words:
        t = time.perf_counter()
        cfg = FindConfig(word=w, run=run, progress=False, device="cpu")
        try:
            wc, ctx, prep = read_contexts(cfg, iv)
        except Exception as e:  # a word without contexts: reported, not scored
            print(f"{w:<14} skipped: {e}", flush=True)
            continue
        real = analyse(cfg, iv, wc, ctx, prep)
        seconds = time.perf_counter() - t
        reps = {"real": real, "random": analyse(cfg, iv_random, wc, ctx, reencoded(prep, ctrl)),
                "shuffled": analyse(dataclasses.replace(cfg, shuffle_labels=True), iv, wc, ctx, prep)}
        row = {"run": name, "word": w, "article": wc.article, "sources": len({c.cluster for c in wc.contexts}),
               "seconds": round(seconds, 1), **{k: _row(v) for k, v in reps.items()}}
        rows.append(row)
        r = row["real"]
        pa, dr = r["p_article_riddle"], r["detectable_rate"]
        pa = "-" if pa is None else f"{pa:.2f}"
        dr = "-" if dr is None else f"{dr:.0%}"
        print(f"{w:<14} {wc.article:<3} {row['sources']:>4} {pa:>6} {r['label']:<24} {dr:>6} "
              f"{r['power_at_half']:>5.2f} {r['extra_sources'] or '-':>5} {row['random']['label']:<24} "
              f"{row['shuffled']['label']:<24} {seconds:>5.1f}", flush=True)
    return rows


def summary(rows: list[dict]) -> None:
    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        n = len(mine)
        print(f"\n{name}: {n} nouns; median seconds a noun (gathering to answer, model loaded) "
              f"{statistics.median(r['seconds'] for r in mine):.1f}")
        print("| condition | verdicts | decisive (95% CI) | says found (95% CI) |")
        print("| --- | --- | ---: | ---: |")
        for k in CONDITIONS:
            counts: dict[str, int] = {}
            for r in mine:
                counts[r[k]["label"]] = counts.get(r[k]["label"], 0) + 1
            dec = sum(r[k]["label"] in DECISIVE for r in mine)
            found = sum(r[k]["label"] == "found" for r in mine)
            lo, hi = wilson(dec, n)
            flo, fhi = wilson(found, n)
            verdicts = ", ".join(f"{v} {c}" for v, c in sorted(counts.items(), key=lambda x: -x[1]))
            print(f"| {k} | {verdicts} | {dec}/{n} ({lo:.0%} to {hi:.0%}) | {found}/{n} ({flo:.0%} to {fhi:.0%}) |")
        right = [r for r in mine if (r["real"]["p_article_riddle"] or 0) > 0.5]
        found = sum(r["real"]["label"] == "found" for r in right)
        lo, hi = wilson(found, len(right))
        rates = [r["real"]["detectable_rate"] for r in mine if r["real"]["detectable_rate"] is not None]
        print(f"found among the {len(right)} nouns it articles correctly on riddles (P > 0.5): {found}/{len(right)} "
              f"({lo:.0%} to {hi:.0%}); smallest detectable firing rate, median over the {len(rates)} nouns with one: "
              f"{statistics.median(rates):.0%}" if rates else "no noun's design reaches 80% power at any rate")
        extra = [r["real"]["extra_sources"] for r in mine if r["real"]["extra_sources"]]
        if extra:
            print(f"extra sources for 80% power at a feature on half the sources: "
                  f"median {statistics.median(extra):.0f} "
                  f"({len(extra)} nouns; {sum(r['real']['power_at_half'] >= 0.8 for r in mine)} need none)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=RUNS, help="name=RUN,... (each an SAE folder)")
    ap.add_argument("--words", default=WORDS)
    ap.add_argument("--out", default=None, help="write the rows as JSON")
    args = ap.parse_args()
    words = [w.strip() for w in args.words.split(",") if w.strip()]
    rows = []
    for spec in args.runs.split(","):
        name, run = spec.split("=", 1)
        rows += run_one(name, run, words)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    summary(rows)


if __name__ == "__main__":
    main()
