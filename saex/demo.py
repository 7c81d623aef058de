"""`saex demo`: the main job end to end on the default model and corpus: harvest training and
held-out activations, train a TopK SAE, evaluate it, index its features and run the a/an
lookahead analysis. Each step skips what an earlier run already finished."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import training
from sae.data.corpus import DEFAULT_CORPUS
from sae.data.harvest import HarvestConfig, harvest
from sae.data.models import DEFAULT_MODEL, load_model
from sae.data.store import store_summary
from sae.index.build import IndexConfig, build_index
from sae.index.reader import FeatureIndex
from sae.lookahead.experiment import LookaheadConfig, run_lookahead
from sae.runs.evaluate import EVAL_FILE, evaluate, write_eval
from sae.runs.files import RUN_FILE, is_finished, lookahead_report
from training.config import load_config
from training.train import train

DEFAULT_TRAIN_CONFIG = Path(training.__file__).with_name("configs") / "default.toml"


@dataclass
class DemoConfig:
    """The demo's settings (`saex demo` flags)."""

    out_dir: str = "checkpoints/demo"
    """Where the stores and the run go."""
    model: str = DEFAULT_MODEL
    """Model spec."""
    layer: str | None = None
    """Block whose output is read (default: the middle one)."""
    corpus: str = DEFAULT_CORPUS
    """Corpus spec."""
    tokens: int = 2_000_000
    """Training tokens."""
    heldout_tokens: int = 131_072
    """Held-out tokens (evaluation, feature index)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    train_config: str = str(DEFAULT_TRAIN_CONFIG)
    """TOML training config."""
    ce_windows: int = 256
    """Held-out windows for the CE/KL evaluation, 0 = skip it."""
    lookahead: bool = True
    """Run the a/an lookahead analysis."""


def run_demo(cfg: DemoConfig) -> Path:
    """Run every step not yet done; return the SAE's run folder."""
    root = Path(cfg.out_dir)
    t0 = time.perf_counter()
    lm = load_model(cfg.model, device=cfg.device)
    print(f"[1/7] model {lm.spec}: {lm.n_layers} blocks, d_model {lm.d_model}, "
          f"hook {lm.hook_point(cfg.layer).name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for step, (split, tokens) in enumerate((("train", cfg.tokens), ("heldout", cfg.heldout_tokens)), start=2):
        t = time.perf_counter()
        hcfg = HarvestConfig(out=str(root / f"acts-{split}"), model=cfg.model, layer=cfg.layer, corpus=cfg.corpus,
                            split=split, tokens=tokens, device=cfg.device)
        out = harvest(hcfg, lm=lm)
        print(f"[{step}/7] {split} activations: {store_summary(out)} ({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    run = root / "sae"
    if not is_finished(run):
        train(load_config(cfg.train_config, store=str(root / "acts-train"), out=str(run), device=cfg.device))
    stats = json.loads((run / RUN_FILE).read_text())
    print(f"[4/7] SAE in {run}: {stats['vectors']:,} vectors at {stats['vectors_per_s']:,.0f} vectors/s "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    if (run / EVAL_FILE).exists():
        result = json.loads((run / EVAL_FILE).read_text())
    else:
        result = evaluate(run, store=root / "acts-heldout", model=lm, n_ce_windows=cfg.ce_windows, device=cfg.device)
        write_eval(run, result)
    ce = (f", CE-loss score {result['ce_loss_score']:.3f}, KL score {result['kl_score']:.3f}"
          if result.get("ce_loss_score") is not None else "")
    print(f"[5/7] held-out: EV {result['explained_variance']:.3f} (with outliers "
          f"{result['explained_variance_with_outliers']:.3f}), L0 {result['l0']:.1f}, dead {result['dead_fraction']:.2%}"
          f"{ce} ({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    build_index(IndexConfig(run=str(run), store=str(root / "acts-heldout"), device=cfg.device), lm=lm)
    index = FeatureIndex(run)
    print(f"[6/7] feature index of {index.d_sae:,} features over {index.tokens_indexed:,} held-out tokens "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    if cfg.lookahead:
        report_path = lookahead_report(run)
        report = json.loads(report_path.read_text()) if report_path.exists() else \
            run_lookahead(LookaheadConfig(run=str(run), device=cfg.device))
        print(f"[7/7] lookahead: {report['answer']['lines'][-1]} ({time.perf_counter() - t:.0f} s)", flush=True)
    else:
        print("[7/7] lookahead: skipped (--lookahead false)", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s. Explore it: saex explore {run}")
    return run
