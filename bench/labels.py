"""Automatic labels: speed of `saex label`, and how well its labels separate the trained SAE
from its controls.

    python bench/labels.py [--run checkpoints/demo/sae] [--store PATH] [--sample 32]
                           [--sweep 0.3,0.5,0.7 --sweep-step 8]

Prints:
1. labelling every feature of the SAE alone (`label_sae`: the position table, one encoding
   pass, proposing and scoring every feature), seconds per stage;
2. the SAE with both controls as `saex label` runs them (variants in forked processes), seconds;
3. a brute-force check on --sample random labelled features: each chosen label's token-level
   F1 recomputed with a plain position mask over the scoring half, and whether it is equal;
4. per variant (this SAE, random-direction, decoder-shuffled) and label kind: features, median
   held-out detection balanced accuracy, token F1 and precision; the F1 ratio to the random
   control; how many activating windows the chosen labels call active, decile by decile of the
   windows' largest activation, and how many quiet ones;
5. with --sweep: the medians for other `min_precision` values on every --sweep-step-th feature.
Nothing is written into the run folder.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sae.data.store import ActivationStore  # noqa: E402
from sae.labels.auto import (  # noqa: E402
    FeatureLabeller,
    LabelConfig,
    _separator,
    boosted_tokens,
    build_context,
    label_sae,
    run_variants,
    variant_summary,
)
from sae.labels.controls import control_sae, decoder_shuffled_sae  # noqa: E402
from sae.labels.detection import DECILES, draw, feature_rng, firings_in  # noqa: E402
from sae.labels.heldout import SCORE, encode_firings  # noqa: E402
from sae.labels.predicates import Predicate  # noqa: E402
from sae.labels.propose import StatisticalExplainer  # noqa: E402


def brute_token_counts(pred: dict, act_col: np.ndarray, tokens: np.ndarray, half: np.ndarray) -> tuple[int, int]:
    """(true positives, positions where it holds) of a token / n-gram / position predicate (or
    an and/or of them) over the usable scoring-half positions, by a plain mask."""
    W, T = tokens.shape

    def mask(p: dict) -> np.ndarray:
        k = p["kind"]
        if k in ("and", "or"):
            a, b = mask(p["parts"][0]), mask(p["parts"][1])
            return a & b if k == "and" else a | b
        m = np.zeros((W, T), bool)
        if k == "position":
            m[:, [q for q in p["values"] if 0 <= q < T]] = True
        elif k in ("token", "boosts_output"):
            d = p.get("offset", 1)
            hit = np.isin(tokens, p["values"])
            if d >= 0:
                m[:, :T - d] = hit[:, d:]
            else:
                m[:, -d:] = hit[:, :T + d]
        elif k == "ngram":
            for g in p["values"]:
                n = len(g)
                ok = np.ones((W, T - n + 1), bool)
                for i, t in enumerate(g):
                    ok &= tokens[:, i:T - n + 1 + i] == t
                m[:, n - 1:] |= ok
        else:
            raise ValueError(k)
        return m

    holds = mask(pred) & (half == SCORE)
    return int((holds & (act_col > 0)).sum()), int(holds.sum())


def medians(results: dict[str, list[dict]]) -> None:
    summ = {name: variant_summary(recs) for name, recs in results.items()}
    real = summ["real"]
    print(f"{'variant':<10} {'kind':<14} {'features':>8} {'detection':>9} {'F1':>6} {'precision':>9}")
    for name, s in summ.items():
        prec = [r["precision"] or 0.0 for r in results[name] if r["n_fired"] > 0 and r["label"]]
        print(f"{name:<10} {'best label':<14} {s['labelled']:>8,} {s['detection']['median']:>9.3f} "
              f"{s['f1']['median']:>6.3f} {np.median(prec) if prec else float('nan'):>9.3f}")
        for kind, d in s["kinds"].items():
            det = d["median_detection"]
            print(f"{'':<10} {kind:<14} {d['n']:>8,} {det if det is not None else float('nan'):>9.3f} "
                  f"{d['median_f1']:>6.3f}")
    if "random" in summ:
        r = summ["random"]
        print(f"F1 ratio to the random control: {real['f1']['median'] / max(r['f1']['median'], 1e-9):.2f}x; "
              f"detection {real['detection']['median']:.3f} against {r['detection']['median']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="checkpoints/demo/sae")
    ap.add_argument("--store", default=None)
    ap.add_argument("--sample", type=int, default=32)
    ap.add_argument("--sweep", default="", help="min_precision values, comma-separated")
    ap.add_argument("--sweep-step", type=int, default=8)
    ap.add_argument("--decile-step", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sae.data.models import load_model
    from sae.index.tables import vocab_strings
    from sae.runs.load import load_sae
    from sae.runs.stores import default_heldout_store

    sae = load_sae(args.run, device="cpu")
    store = ActivationStore(args.store or default_heldout_store(sae))
    lm = load_model(store.manifest["model"]["spec"], device="cpu")
    vocab = vocab_strings(lm, int(lm.model.get_output_embeddings().weight.shape[0]))
    cfg = LabelConfig(run=args.run, store=str(store.path), progress=False)
    print(f"{sae.d_sae:,} features, {store.n_windows * store.context_size:,} held-out tokens, "
          f"{torch.backends.cpu.get_cpu_capability()}")

    tm: dict = {}
    t = time.perf_counter()
    label_sae(sae, store, cfg, vocab, lm, timings=tm)
    alone = time.perf_counter() - t
    print(f"1. this SAE alone: {alone:.1f} s (position table and split {tm['context']:.1f} s, encoding "
          f"{tm['encode']:.1f} s, proposing and scoring {tm['label']:.1f} s = "
          f"{tm['label'] / sae.d_sae * 1e3:.1f} ms a feature)")

    t = time.perf_counter()
    ctx = build_context(store, vocab, cfg, _separator(lm))
    saes = {"real": sae, "random": control_sae(sae, cfg.seed), "shuffled": decoder_shuffled_sae(sae, cfg.seed)}
    fir = {"real": encode_firings(sae, store, ctx.split), "random": encode_firings(saes["random"], store, ctx.split)}
    fir["shuffled"] = fir["real"]
    labs = {n: FeatureLabeller(ctx, fir[n], boosted_tokens(s, lm, cfg.boosted), cfg,
                               StatisticalExplainer(cfg.max_values, cfg.max_positions)) for n, s in saes.items()}
    results = run_variants(labs, sae.d_sae, None, False)
    print(f"2. with both controls, as `saex label` runs them: {time.perf_counter() - t:.1f} s")

    tokens = ctx.table.tokens
    half = ctx.split.half.reshape(tokens.shape)
    real = results["real"]
    labelled = [r for r in real if r["label"] and r["kind"] in ("token", "ngram", "position", "or", "and")]
    rng = np.random.default_rng(0)
    sample = [labelled[i] for i in rng.choice(len(labelled), min(args.sample, len(labelled)), replace=False)]
    t = time.perf_counter()
    bad = 0
    for r in sample:
        pos, act = fir["real"].of(r["feature"])
        col = np.zeros(tokens.size, np.float32)
        col[pos] = act
        tp, n_pred = brute_token_counts(r["predicate"], col.reshape(tokens.shape), tokens, half)
        n_fired = int(((col.reshape(tokens.shape) > 0) & (half == SCORE)).sum())
        f1 = 2 * tp / (n_fired + n_pred) if n_fired + n_pred else None
        bad += not (f1 is None and r["f1"] is None or f1 is not None and abs(f1 - (r["f1"] or 0)) < 1e-5)
    per = (time.perf_counter() - t) / max(len(sample), 1)
    print(f"3. brute-force check of the chosen labels' token-level F1 ({per * 1e3:.1f} ms a feature): "
          f"{'equal' if not bad else f'DIFFERENT on {bad}'} on {len(sample)} features")
    print("4. held-out medians")
    medians(results)
    for name in ("real", "random"):
        hit, n, quiet = np.zeros(DECILES), np.zeros(DECILES), []
        for r in results[name][::args.decile_step]:
            if not r.get("detection"):
                continue
            hp, ha = firings_in(fir[name], ctx.split, r["feature"], SCORE)
            test = draw(ctx.split, hp, ha, SCORE, feature_rng(cfg.seed, r["feature"], SCORE), cfg.per_decile,
                        cfg.non_activating, 10, ctx.usable_examples)
            v = ctx.scorer.window_verdicts(Predicate.from_json(r["predicate"]), test, SCORE)
            for d in range(DECILES):
                hit[d] += v[test.decile == d].sum()
                n[d] += (test.decile == d).sum()
            quiet.append(v[~test.active].mean())
        print(f"   {name}: activating windows the label calls active, by activation decile (weakest first): "
              f"{' '.join(f'{x:.2f}' for x in hit / np.maximum(n, 1))}; quiet windows called active: "
              f"{np.mean(quiet):.3f} (every {args.decile_step}th feature)")
    for mp in [float(x) for x in args.sweep.split(",") if x]:
        c = LabelConfig(run=args.run, store=str(store.path), progress=False, min_precision=mp)
        feats = range(0, sae.d_sae, args.sweep_step)
        sub = {}
        for n in ("real", "random"):
            lab = FeatureLabeller(ctx, fir[n], labs[n].boosted, c, StatisticalExplainer(c.max_values, c.max_positions))
            sub[n] = [lab.label(f) for f in feats]
        print(f"5. min_precision {mp} (every {args.sweep_step}th feature)")
        medians(sub)


if __name__ == "__main__":
    main()
