"""Automatic-label speed: `saex label`'s vectorised scoring against brute-force scorers.

    python bench/labels.py [--run checkpoints/demo-avx2/sae] [--store checkpoints/demo-avx2/acts-heldout]
                           [--sample 32]

Prints:
1. labelling every feature of the run (`sae.labels.auto.label_sae`: one encoding pass over
   the held-out store, counting, proposing, scoring every candidate of every feature), seconds;
2. a brute-force scorer on --sample random labelled features: the scoring half encoded once,
   then per feature its dense activation column and, per candidate predicate, a position mask
   (numpy over the whole half) and the confusion counts. It checks that its scores equal the
   vectorised ones, and extrapolates its time per feature to all features;
3. the ratio (brute force for all features, extrapolated) / (vectorised, all features). The
   encoding both share is timed apart and left out of the brute force's figure, so the ratio
   is about scoring, not encoding (a per-feature encoding pass, as `score_feature_claim`
   makes, would cost one store pass per feature on top).
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
from sae.labels.auto import OFFSETS, LabelConfig, label_sae, window_half  # noqa: E402


def brute_scores(pred: dict, act: np.ndarray, tokens: np.ndarray, universe: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, n_pred, n_fired, n) of one predicate for one feature's "window pos" activations."""
    T = tokens.shape[1]
    holds = np.zeros_like(universe)
    if pred["kind"] == "position":
        holds[:, [q for q in pred["positions"] if 0 <= q < T]] = True
    else:
        d = {"fires_before": pred.get("offset"), "fires_after": -1, "boosts_output": 1}[pred["kind"]]
        hit = np.isin(tokens, pred["tokens"])
        if d >= 0:
            holds[:, :T - d] = hit[:, d:]
        else:
            holds[:, -d:] = hit[:, :T + d]
    holds &= universe
    fired = (act > 0) & universe
    return int((fired & holds).sum()), int(holds.sum()), int(fired.sum()), int(universe.sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="checkpoints/demo-avx2/sae")
    ap.add_argument("--store", default=None)
    ap.add_argument("--sample", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sae.data.models import load_model
    from sae.index.encoder import sparse_encoder
    from sae.index.tables import vocab_strings
    from sae.runs.load import load_sae
    from sae.runs.stores import default_heldout_store

    sae = load_sae(args.run, device="cpu")
    store = ActivationStore(args.store or default_heldout_store(sae))
    lm = load_model(store.manifest["model"]["spec"], device="cpu")
    vocab = vocab_strings(lm, int(lm.model.get_output_embeddings().weight.shape[0]))
    cfg = LabelConfig(run=args.run, store=str(store.path), progress=False)
    print(f"{sae.d_sae:,} features, {store.n_windows * store.context_size:,} held-out tokens")

    t = time.perf_counter()
    tm: dict = {}
    records = label_sae(sae, store, cfg, vocab, lm, timings=tm)
    vec = time.perf_counter() - t
    print(f"1. vectorised: every feature labelled and scored in {vec:.1f} s (encoding + counting "
          f"{tm['encode_count']:.1f} s, proposing {tm['propose']:.1f} s, scoring all {tm['predicates']:,} "
          f"candidates on both halves {tm['score']:.2f} s)")

    tokens = np.concatenate([store.tokens(k).numpy() for k in range(store.n_shards)])
    flags = np.concatenate([store.flags(k).numpy() for k in range(store.n_shards)])
    universe = (flags == 0) & (window_half(np.arange(len(tokens)), cfg.split_block) == 1)[:, None]
    t = time.perf_counter()
    enc = sparse_encoder(sae)
    acts = torch.cat([store.acts(k) for k in range(store.n_shards)]).reshape(-1, store.d_model)
    rows_u = np.flatnonzero(universe.reshape(-1))
    codes = enc(acts[torch.from_numpy(rows_u)])
    enc_s = time.perf_counter() - t
    labelled = [r for r in records if r["label"]]
    rng = np.random.default_rng(0)
    sample = [labelled[i] for i in rng.choice(len(labelled), min(args.sample, len(labelled)), replace=False)]
    n_cand = 0
    t = time.perf_counter()
    mismatches = 0
    for r in sample:
        hit = codes.cols == r["feature"]
        act = np.zeros(universe.size, np.float32)
        act[rows_u[codes.rows[hit]]] = codes.vals[hit]
        act = act.reshape(universe.shape)
        for c in r["candidates"]:
            tp, n_pred, n_fired, _ = brute_scores(c["predicate"], act, tokens, universe)
            f1 = 2 * tp / (n_fired + n_pred) if n_fired + n_pred else None
            mismatches += not (f1 is None and c["f1"] is None or f1 is not None and c["f1"] is not None
                               and abs(f1 - c["f1"]) < 1e-5)
            n_cand += 1
    brute = time.perf_counter() - t
    per = brute / len(sample)
    print(f"2. brute force: {len(sample)} features ({n_cand} candidates) in {brute:.2f} s = {per * 1e3:.1f} ms a "
          f"feature, {per * sae.d_sae:.0f} s for all {sae.d_sae:,} (plus {enc_s:.1f} s of shared encoding); "
          f"scores {'equal' if not mismatches else f'DIFFER on {mismatches}'}")
    print(f"3. ratio, scoring only: brute force (one half) / vectorised (both halves) = "
          f"{(per * sae.d_sae) / tm['score']:.0f}x; whole labelling against brute-force scoring alone: "
          f"{(per * sae.d_sae) / vec:.1f}x (offsets {OFFSETS})")


if __name__ == "__main__":
    main()
