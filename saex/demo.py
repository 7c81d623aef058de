"""`saex demo`: the main job end to end on the default model and corpus: harvest training and
held-out activations, train a TopK SAE, evaluate it, index its features, label them
automatically and run the a/an lookahead analysis. Each step skips what an earlier run already finished."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import training
from sae.data.corpus import DEFAULT_CORPUS
from sae.data.harvest import HarvestConfig, harvest
from sae.data.models import DEFAULT_MODEL, load_model
from sae.data.store import store_summary
from sae.errors import SaexError
from sae.fsutil import ensure_writable_dir, write_json_atomic
from sae.index.build import IndexConfig, build_index
from sae.index.reader import FeatureIndex
from sae.labels.auto import LabelConfig, label_features
from sae.labels.summary import labels_line
from sae.lookahead.article import LookaheadConfig, run_lookahead
from sae.runs.evaluate import evaluate, write_eval
from sae.runs.files import RUN_FILE, is_finished, read_report
from saex.demo_plan import (
    FLOOR_VECTORS,
    FULL_CE_WINDOWS,
    FULL_HELDOUT,
    FULL_TOKENS,
    LOOKAHEAD_FIXED_RUNS,
    LOOKAHEAD_SIZES,
    SAFETY,
    Sizes,
    Speeds,
    estimate,
    fit_sizes,
    lookahead_runs,
    measure_speeds,
    replan_after_harvest,
)
from training.config import load_config
from training.train import train

DEFAULT_TRAIN_CONFIG = Path(training.__file__).with_name("configs") / "default.toml"


PLAN_FILE = "demo.json"


@dataclass
class DemoConfig:
    """The demo's settings (`saex demo` flags). Sizes left unset are chosen from this machine's measured
    speed so that the steps fit `minutes`; `full` asks for the full-size run instead."""

    out_dir: str = "checkpoints/demo"
    """Where the stores and the run go."""
    model: str = DEFAULT_MODEL
    """Model spec."""
    layer: str | None = None
    """Block whose output is read (default: the middle one)."""
    corpus: str = DEFAULT_CORPUS
    """Corpus spec."""
    minutes: float = 15.0
    """The time the demo's steps should fit in, after the downloads; sizes are planned from the model's
    speed measured here."""
    full: bool = False
    """The full-size run whatever it takes: 2,000,000 training tokens, 131,072 held-out, 256 CE windows,
    the full lookahead (in a folder of its own: --out-dir checkpoints/demo-full)."""
    tokens: int | None = None
    """Training tokens (default: planned; 2000000 with --full)."""
    heldout_tokens: int | None = None
    """Held-out tokens for evaluation, the feature index and labels (default: planned; 131072 with --full)."""
    epochs: float | None = None
    """Training epochs (default: planned: about 2.4M vectors' worth, at most 8, over a store smaller than the full
    one; the training config's over the full one)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    train_config: str | None = None
    """TOML training config (default: training/configs/default.toml, as installed)."""
    ce_windows: int | None = None
    """Held-out windows for the CE/KL evaluation, 0 = skip it (default: planned; 256 with --full)."""
    plan_only: bool = False
    """Print the plan this machine gets (measuring the model's speed) and stop; nothing is written."""
    lookahead: Literal["auto", "yes", "no"] = "auto"
    """Run the a/an lookahead analysis: auto (when it fits the plan, at the size that fits), yes (always;
    its full size if that fits, else its quick one), no."""
    organism: bool = False
    """Then fine-tune the planning organism (`saex organism`) into OUT_DIR/organism-model, pick the first layer
    where a probe reads its coming article (or --layer), run the demo's steps there at the same sizes on the
    corpus with answered riddles mixed in (CORPUS+riddles), on the base model and on the organism
    (OUT_DIR/base-L<layer>-riddles, OUT_DIR/organism-L<layer>-riddles), ask the finder on both and sweep depth on
    both, for the explorer's Compare page. Not part of --minutes: it prints its own estimate (about an hour on
    2 cores)."""

    def __post_init__(self):
        if not self.minutes > 0:
            raise SaexError(f"--minutes must be positive, got {self.minutes}", "pass e.g. --minutes 15")


@dataclass
class DemoPlan:
    """What the demo decided, and why (written to OUT_DIR/demo.json; a rerun keeps it)."""

    tokens: int
    heldout_tokens: int
    epochs: float | None
    ce_windows: int
    lookahead: bool
    reason: str
    lookahead_size: str = "full"
    estimate_s: dict = field(default_factory=dict)
    """Seconds per step, estimated before the run from the measured speeds."""
    replanned: str = ""
    """What the re-plan after the training harvest changed (saex.demo_plan.replan_after_harvest), in words."""
    seconds: dict = field(default_factory=dict)
    """Seconds per step, measured (filled in as the steps finish)."""


def plan_demo(cfg: DemoConfig, lm, speeds: Speeds | None = None, elapsed: float = 0.0) -> DemoPlan:
    """The demo's sizes: the user's where given; with --full the full-size run; else the largest demo whose
    estimated time (from the model's speed measured here) fits `minutes` less what has already passed."""
    sp = speeds or measure_speeds(lm, cfg.layer)
    train_cfg = load_config(cfg.train_config or DEFAULT_TRAIN_CONFIG)
    asked = {k: getattr(cfg, k) for k in ("tokens", "heldout_tokens", "epochs", "ce_windows")
             if getattr(cfg, k) is not None}
    if cfg.lookahead == "no":
        asked["lookahead"] = "none"
    budget = cfg.minutes * 60 * SAFETY - elapsed
    if cfg.full:
        sizes = Sizes(FULL_TOKENS, FULL_HELDOUT, None, FULL_CE_WINDOWS, "full")
        sizes = Sizes(**(vars(sizes) | asked))
        note = "--full"
    else:
        sizes, note = fit_sizes(budget, sp, train_cfg.d_sae, train_cfg.epochs, asked)
    if cfg.lookahead == "yes" and sizes.lookahead == "none":
        sizes.lookahead = "quick"
    est = estimate(sizes, sp, train_cfg.d_sae, train_cfg.epochs)
    full_est = estimate(Sizes(FULL_TOKENS, FULL_HELDOUT, None, FULL_CE_WINDOWS, "full"), sp, train_cfg.d_sae,
                        train_cfg.epochs)
    epochs = sizes.epochs or train_cfg.epochs
    reason = (f"{sp.describe()}, so: {sizes.tokens:,} training tokens x {epochs:g} epochs, "
              f"{sizes.heldout_tokens:,} held-out tokens, {sizes.ce_windows} CE windows, "
              + (f"the {sizes.lookahead} lookahead" if sizes.lookahead != "none" else "no lookahead")
              + f"; about {est.total / 60:.0f} min in all ("
              + ", ".join(f"{k} {v / 60:.1f}" for k, v in est.steps.items() if v) + ")"
              + (f"; {note}" if note and note != "--full" else "")
              + ("" if cfg.full else f". The full-size run (--full) would take about {full_est.total / 60:.0f} min"
                                     " here"))
    return DemoPlan(sizes.tokens, sizes.heldout_tokens, sizes.epochs, sizes.ce_windows,
                    sizes.lookahead != "none", reason, sizes.lookahead if sizes.lookahead != "none" else "full",
                    est.steps)


def _load_or_plan(cfg: DemoConfig, lm, root: Path, elapsed: float) -> DemoPlan:
    path = root / PLAN_FILE
    try:
        saved = DemoPlan(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        saved = None
    asked = {k: getattr(cfg, k) for k in ("tokens", "heldout_tokens", "epochs") if getattr(cfg, k) is not None}
    if cfg.full:
        asked = {"tokens": FULL_TOKENS, "heldout_tokens": FULL_HELDOUT} | asked
    if saved is not None and all(getattr(saved, k) == v for k, v in asked.items()):
        return saved  # the stores on disk were sized by this plan
    if saved is not None and (root / "acts-train").exists():
        want = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in asked.items())
        raise SaexError(f"{root} holds a demo of {saved.tokens:,} training tokens ({saved.heldout_tokens:,} "
                        f"held-out), not the {want} asked for",
                        f"give it its own folder, e.g. --out-dir {root}-full, or delete {root} to start over")
    plan = plan_demo(cfg, lm, elapsed=elapsed)
    ensure_writable_dir(root, "demo folder")
    write_json_atomic(path, asdict(plan))
    return plan


def _replan(cfg: DemoConfig, plan: DemoPlan, root: Path, left_s: float) -> None:
    """The rest of the plan at the pace the training harvest actually ran (kept in demo.json)."""
    train_epochs = load_config(cfg.train_config or DEFAULT_TRAIN_CONFIG).epochs
    size = plan.lookahead_size if plan.lookahead else "none"
    per_run = plan.estimate_s.get("lookahead", 0.0) / (lookahead_runs(size) + LOOKAHEAD_FIXED_RUNS) \
        if size != "none" else 0.0
    lookahead_s = {s: per_run * (lookahead_runs(s) + LOOKAHEAD_FIXED_RUNS) for s in ("full", "quick")}
    asked = {k: True for k in ("epochs",) if getattr(cfg, k) is not None}
    if cfg.lookahead != "auto":
        asked["lookahead"] = True
    epochs = plan.epochs or train_epochs
    new = replan_after_harvest(plan.estimate_s, plan.seconds.get("harvest_train", 0.0), left_s, epochs, size,
                               lookahead_s, min(epochs, max(1.0, FLOOR_VECTORS / plan.tokens)), asked)
    if not new.note:
        return
    plan.epochs = new.epochs if new.epochs != epochs else plan.epochs
    plan.lookahead, plan.lookahead_size = new.lookahead != "none", new.lookahead if new.lookahead != "none" \
        else plan.lookahead_size
    plan.replanned = new.note
    write_json_atomic(root / PLAN_FILE, asdict(plan))
    print(f"re-plan: {new.note}", flush=True)


class _Steps:
    """Times each step, prints it beside the plan's estimate, and keeps the times in demo.json."""

    def __init__(self, plan: DemoPlan, path: Path):
        self.plan, self.path = plan, path
        self.t = time.perf_counter()

    def done(self, name: str, line: str) -> None:
        seconds = time.perf_counter() - self.t
        est = self.plan.estimate_s.get(name)
        print(f"{line} ({seconds:.0f} s" + (f"; estimated {est:.0f} s" if est else "") + ")", flush=True)
        self.plan.seconds.setdefault(name, round(seconds, 1))  # a rerun that skips a done step keeps its real time
        write_json_atomic(self.path, asdict(self.plan))
        self.t = time.perf_counter()


def run_demo(cfg: DemoConfig) -> Path:
    """Run every step not yet done; return the SAE's run folder."""
    root = Path(cfg.out_dir)
    t0 = time.perf_counter()
    lm = load_model(cfg.model, device=cfg.device)
    print(f"[1/8] model {lm.spec}: {lm.n_layers} blocks, d_model {lm.d_model}, "
          f"hook {lm.hook_point(cfg.layer).name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if cfg.plan_only:
        print(f"plan: {plan_demo(cfg, lm, elapsed=time.perf_counter() - t0).reason}", flush=True)
        return root / "sae"
    plan = _load_or_plan(cfg, lm, root, elapsed=time.perf_counter() - t0)
    print(f"plan: {plan.reason}", flush=True)
    steps = _Steps(plan, root / PLAN_FILE)
    for step, (split, tokens) in enumerate((("train", plan.tokens), ("heldout", plan.heldout_tokens)), start=2):
        hcfg = HarvestConfig(out=str(root / f"acts-{split}"), model=cfg.model, layer=cfg.layer, corpus=cfg.corpus,
                            split=split, tokens=tokens, device=cfg.device)
        out = harvest(hcfg, lm=lm)
        steps.done(f"harvest_{split}", f"[{step}/8] {split} activations: {store_summary(out)}")
        if split == "train" and not cfg.full and not plan.replanned and not is_finished(root / "sae"):
            _replan(cfg, plan, root, left_s=cfg.minutes * 60 * SAFETY - (time.perf_counter() - t0))
    run = root / "sae"
    if not is_finished(run):
        train(load_config(cfg.train_config or DEFAULT_TRAIN_CONFIG, store=str(root / "acts-train"), out=str(run),
                          device=cfg.device, epochs=plan.epochs))
    stats = json.loads((run / RUN_FILE).read_text())
    steps.done("training", f"[4/8] SAE in {run}: {stats['vectors']:,} vectors at {stats['vectors_per_s']:,.0f} "
                           "vectors/s")
    result = read_report(run, "eval")
    if result is None:
        result = evaluate(run, store=root / "acts-heldout", model=lm, ce_windows=plan.ce_windows, device=cfg.device,
                          precision="auto")
        write_eval(run, result)
    ci = (result.get("intervals") or {}).get("ce_loss_score")
    ce = (f", CE-loss score {result['ce_loss_score']:.3f}"
          + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
          + f", KL score {result['kl_score']:.3f}" if result.get("ce_loss_score") is not None else "")
    steps.done("evaluation", f"[5/8] held-out: EV {result['explained_variance']:.3f} (with outliers "
                             f"{result['explained_variance_with_outliers']:.3f}), L0 {result['l0']:.1f}, "
                             f"dead {result['dead_fraction']:.2%}{ce}")
    build_index(IndexConfig(run=str(run), store=str(root / "acts-heldout"), device=cfg.device), lm=lm)
    index = FeatureIndex(run)
    steps.done("index", f"[6/8] feature index of {index.d_sae:,} features over {index.tokens_indexed:,} held-out "
                        "tokens")
    labels = label_features(LabelConfig(run=str(run), store=str(root / "acts-heldout")), lm=lm)
    steps.done("labels", f"[7/8] automatic labels: {labels_line(labels)}. {labels.answer.verdict}")
    if plan.lookahead:
        report = read_report(run, "lookahead") or \
            run_lookahead(LookaheadConfig(run=str(run), device=cfg.device, **LOOKAHEAD_SIZES[plan.lookahead_size]))
        steps.done("lookahead", f"[8/8] lookahead ({plan.lookahead_size}): {report.answer.verdict}")
    else:
        why = "--lookahead no" if cfg.lookahead == "no" else "it did not fit the plan"
        print(f"[8/8] lookahead: skipped ({why}); run it with: saex lookahead {run}", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s. Explore it: saex explore {run}", flush=True)
    return run
