"""Harvest throughput: this project vs plain transformers vs sae-lens, in one process.

Every method reads the residual stream after block L (default: the middle one) of the
same batches of real text (batch 8 x 128 by default), taking turns batch by batch so
that machine noise hits them alike. Prints which precision `auto` takes here and why,
tokens/s (median over rounds), the ratio to sae-lens in its fastest setting on this
machine, the share of the matmul limit (the precision probe's GFLOP/s over the FLOPs per
token), and each method's median relative error against fp32. bf16 is timed only where
it is fast (or with --all).

    python bench/harvest.py [--rounds 12] [--batch 8] [--compile] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--compile", action="store_true", help="also time our torch.compile'd forward")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--all", action="store_true", help="also time bf16 where this CPU has no fast bf16")
    args = ap.parse_args()

    from sae_lens.load_model import HookedProxyLM

    from sae.data.corpus import open_corpus, token_windows
    from sae.data.forward import ResidualReader
    from sae.data.models import load_model
    from sae.precision import speed

    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu")
    hook = lm.hook_point(args.layer)
    windows = token_windows(open_corpus("builtin").documents("train"), lm.tokenizer, args.context,
                            n_windows=args.batch * (args.rounds + 1))
    batches = [torch.from_numpy(windows[i:i + args.batch]).long() for i in range(0, len(windows), args.batch)]
    warm, batches = batches[0], batches[1:]

    # sae-lens hooks its model's modules for good: give it its own copy.
    proxy = HookedProxyLM(copy.deepcopy(lm.model), lm.tokenizer, hook_names=[hook.module_path])

    def saelens(ids, autocast):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            _, cache = proxy.run_with_cache(ids, names_filter=[hook.module_path], stop_at_layer=hook.layer + 1)
        return cache[hook.module_path].float()

    def plain_full(ids):
        with torch.no_grad():
            return lm.model(input_ids=ids, output_hidden_states=True).hidden_states[hook.layer + 1].float()

    decision = speed("cpu")
    ours_fp32 = ResidualReader(lm, hook, precision="fp32", calibration_ids=warm)
    auto = ResidualReader(lm, hook, precision="auto", calibration_ids=warm)
    methods = {
        "transformers full forward (fp32)": plain_full,
        "sae-lens HookedProxyLM stop_at_layer (fp32)": lambda ids: saelens(ids, False),
        "saex ResidualReader (fp32)": ours_fp32,
    }
    # Where bf16 is emulated (~1/100 of fp32) nobody would use it: timing it would only take minutes.
    if decision.fast_bf16 or args.all:
        methods["sae-lens HookedProxyLM stop_at_layer (bf16 autocast)"] = lambda ids: saelens(ids, True)
        methods["saex ResidualReader (bf16 autocast)"] = ResidualReader(lm, hook, precision="bf16",
                                                                        calibration_ids=warm)
    compile_s = None
    if args.compile:
        t = time.perf_counter()
        compiled = ResidualReader(lm, hook, precision=auto.precision, compile=True, calibration_ids=warm)
        compiled(warm)
        compile_s = time.perf_counter() - t
        methods[f"saex ResidualReader ({auto.precision}, torch.compile, as saex harvest runs large stores)"] = compiled

    for f in methods.values():  # warm-up
        f(warm)
    times: dict[str, list[float]] = {k: [] for k in methods}
    errors: dict[str, list[float]] = {k: [] for k in methods}
    for ids in batches:
        ref = ours_fp32(ids)
        for name, f in methods.items():
            t = time.perf_counter()
            h = f(ids)
            times[name].append(time.perf_counter() - t)
            errors[name].append(float(((h - ref).norm(dim=-1) / ref.norm(dim=-1)).median()))

    n_tok = args.batch * args.context
    rate = {k: n_tok / statistics.median(v) for k, v in times.items()}
    saelens_best = max((k for k in rate if k.startswith("sae-lens")), key=rate.get)
    base = rate[saelens_best]
    layers = lm.model.get_submodule(hook.module_path.rsplit(".", 1)[0])
    flops = 2.0 * sum(p.numel() for b in list(layers)[: hook.layer + 1] for p in b.parameters())
    limit = max(decision.fp32_gflops or 0, decision.bf16_gflops or 0 if decision.fast_bf16 else 0) * 1e9 / flops
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"precision: {decision.reason}; saex harvest --precision auto takes {auto.precision}")
    print(f"baseline: sae-lens's fastest setting here, {saelens_best}")
    print(f"model {lm.spec}, hook {hook.name}, batch {args.batch} x {args.context}, {len(batches)} rounds"
          + (f", compile took {compile_s:.0f} s" if compile_s else ""))
    print()
    print("| method | tokens/s | vs sae-lens's best | share of the matmul limit | median rel. error vs fp32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k in methods:
        share = f"{rate[k] / limit:.0%}" if limit else "n/a"
        print(f"| {k} | {rate[k]:,.0f} | {rate[k] / base:.2f}x | {share} | {statistics.median(errors[k]):.2%} |")
    if limit:
        print(f"(matmul limit: {limit:,.0f} tokens/s = the probe's best GFLOP/s / {flops / 1e6:.0f} MFLOP per token)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": cpu_name(), "threads": torch.get_num_threads(), "batch": args.batch,
                       "context": args.context, "rounds": len(batches), "compile_s": compile_s,
                       "tokens_per_s": rate, "baseline": saelens_best,
                       "precision": decision.record(),
                       "median_rel_error": {k: statistics.median(v) for k, v in errors.items()}},
                      f, indent=2)


if __name__ == "__main__":
    main()
