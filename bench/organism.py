"""The planning organism against the base model and the shuffled-article control: how each chooses the article
on nouns none of them was trained on, and what the fine-tune cost here.

    python bench/organism.py [--out checkpoints/organisms] [--examples 4000] [--lr 5e-5] [--seed 0]

Builds (or reuses) OUT/plans (`saex organism --articles noun`) and OUT/shuffled (`--articles shuffled`): the same
prompts, the same budget and seed. Prints per evaluation set (the unseen half's WordNet riddles, the same as chat
questions, the hand-written classics) sign accuracy, an-recall, a-recall, the an-vs-a gap with its 95% interval
and P(noun | right article) for the base model, the organism and the control, then the seconds and examples/s
of each fine-tune. About 6.5 minutes a model on 2 cores with fast bf16. The aim the issue names (sign accuracy
>= 0.80 and an-recall >= 0.70 on unseen nouns in <= 10 minutes) is for docs/benchmarks.md, not printed as a grade.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from sae.lookahead.organism import OrganismConfig, build_organism  # noqa: E402


def _row(name: str, s: dict) -> str:
    g = s["gap"]
    ci = f"{g['ci'][0]:.2f} to {g['ci'][1]:.2f}" if g["value"] is not None else "n/a"
    return (f"| {name} | {s['sign_accuracy']:.2f} | {s['an_recall']:.2f} | {s['a_recall']:.2f} | "
            f"{g['value']:.2f} ({ci}) | {s['p_noun_given_article']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="checkpoints/organisms")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--examples", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reports = {}
    for articles, folder in (("noun", "plans"), ("shuffled", "shuffled")):
        cfg = OrganismConfig(out=str(Path(args.out) / folder), model=args.model, articles=articles,
                             examples=args.examples, lr=args.lr, seed=args.seed)
        reports[articles] = build_organism(cfg)
    plans, shuffled = reports["noun"], reports["shuffled"]
    for name in plans["behaviour"]["after"]:
        print(f"\n{name}\n")
        print("| model | sign accuracy | an-recall | a-recall | gap, nats (95% CI) | P(noun given article) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(_row("base", plans["behaviour"]["before"][name]))
        print(_row("organism", plans["behaviour"]["after"][name]))
        print(_row("shuffled control", shuffled["behaviour"]["after"][name]))
    print("\n| fine-tune | steps | precision | seconds (all) | fine-tune s | examples/s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name, r in (("organism", plans), ("shuffled control", shuffled)):
        t = r["training"]
        rate = f"{t['examples_per_s']:.1f}" if t["examples_per_s"] else "resumed"
        print(f"| {name} | {t['steps']} | {t['precision']} | {r['seconds']['total']:.0f} | "
              f"{r['seconds']['fine_tune']:.0f} | {rate} |")
    g_plan = plans["behaviour"]["after"]["unseen riddles"]["gap"]["value"]
    g_base = plans["behaviour"]["before"]["unseen riddles"]["gap"]["value"]
    g_neg = shuffled["behaviour"]["after"]["unseen riddles"]["gap"]["value"]
    print(f"\nunseen riddles: organism gap / base gap = {g_plan / g_base:.2f}x; "
          f"shuffled control / base = {g_neg / g_base:.2f}x")


if __name__ == "__main__":
    main()
