"""The sae-lens trainer: `train_with_saelens(cfg)` trains any sae-lens 6 architecture from our
activation store with sae-lens's own SAETrainer and writes the run folder.

Our fast loop (training/topk_loop.py) trains topk and batchtopk; this file trains the rest
(standard, gated, jumprelu, matryoshka_batchtopk) and, for comparison, topk and batchtopk
too. It keeps our conventions where sae-lens allows them:

- data: the same shuffled batches of usable vectors (`training.data.batches`), scaled by
  `training.data.estimate_scale` to mean norm sqrt(d_in); b_dec starts at the mean of the scaled data;
- schedule: Adam, linear warm-up over `warmup_steps`, cosine decay to `lr_end` (sae-lens's
  "cosineannealing" gives exactly the curve of `training.topk_loop.lr_at`); bf16 autocast per `cfg.bf16(device)`;
- output: the run folder of `training.run_files`. Weights and cfg.json come from
  sae-lens's `save_inference_model`, after `fold_activation_norm_scaling_factor(scale)`
  (the saved SAE reads raw activations) and `fold_W_dec_norm()` (decoder rows of unit
  norm, as ours). batchtopk and matryoshka_batchtopk are saved as jumprelu SAEs with a
  threshold: that is sae-lens's inference form for them.

What sae-lens does differently from our loop: gradients are clipped to norm 1 (hard-coded
in SAETrainer), decoder rows are not renormalised after each step (the sparsity penalties
and TopK selection are weighted by decoder-row norms instead), and its AuxK loss is not
variance-normalised (`aux_loss_coefficient`, default 1, instead of `aux_coef`). There is no
checkpoint/resume here (`checkpoint_every` is ours only): sae-lens's trainer state is a
torch.save file, which this project does not read back.

Metrics: `SAETrainer.fit()` only logs to wandb (off here). `_RecordingTrainer` overrides
its public `step()` seam and, every `log_every` steps, turns the trainer's own
`build_train_step_log_dict` (the dict sae-lens would send to wandb) into a metrics.jsonl
line with our keys. Feature density: the trainer's own counters, with its sparsity window
set longer than the run so that they cover the whole run, as ours do.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sae.data.models import resolve_device
from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, write_json_atomic
from sae.runs.files import CFG_FILE, METRICS_FILE, WEIGHTS_FILE, is_finished
from training import data
from training.config import TrainConfig
from training.run_files import sae_metadata, write_plot, write_run_files

# sae-lens's name for each of our architectures (the same names).
SAELENS_ARCHITECTURES = ("standard", "gated", "jumprelu", "matryoshka_batchtopk", "batchtopk", "topk")


def matryoshka_widths(cfg: TrainConfig) -> list[int]:
    """The nested widths: cfg.matryoshka_widths, or d_sae/8, d_sae/4, d_sae/2, d_sae."""
    if cfg.matryoshka_widths:
        return list(cfg.matryoshka_widths)
    return sorted({w for w in (cfg.d_sae // 8, cfg.d_sae // 4, cfg.d_sae // 2, cfg.d_sae) if w >= 1})


def dead_feature_window(cfg: TrainConfig) -> int:
    """cfg.dead_after (vectors) as sae-lens's dead_feature_window (steps), rounded up."""
    return max(1, math.ceil(cfg.dead_after / cfg.batch_size))


def saelens_sae(cfg: TrainConfig, d_in: int, device: torch.device, metadata=None):
    """A fresh sae-lens training SAE for cfg.architecture (weights from torch's global RNG)."""
    import sae_lens as sl

    common = dict(d_in=d_in, d_sae=cfg.d_sae, dtype="float32", device=str(device), apply_b_dec_to_input=True,
                  normalize_activations="none")  # we scale the inputs ourselves (see fit_with_saelens)
    if metadata is not None:
        common["metadata"] = metadata
    arch = cfg.architecture
    if arch == "standard":
        sae_cfg = sl.StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, l1_warm_up_steps=cfg.l1_warm_up_steps,
                                               **common)
        return sl.StandardTrainingSAE(sae_cfg)
    if arch == "gated":
        sae_cfg = sl.GatedTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, l1_warm_up_steps=cfg.l1_warm_up_steps,
                                            **common)
        return sl.GatedTrainingSAE(sae_cfg)
    if arch == "jumprelu":
        sae_cfg = sl.JumpReLUTrainingSAEConfig(
            jumprelu_init_threshold=cfg.jumprelu_init_threshold, jumprelu_bandwidth=cfg.jumprelu_bandwidth,
            jumprelu_sparsity_loss_mode=cfg.jumprelu_sparsity_loss_mode, l0_coefficient=cfg.l0_coefficient,
            l0_warm_up_steps=cfg.l0_warm_up_steps, pre_act_loss_coefficient=cfg.pre_act_loss_coefficient or None,
            **common)
        return sl.JumpReLUTrainingSAE(sae_cfg)
    # The TopK family. use_sparse_activations stays off: with rescale_acts_by_decoder_norm
    # (on, the default) it crashes in backward on CPU in sae-lens 6.
    topk = dict(k=cfg.k, aux_loss_coefficient=cfg.aux_loss_coefficient, use_sparse_activations=False,
                rescale_acts_by_decoder_norm=True, **common)
    if arch == "topk":
        return sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(**topk))
    if arch == "batchtopk":
        return sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(topk_threshold_lr=cfg.batchtopk_threshold_lr,
                                                                     **topk))
    if arch == "matryoshka_batchtopk":
        sae_cfg = sl.MatryoshkaBatchTopKTrainingSAEConfig(matryoshka_widths=matryoshka_widths(cfg),
                                                          topk_threshold_lr=cfg.batchtopk_threshold_lr, **topk)
        return sl.MatryoshkaBatchTopKTrainingSAE(sae_cfg)
    raise SaexError(f"sae-lens backend: unknown architecture {arch!r}",
                    f"use one of {', '.join(SAELENS_ARCHITECTURES)}")


def _metadata(store: ActivationStore, cfg: TrainConfig):
    meta = sae_metadata(store, cfg)  # model, hook and corpus facts, as our own runs record them
    meta.training_backend = "sae-lens SAETrainer"
    return meta


@functools.cache
def _trainer_class():
    from sae_lens.training.sae_trainer import SAETrainer

    class _RecordingTrainer(SAETrainer):
        """SAETrainer that records our metrics through its public `step()` seam."""

        def __init__(self, *args, log_every: int, total_steps: int, on_log, **kwargs):
            super().__init__(*args, **kwargs)
            self.log_every, self.total_steps, self.on_log = log_every, total_steps, on_log
            self.started: float | None = None

        def step(self, batch: torch.Tensor):
            if self.started is None:
                self.started = time.perf_counter()
            step = self.n_training_steps  # 0-based; fit() increments it after step() returns
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler steps inside)
            out = super().step(batch)
            if step % self.log_every == 0 or step == self.total_steps - 1:
                d = self.build_train_step_log_dict(out, self.n_training_samples)
                rec = {"step": step, "vectors": self.n_training_samples, "loss": d["losses/overall_loss"],
                       "mse": d["losses/mse_loss"], "explained_variance": d["metrics/explained_variance"],
                       "l0": d["metrics/l0"], "dead_fraction": d["sparsity/dead_features"] / self.sae.cfg.d_sae,
                       "lr": lr, "vectors_per_s": self.n_training_samples / (time.perf_counter() - self.started)}
                # sae-lens's other terms: l1_loss, l0_loss, auxiliary_reconstruction_loss, inner_mse_loss_<w>,
                # coefficients (after warm-up) and metrics such as topk_threshold
                for key, value in d.items():
                    group, _, name = key.partition("/")
                    if group == "losses" and name not in ("overall_loss", "mse_loss"):
                        rec[name] = value
                    elif group == "details" and name.endswith("_coefficient"):
                        rec[name] = value
                    elif group == "metrics" and name not in ("explained_variance", "l0") and "legacy" not in name:
                        rec[name] = value
                self.on_log(rec)
            return out

    return _RecordingTrainer


@dataclass
class SaeLensFit:
    """A finished sae-lens training run, before saving. `sae` still works on scaled inputs
    (x * scale); `save_saelens_run` folds the scale in."""

    sae: Any
    trainer: Any
    scale: float
    store: ActivationStore
    stats: dict = field(default_factory=dict)


def _data(store: ActivationStore, cfg: TrainConfig, scale: float, device: torch.device) -> Iterator[torch.Tensor]:
    for _, x in data.batches(store, cfg.batch_size, cfg.epochs, cfg.shards_in_memory, cfg.seed):
        yield x.to(device, non_blocking=True) * scale


def fit_with_saelens(cfg: TrainConfig, max_steps: int | None = None, metrics_path: Path | None = None,
                     quiet: bool = False) -> SaeLensFit:
    """Train with sae-lens's SAETrainer.fit() on our store; no files written except the
    metrics log (when `metrics_path` is given). `max_steps` caps the run (the LR schedule
    is then planned for the capped length), for benchmarks and tests."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training import sae_trainer as sae_trainer_module
    from tqdm.auto import tqdm

    if cfg.architecture not in SAELENS_ARCHITECTURES:
        raise SaexError(f"sae-lens backend: unknown architecture {cfg.architecture!r}",
                        f"use one of {', '.join(SAELENS_ARCHITECTURES)}")
    store = ActivationStore(cfg.store)
    device = resolve_device(cfg.device)
    d_in = store.d_model
    total_steps = data.total_steps(store, cfg.batch_size, cfg.epochs)
    if total_steps < 1:
        raise SaexError(f"the store has {store.manifest['n_usable']:,} usable vectors, "
                        f"fewer than one batch of {cfg.batch_size}",
                        "lower batch_size or harvest more tokens")
    if max_steps is not None:
        if max_steps < 1:
            raise SaexError(f"max_steps must be at least 1, got {max_steps}", "give a positive number of steps")
        total_steps = min(total_steps, max_steps)
    scale, mean = data.estimate_scale(store)
    if cfg.normalize == "none":
        scale, mean = 1.0, mean / scale

    bf16, precision_reason = cfg.bf16(device)
    torch.manual_seed(cfg.seed)  # sae-lens initialises from the global RNG
    sae = saelens_sae(cfg, d_in, device, _metadata(store, cfg))
    with torch.no_grad():
        sae.b_dec.copy_(mean.to(sae.b_dec))

    trainer_cfg = SAETrainerConfig(
        total_training_samples=total_steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr, lr_end=cfg.lr_end, lr_scheduler_name="cosineannealing",
        # sae-lens's cosine needs at least one step after the warm-up
        lr_warm_up_steps=min(cfg.warmup_steps, total_steps - 1), lr_decay_steps=0,
        adam_beta1=0.9, adam_beta2=0.999, device=str(device), autocast=bf16,
        dead_feature_window=dead_feature_window(cfg),
        # longer than the run: the density counters are never reset, so they cover the whole run
        feature_sampling_window=total_steps + 1,
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=1)

    log = open(metrics_path, "w") if metrics_path is not None else None

    def on_log(rec: dict) -> None:
        if log is not None:
            log.write(json.dumps(rec) + "\n")
            log.flush()

    trainer = _trainer_class()(cfg=trainer_cfg, sae=sae, data_provider=_data(store, cfg, scale, device),
                               log_every=cfg.log_every, total_steps=total_steps, on_log=on_log)
    # fit() draws its own progress bar and has no switch for it: give it a disabled one when asked.
    bar = tqdm if cfg.progress and not quiet else functools.partial(tqdm, disable=True)
    patch = contextlib.nullcontext() if bar is tqdm else _patched(sae_trainer_module, "tqdm", bar)
    started = time.perf_counter()
    try:
        with patch:
            trainer.fit()
    finally:
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - started
    seen = trainer.n_training_samples
    return SaeLensFit(sae=sae, trainer=trainer, scale=scale, store=store,
                      stats={"train_seconds": elapsed, "vectors": seen, "vectors_per_s": seen / elapsed,
                             "steps": trainer.n_training_steps, "bf16_encoder": bf16,
                             "precision_reason": precision_reason})


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)  # AttributeError if sae-lens renamed it: loud, not silent
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def save_saelens_run(fit: SaeLensFit, cfg: TrainConfig, out: Path) -> Path:
    """Fold the input scale and the decoder norms into `fit.sae` (in place) and write the
    run folder; cfg.json last (its presence marks a finished run)."""
    out = Path(out)
    sae = fit.sae
    sae.fold_activation_norm_scaling_factor(fit.scale)  # reads raw activations from here on
    sae.fold_W_dec_norm()  # unit-norm decoder rows; activations change, reconstructions do not
    with tempfile.TemporaryDirectory(prefix="saex-saelens-") as tmp:
        sae.save_inference_model(tmp)
        with atomic_path(out / WEIGHTS_FILE) as dest:
            dest.write_bytes((Path(tmp) / WEIGHTS_FILE).read_bytes())
        cfg_json = json.loads((Path(tmp) / CFG_FILE).read_text())
    import sae_lens

    # density: the fraction of training vectors each latent fired on (the trainer's counters, never reset)
    write_run_files(out, cfg, fit.store, fit.scale, fit.trainer.feature_sparsity,
                    {**fit.stats, "backend": "sae-lens", "sae_lens_version": sae_lens.__version__,
                     "training_architecture": cfg.architecture, "saved_architecture": cfg_json["architecture"]})
    if (out / METRICS_FILE).exists():
        write_plot(out)
    write_json_atomic(out / CFG_FILE, cfg_json)  # last: its presence marks a finished run
    return out


def train_with_saelens(cfg: TrainConfig, max_steps: int | None = None) -> Path:
    """Train cfg.architecture with sae-lens's SAETrainer and write the run folder; returns it."""
    out = Path(cfg.out)
    if is_finished(out):
        raise SaexError(f"{out} already holds a trained SAE", "choose another --out, or delete that run folder")
    ensure_writable_dir(out, "run")
    fit = fit_with_saelens(cfg, max_steps=max_steps, metrics_path=out / METRICS_FILE)
    save_saelens_run(fit, cfg, out)
    s = fit.stats
    print(f"trained on {s['vectors']:,} vectors in {s['train_seconds']:.0f} s ({s['vectors_per_s']:,.0f} vectors/s, "
          f"sae-lens SAETrainer, {cfg.architecture})", file=sys.stderr)
    return out


def saelens_vectors_per_second(cfg: TrainConfig, n_steps: int) -> float:
    """Training throughput of sae-lens's SAETrainer on this config for `n_steps` steps
    (nothing is written; fit() time only, setup excluded), for bench/train_vs_saelens.py."""
    return fit_with_saelens(cfg, max_steps=n_steps, quiet=True).stats["vectors_per_s"]
