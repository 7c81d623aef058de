"""The LLM explainer's stage of `saex label --explainer openai:URL/MODEL`.

For a seeded sample of features (the same features for the SAE and for its random-direction
control), the LLM reads 20 activating windows of the proposal half (2 per activation decile,
delphi's "quantiles" training sample, firing tokens marked) and writes an explanation; its
detection prompt then classifies the held-out windows that offline labels are scored on
(the same draw), and the balanced accuracy is computed as for every other label. Each
finished feature is appended to RUN/labels.partial/llm-VARIANT.jsonl, so a killed run
resumes; a feature whose replies cannot be parsed is recorded with its error and skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sae.labels.detection import detection_scores, draw, feature_rng, firings_in
from sae.labels.heldout import PROPOSE, SCORE, Firings
from sae.labels.llm import Example, ExplainerReplyError
from sae.labels.summary import distribution

EXPLAIN_PER_DECILE = 2


def sample_features(records: list[dict], n: int, seed: int) -> list[int]:
    """n features with a held-out detection sample, drawn with the seed (sorted)."""
    ok = [r["feature"] for r in records if r.get("scorable")]
    rng = np.random.default_rng([seed, 7])
    return sorted(int(f) for f in rng.choice(ok, min(n, len(ok)), replace=False)) if ok else []


def window_examples(ctx, windows: np.ndarray, pos: np.ndarray, act: np.ndarray) -> list[Example]:
    """Token strings and the feature's activation at each position of example windows."""
    P = ctx.split.positions_of(windows)
    toks = ctx.table.tokens.reshape(-1)[P]
    a = np.zeros(P.shape, np.float32)
    if len(pos):  # a feature's firing positions are sorted
        i = np.clip(np.searchsorted(pos, P), 0, len(pos) - 1)
        hit = pos[i] == P
        a[hit] = act[i[hit]]
    return [Example([ctx.vocab[t] for t in row_t], [float(x) for x in row_a]) for row_t, row_a in zip(toks, a)]


def explain_and_score(llm, ctx, firings: Firings, f: int, cfg) -> dict:
    pp, pa = firings_in(firings, ctx.split, f, PROPOSE)
    train = draw(ctx.split, pp, pa, PROPOSE, feature_rng(cfg.seed, f, PROPOSE, 2), EXPLAIN_PER_DECILE, 1, 1,
                 ctx.usable_examples)
    hp, ha = firings_in(firings, ctx.split, f, SCORE)
    test = draw(ctx.split, hp, ha, SCORE, feature_rng(cfg.seed, f, SCORE), cfg.per_decile, cfg.non_activating, 10,
                ctx.usable_examples)
    if train is None or test is None:
        return {"feature": f, "explanation": None, "detection": None, "error": "too few example windows"}
    pos, act = firings.of(f)
    shown = window_examples(ctx, train.windows[train.active], pos, act)
    try:
        explanation = llm.explain(shown)
        held = window_examples(ctx, test.windows, pos, act)
        verdicts = llm.detect(explanation, [e.tokens for e in held])
    except ExplainerReplyError as e:
        return {"feature": f, "explanation": None, "detection": None, "error": e.problem}
    scores = detection_scores(np.asarray(verdicts, bool), test)
    det = {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else v) for k, v in scores.items()}
    return {"feature": f, "explanation": explanation, "detection": det, "error": None}


def llm_label(llm, ctx, firings: dict[str, Firings], results: dict[str, list[dict]], cfg, partial: Path) -> dict:
    """Explain and score the sampled features of the SAE and of the random control; each
    record gets an "llm" entry. Returns the summary's "llm" section."""
    feats = sample_features(results["real"], cfg.llm_features, cfg.seed)
    out = {"explainer": llm.name, "features": feats, "detection": {}, "errors": {}}
    for variant in [v for v in ("real", "random") if v in firings]:
        path = partial / f"llm-{variant}.jsonl"
        done = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    break
                done[int(r["feature"])] = r
        for k, f in enumerate(feats):
            if f not in done:
                done[f] = explain_and_score(llm, ctx, firings[variant], f, cfg)
                with open(path, "a") as fh:
                    fh.write(json.dumps(done[f]) + "\n")
            if cfg.progress:
                print(f"\r  LLM explainer, {variant}: {k + 1}/{len(feats)} features", end="", file=sys.stderr,
                      flush=True)
            results[variant][f]["llm"] = done[f]
        if cfg.progress:
            print(file=sys.stderr)
        bas = [done[f]["detection"]["balanced_accuracy"] for f in feats if done[f].get("detection")]
        out["detection"][variant] = distribution(bas)
        out["errors"][variant] = sum(1 for f in feats if done[f].get("error"))
    return out
