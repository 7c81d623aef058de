"""Word finder speed: `saex find WORD RUN` from a fresh process (model and SAE loading
included), asked for the first time and asked again (the stored answer), for a few words;
then, in this process, the batched causal step against the plain loop it replaces (one
Intervener.run per feature and edit, edits before the article), on the same contexts, with equal numbers checked.

    python bench/find.py [RUN] [--words astronomer,owl,...]

Run it once natively and once as a CPU without fast bf16 would run it, e.g. on a machine
with AVX-512 BF16: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 SAEX_FAST_BF16=0
python bench/find.py (the finder computes in fp32 either way). Figures: docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_WORDS = "astronomer,owl,umbrella,archaeologist,elephant,pilot"


def _saex(args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "saex", *args], cwd=ROOT, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"saex {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return dt, p.stdout


def end_to_end(run: str, words: list[str]) -> None:
    import torch

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, SAEX_FAST_BF16={os.environ.get('SAEX_FAST_BF16', 'unset')}")
    print(f"{'word':<16} {'cold s':>8} {'again s':>8} {'verdict':<26} contexts")
    cold, warm = [], []
    for w in words:
        t_cold, out = _saex(["find", w, run, "--force", "yes", "--progress", "no"])
        t_warm, _ = _saex(["find", w, run, "--progress", "no"])
        cold.append(t_cold)
        warm.append(t_warm)
        first = next((line for line in out.splitlines() if line.startswith("- ")), "")
        verdict = out.splitlines()[2].split(":")[0][:26] if len(out.splitlines()) > 2 else "see report"
        print(f"{w:<16} {t_cold:>8.1f} {t_warm:>8.2f} {verdict:<26} {first[2:70]}")
    print(f"median: first ask {statistics.median(cold):.1f} s, asked again {statistics.median(warm):.2f} s "
          f"(ratio {statistics.median(cold) / statistics.median(warm):.0f}x)")


def causal_ab(run: str, word: str) -> None:
    """The batched single-feature edits (finder._edit_many) against one Intervener.run per
    feature, on the same prepared contexts and features."""
    import torch

    from sae.data.corpus import open_corpus
    from sae.lookahead.finder.causal import edit_many
    from sae.lookahead.finder.controls import gather
    from sae.lookahead.interventions import Edit, Intervener, decoder_directions, encode_prompts, sink_threshold
    from sae.runs.load import load_model_and_sae

    lm, sae = load_model_and_sae(run, device="cpu")
    iv = Intervener(lm, sae, *sink_threshold(sae))
    wc = gather(word, lm.tokenizer, open_corpus("builtin").documents())
    prep = iv.prepare(encode_prompts(lm.tokenizer, [c.prompt for c in wc.contexts]))
    word_id = lm.tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]
    g = torch.Generator().manual_seed(0)
    feats = torch.randperm(sae.d_sae, generator=g)[:32].tolist()
    fired = {int(f) for b in prep.batches for f in (b.acts[b.ordinary] != 0).any(0).nonzero().squeeze(-1)}
    feats = sorted(fired)[:16] + feats[:16]  # half fire on these contexts, half mostly not
    dirs = decoder_directions(sae).float()
    values = dict.fromkeys(feats, 2.0)

    t = time.perf_counter()
    batched_abl = edit_many(iv, prep, feats, dirs, word_id, [], ablate=True)
    batched_st = edit_many(iv, prep, feats, dirs, word_id, [], values=values)
    t_batched = time.perf_counter() - t

    t = time.perf_counter()
    clean = iv.run(prep)
    loop = {}
    for f in feats:
        a = iv.run(prep, Edit((f,), "ablate", positions="prompt"))
        s = iv.run(prep, Edit((f,), "steer", value=2.0, positions="prompt"))
        loop[f] = (a.logp_noun - clean.logp_noun, s.logp_noun - clean.logp_noun)
    t_loop = time.perf_counter() - t
    err = max(max(float((batched_abl[f][0] - loop[f][0]).abs().max()),
                  float((batched_st[f][0] - loop[f][1]).abs().max())) for f in feats)
    print(f"causal step, {len(feats)} features x {prep.n} contexts of '{word}' (ablation + steering): "
          f"plain loop {t_loop:.1f} s, batched {t_batched:.1f} s, ratio {t_loop / t_batched:.2f}x; "
          f"largest difference {err:.1e} (log-prob)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", default="checkpoints/demo/sae")
    ap.add_argument("--words", default=DEFAULT_WORDS)
    ap.add_argument("--skip-ab", action="store_true")
    ns = ap.parse_args()
    end_to_end(ns.run, [w for w in ns.words.split(",") if w])
    if not ns.skip_ab:
        causal_ab(ns.run, ns.words.split(",")[0])


if __name__ == "__main__":
    main()
