"""`saex demo`: the main job end to end on the default model and corpus: harvest training and
held-out activations, train a TopK SAE, evaluate it, index its features, label them
automatically and run the a/an lookahead analysis. Each step skips what an earlier run already finished."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import training
from sae.data.corpus import DEFAULT_CORPUS
from sae.data.harvest import HarvestConfig, harvest
from sae.data.models import DEFAULT_MODEL, load_model
from sae.data.store import store_summary
from sae.fsutil import ensure_writable_dir, write_json_atomic
from sae.index.build import IndexConfig, build_index
from sae.index.reader import FeatureIndex
from sae.labels.auto import LabelConfig, label_features, read_summary
from sae.labels.summary import labels_line
from sae.lookahead.experiment import LookaheadConfig, run_lookahead
from sae.precision import speed
from sae.runs.evaluate import EVAL_FILE, evaluate, write_eval
from sae.runs.files import RUN_FILE, is_finished, lookahead_report
from training.config import load_config
from training.train import train

DEFAULT_TRAIN_CONFIG = Path(training.__file__).with_name("configs") / "default.toml"


FULL_TOKENS = 2_000_000
FULL_HELDOUT = 131_072
PLAN_FILE = "demo.json"
# Share of the model's matmul limit a compiled fp32 harvest reaches (measured: 87%), with room for noise.
HARVEST_EFFICIENCY = 0.75
TRAIN_VECTORS_PER_GFLOP = 80  # our fp32 TopK loop: ~9k vectors/s at ~113 fp32 GFLOP/s


@dataclass
class DemoConfig:
    """The demo's settings (`saex demo` flags). Sizes left unset are chosen from this
    machine's measured speed (`sae.precision`): the full demo where bf16 is fast, a
    smaller one that fits `minutes` where it is not."""

    out_dir: str = "checkpoints/demo"
    """Where the stores and the run go."""
    model: str = DEFAULT_MODEL
    """Model spec."""
    layer: str | None = None
    """Block whose output is read (default: the middle one)."""
    corpus: str = DEFAULT_CORPUS
    """Corpus spec."""
    tokens: int | None = None
    """Training tokens (default: 2000000, or what fits `minutes` on a CPU without fast bf16)."""
    heldout_tokens: int | None = None
    """Held-out tokens for evaluation and the feature index (default: 131072, or 65536 on a slow CPU)."""
    epochs: float | None = None
    """Training epochs (default: the training config's, or 2 over the smaller store on a slow CPU)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    train_config: str | None = None
    """TOML training config (default: training/configs/default.toml, as installed)."""
    ce_windows: int | None = None
    """Held-out windows for the CE/KL evaluation, 0 = skip it (default: 256, or 64 on a slow CPU)."""
    lookahead: Literal["auto", "yes", "no"] = "auto"
    """Run the a/an lookahead analysis (auto: yes, except on a CPU without fast bf16, where it is left for later)."""
    minutes: float = 20.0
    """On a CPU without fast bf16: the time the demo's steps should fit in, after the downloads."""


@dataclass
class DemoPlan:
    """What the demo decided, and why (written to OUT_DIR/demo.json; a rerun keeps it)."""

    tokens: int
    heldout_tokens: int
    epochs: float | None
    ce_windows: int
    lookahead: bool
    reason: str


def _flops_per_token(lm, layer) -> float:
    """2 x the weights of blocks 0..L (the matmuls of a forward that stops after block L)."""
    hook = lm.hook_point(layer)
    layers = lm.model.get_submodule(hook.module_path.rsplit(".", 1)[0])
    return 2.0 * sum(p.numel() for block in list(layers)[: hook.layer + 1] for p in block.parameters())


def plan_demo(cfg: DemoConfig, lm) -> DemoPlan:
    """The demo's sizes: the user's where given, else the full demo where bf16 is fast, else
    a store sized so that harvest and training fit in about 70% of `minutes`."""
    decision = speed(lm.device)
    if decision.fast_bf16 or lm.device.type != "cpu":
        return DemoPlan(cfg.tokens or FULL_TOKENS, cfg.heldout_tokens or FULL_HELDOUT, cfg.epochs,
                        256 if cfg.ce_windows is None else cfg.ce_windows, cfg.lookahead != "no", decision.reason)
    gflops = decision.fp32_gflops or _fp32_gflops()
    harvest_rate = gflops * 1e9 * HARVEST_EFFICIENCY / _flops_per_token(lm, cfg.layer)
    train_rate = gflops * TRAIN_VECTORS_PER_GFLOP
    epochs = cfg.epochs or 2.0
    heldout = cfg.heldout_tokens or FULL_HELDOUT // 2
    seconds = 0.7 * cfg.minutes * 60 - heldout / harvest_rate
    fitted = int(seconds / (1 / harvest_rate + epochs / train_rate)) // 128 * 128
    tokens = cfg.tokens or max(131_072, min(FULL_TOKENS, fitted))
    minutes = (tokens + heldout) / harvest_rate / 60
    reason = (f"{decision.reason}: harvesting {tokens:,} training tokens (about {minutes:.0f} min at an estimated "
              f"{harvest_rate:,.0f} tokens/s in fp32), training {epochs:g} epochs over them"
              + ("" if cfg.tokens else f"; pass --tokens {FULL_TOKENS} for the full store"))
    return DemoPlan(tokens, heldout, epochs, 64 if cfg.ce_windows is None else cfg.ce_windows,
                    cfg.lookahead == "yes", reason)


def _fp32_gflops() -> float:
    from sae.precision import measure_cpu

    return measure_cpu().fp32_gflops or 50.0


def _load_or_plan(cfg: DemoConfig, lm, root: Path) -> DemoPlan:
    path = root / PLAN_FILE
    try:
        saved = DemoPlan(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        saved = None
    asked = {k: getattr(cfg, k) for k in ("tokens", "heldout_tokens", "epochs") if getattr(cfg, k) is not None}
    if saved is not None and all(getattr(saved, k) == v for k, v in asked.items()):
        return saved  # the stores on disk were sized by this plan
    plan = plan_demo(cfg, lm)
    ensure_writable_dir(root, "demo folder")
    write_json_atomic(path, asdict(plan))
    return plan


def run_demo(cfg: DemoConfig) -> Path:
    """Run every step not yet done; return the SAE's run folder."""
    root = Path(cfg.out_dir)
    t0 = time.perf_counter()
    lm = load_model(cfg.model, device=cfg.device)
    print(f"[1/8] model {lm.spec}: {lm.n_layers} blocks, d_model {lm.d_model}, "
          f"hook {lm.hook_point(cfg.layer).name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    plan = _load_or_plan(cfg, lm, root)
    print(f"plan: {plan.reason}", flush=True)
    for step, (split, tokens) in enumerate((("train", plan.tokens), ("heldout", plan.heldout_tokens)), start=2):
        t = time.perf_counter()
        hcfg = HarvestConfig(out=str(root / f"acts-{split}"), model=cfg.model, layer=cfg.layer, corpus=cfg.corpus,
                            split=split, tokens=tokens, device=cfg.device)
        out = harvest(hcfg, lm=lm)
        print(f"[{step}/8] {split} activations: {store_summary(out)} ({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    run = root / "sae"
    if not is_finished(run):
        train(load_config(cfg.train_config or DEFAULT_TRAIN_CONFIG, store=str(root / "acts-train"), out=str(run),
                          device=cfg.device, epochs=plan.epochs))
    stats = json.loads((run / RUN_FILE).read_text())
    print(f"[4/8] SAE in {run}: {stats['vectors']:,} vectors at {stats['vectors_per_s']:,.0f} vectors/s "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    if (run / EVAL_FILE).exists():
        result = json.loads((run / EVAL_FILE).read_text())
    else:
        result = evaluate(run, store=root / "acts-heldout", model=lm, ce_windows=plan.ce_windows, device=cfg.device)
        write_eval(run, result)
    ce = (f", CE-loss score {result['ce_loss_score']:.3f}, KL score {result['kl_score']:.3f}"
          if result.get("ce_loss_score") is not None else "")
    print(f"[5/8] held-out: EV {result['explained_variance']:.3f} (with outliers "
          f"{result['explained_variance_with_outliers']:.3f}), L0 {result['l0']:.1f}, "
          f"dead {result['dead_fraction']:.2%}"
          f"{ce} ({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    build_index(IndexConfig(run=str(run), store=str(root / "acts-heldout"), device=cfg.device), lm=lm)
    index = FeatureIndex(run)
    print(f"[6/8] feature index of {index.d_sae:,} features over {index.tokens_indexed:,} held-out tokens "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    summary = read_summary(label_features(LabelConfig(run=str(run), store=str(root / "acts-heldout")), lm=lm).parent)
    print(f"[7/8] automatic labels: {labels_line(summary)} ({time.perf_counter() - t:.0f} s)",
          flush=True)
    t = time.perf_counter()
    if plan.lookahead:
        report_path = lookahead_report(run)
        report = json.loads(report_path.read_text()) if report_path.exists() else \
            run_lookahead(LookaheadConfig(run=str(run), device=cfg.device))
        print(f"[8/8] lookahead: {report['answer']['lines'][-1]} ({time.perf_counter() - t:.0f} s)", flush=True)
    else:
        why = "--lookahead no" if cfg.lookahead == "no" else "left for later on this CPU"
        print(f"[8/8] lookahead: skipped ({why}); run it with: saex lookahead {run}", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s. Explore it: saex explore {run}")
    return run
