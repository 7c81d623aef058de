"""Word finder calibration: how often it says "found" when nothing is there, and how often
it finds a feature that is there.

For each word (40 nouns, half "a", half "an", with corpus contexts in the built-in corpus),
the contexts are read once and the finder's analysis (sae.lookahead.finder.run.analyse)
runs four times on them:
- real: the demo SAE as it is (verdicts reported, not scored: it may hold word features);
- random SAE: a random-direction copy (every encoder column and decoder row a Gaussian
  direction of the same norm, biases and k kept; sae.labels.auto.control_sae). Any "found"
  is false;
- shuffled labels: the real SAE with the word's and the controls' labels shuffled among
  comparable clusters (FindConfig.shuffle_labels). Any "found" is false;
- planted: a word-specific feature injected into the model's residual stream at the hook.
  On a random 80% of the word's contexts, `dose` x the median residual norm times a unit
  direction v is added at offsets -2 and -1 (before the article), and one latent of a copy
  of the SAE (the least active on these contexts) is made to read exactly that: activation
  `dose` x norm there, 0 elsewhere, decoder row v. v is the word's unembedding against its
  alternatives (`--direction unembedding`, which the 15 blocks after the hook may or may not
  carry to the article) or the gradient of that log-odds at the article with respect to the
  residual at -2 and -1 (`--direction gradient`: a direction the model uses by
  construction). The share found is the power; it is also given among the words where
  ablating the injection lowers the word by 0.1 nats or more (the feature is used).

    python bench/finder_calibration.py [RUN] [--words w1,w2,...] [--dose 0.5] [--out FILE]

Prints one line per word and the rates with 95% Wilson intervals; --out writes the rows as
JSON. Figures: docs/benchmarks.md."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("man,woman,king,house,horse,city,child,word,day,letter,ship,tree,bird,dog,book,song,sword,voice,friend,"
         "servant,animal,island,apple,egg,hour,officer,army,eye,enemy,oath,altar,ox,eagle,elephant,instrument,image,"
         "angel,oak,arrow,idea")


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    z = 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def reencoded(prep, sae):
    """The same residuals, encoded by another SAE."""
    import torch

    with torch.no_grad():
        batches = [dataclasses.replace(b, acts=sae.encode(b.h).to(b.h.device)) for b in prep.batches]
    return dataclasses.replace(prep, batches=batches)


def with_path(sae, path: str):
    out = copy.copy(sae)
    out.path = path  # no sparsity.safetensors there: densities are measured on the contexts
    return out


def used_direction(iv, prep, contexts, first: int, alts: list[int]):
    """The unit direction at the hook, at offsets -2 and -1, along which the model most raises
    log P(word) - mean log P(alternatives) at the article: the gradient, summed over the word's
    contexts. A feature written along it is one the model uses to say the word."""
    import torch

    roles = [c.role for c in contexts]
    total = torch.zeros(prep.batches[0].h.shape[-1], dtype=torch.float64)
    alt = torch.tensor(alts, dtype=torch.long)
    i = 0
    for b in prep.batches:
        rows = [r for r in range(len(b.items)) if roles[i + r] == "word"]
        i += len(b.items)
        if not rows:
            continue
        h = b.h.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logp = iv.upper.logits_at(b.ids, h, b.article_pos[:, None])[:, 0].log_softmax(-1)
            score = logp[:, first] - (logp[:, alt].mean(-1) if len(alt) else 0)
            (grad,) = torch.autograd.grad(score[rows].sum(), h)
        for r in rows:
            for off in (-2, -1):
                pos = int(b.items[r].article_pos) + off
                if pos >= 1 and bool(b.ordinary[r, pos]):
                    total += grad[r, pos].double().cpu()
    return (total / total.norm()).float()


def planted(iv, prep, contexts, word: str, dose: float, seed: int, direction: str = "unembedding"):
    """(Intervener over an SAE copy with latent j planted, the contexts with the injection, j).
    direction: "unembedding" (the word's unembedding minus its alternatives', through the
    final norm) or "gradient" (used_direction)."""
    import torch

    from sae.index.output_effects import token_directions
    from sae.lookahead.finder.causal import alternative_ids

    lm, sae = iv.lm, iv.sae
    tok = lm.tokenizer
    first = tok(" " + word, add_special_tokens=False)["input_ids"][0]
    alts = alternative_ids(tok, word, sorted({c.prompt.noun for c in contexts if c.role != "word"}))
    if direction == "gradient":
        v = used_direction(iv, prep, contexts, first, alts)
    else:
        u = token_directions(lm, [first] + alts)
        v = u[0] - u[1:].mean(0)
        v = v / v.norm()
    v = v.to(prep.batches[0].h.device)
    fired = sum(((b.acts != 0) & b.valid[..., None]).sum((0, 1)).cpu() for b in prep.batches)
    j = int(fired.argmin())
    norms = torch.cat([b.h.norm(dim=-1)[b.ordinary] for b in prep.batches])
    size = dose * float(norms.median())
    g = torch.Generator().manual_seed(seed)
    roles = [c.role for c in contexts]
    batches, i = [], 0
    for b in prep.batches:
        h, acts = b.h.clone(), b.acts.clone()
        acts[..., j] = 0
        for r in range(len(b.items)):
            if roles[i] == "word" and float(torch.rand(1, generator=g)) < 0.8:
                for off in (-2, -1):
                    pos = int(b.items[r].article_pos) + off
                    if pos >= 1 and bool(b.ordinary[r, pos]):
                        h[r, pos] += size * v
                        acts[r, pos, j] = size
            i += 1
        batches.append(dataclasses.replace(b, h=h, acts=acts))
    new = copy.copy(sae)
    new.sae = copy.deepcopy(sae.sae)
    with torch.no_grad():
        new.sae.W_dec[j] = v.to(new.sae.W_dec.dtype)
    new = with_path(new, "/nonexistent-planted-sae")
    pv = copy.copy(iv)
    pv.sae = new
    return pv, dataclasses.replace(prep, batches=batches), j


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="checkpoints/demo/sae")
    ap.add_argument("--words", default=WORDS)
    ap.add_argument("--dose", type=float, default=0.5, help="planted injection, in median residual norms")
    ap.add_argument("--direction", choices=("unembedding", "gradient"), default="unembedding",
                    help="planted direction: the word's unembedding against its alternatives, or the gradient of "
                    "that log-odds at the article with respect to the residual at -2 and -1")
    ap.add_argument("--planted-only", action="store_true", help="skip the real, random-SAE and shuffled runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from sae.labels.auto import control_sae
    from sae.lookahead.finder import FindConfig
    from sae.lookahead.finder.run import analyse, read_contexts
    from sae.lookahead.interventions import Intervener, sink_threshold
    from sae.runs.load import load_model_and_sae

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads")
    lm, sae = load_model_and_sae(args.run, device="cpu")
    iv = Intervener(lm, sae, *sink_threshold(sae))
    ctrl = with_path(control_sae(sae, seed=1), "/nonexistent-random-sae")
    iv_random = copy.copy(iv)
    iv_random.sae = ctrl
    rows = []
    print(f"{'word':<12} {'ctx':>4} {'src':>4} {'real':<24} {'random SAE':<24} {'shuffled':<24} {'planted':<24} "
          f"ablation s")
    for w in [x.strip() for x in args.words.split(",") if x.strip()]:
        t = time.perf_counter()
        cfg = FindConfig(word=w, run=args.run, progress=False, device="cpu")
        try:
            wc, ctx, prep = read_contexts(cfg, iv)
        except Exception as e:  # a word without contexts: reported, not scored
            print(f"{w:<12} skipped: {e}")
            continue
        out = {"word": w, "contexts": len(wc.contexts), "sources": len({c.cluster for c in wc.contexts})}
        conditions = ("planted",) if args.planted_only else ("real", "random", "shuffled", "planted")
        if not args.planted_only:
            out["real"] = analyse(cfg, iv, wc, ctx, prep)
            out["random"] = analyse(cfg, iv_random, wc, ctx, reencoded(prep, ctrl))
            out["shuffled"] = analyse(dataclasses.replace(cfg, shuffle_labels=True), iv, wc, ctx, prep)
        pv, pprep, j = planted(iv, prep, ctx, w, args.dose, seed=0, direction=args.direction)
        out["planted"] = analyse(cfg, pv, wc, ctx, pprep)
        out["planted_latent"] = j
        row = {"word": w, "contexts": out["contexts"], "sources": out["sources"], "planted_latent": j,
               "seconds": round(time.perf_counter() - t, 1)}
        for k in conditions:
            rep = out[k]
            row[k] = rep["answer"]["label"]
            row[k + "_confirmed"] = [c["feature"] for c in rep["candidates"] if c["confirmed"]]
        p_ca = out["planted"]["causal"]["features"].get(str(j))
        row["planted_confirmed"] = j in row["planted_confirmed"]
        row["planted_ablation"] = p_ca["tests"][0]["mean"] if p_ca else None
        rows.append(row)
        print(f"{w:<12} {row['contexts']:>4} {row['sources']:>4} {row.get('real', '-'):<24} "
              f"{row.get('random', '-'):<24} {row.get('shuffled', '-'):<24} {row['planted']:<24} "
              f"{row['planted_ablation'] if row['planted_ablation'] is None else round(row['planted_ablation'], 3)} "
              f"{row['seconds']}", flush=True)
    n = len(rows)
    print(f"\n{n} words")
    for k, what in (("random", "false 'found', random-direction SAE"), ("shuffled", "false 'found', shuffled labels"),
                    ("planted", "'found', planted word feature (power)")):
        if not rows or k not in rows[0]:
            continue
        hits = sum(r[k] == "found" for r in rows)
        lo, hi = wilson(hits, n)
        print(f"{what:<42} {hits}/{n} = {hits / max(n, 1):.0%} (95% CI {lo:.0%} to {hi:.0%})")
    conf = sum(r["planted_confirmed"] for r in rows)
    print(f"{'planted feature confirmed by activation':<42} {conf}/{n}")
    used = [r for r in rows if r["planted_ablation"] is not None and r["planted_ablation"] <= -0.1]
    hits = sum(r["planted"] == "found" for r in used)
    lo, hi = wilson(hits, len(used))
    print(f"{'found, where ablating the injection lowers':<42} {hits}/{len(used)} = {hits / max(len(used), 1):.0%} "
          f"(95% CI {lo:.0%} to {hi:.0%})\n{'  the word by 0.1 nats or more':<42}")
    for k in ("real", "random", "shuffled", "planted"):
        if not rows or k not in rows[0]:
            continue
        counts: dict[str, int] = {}
        for r in rows:
            counts[r[k]] = counts.get(r[k], 0) + 1
        print(f"verdicts, {k:<9} " + ", ".join(f"{v}: {c}" for v, c in sorted(counts.items(), key=lambda x: -x[1])))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
