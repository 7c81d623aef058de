"""Our fast training loop for TopK and BatchTopK SAEs: `train_topk(cfg)` trains on an activation
store (resuming from RUN/checkpoint.safetensors if a run was interrupted, data-parallel under
`torchrun`) and writes the run folder."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from sae.data.models import resolve_device
from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir
from sae.runs.files import CHECKPOINT_FILE, METRICS_FILE, is_finished
from training import data, distributed
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.run_files import save_run, store_identity
from training.topk import FastTopKSAE, TopKCodes, auxk_loss


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over cfg.warmup_steps, then cosine decay from cfg.lr to cfg.lr_end."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * min(1.0, t)))


def train_topk(cfg: TrainConfig) -> Path:
    """Train and save (or resume an interrupted run); returns the run folder."""
    store = ActivationStore(cfg.store)
    out = Path(cfg.out)
    if is_finished(out):
        raise SaexError(f"{out} already holds a trained SAE", "choose another --out, or delete that run folder")
    rank, world, device = distributed.setup(resolve_device(cfg.device))
    try:
        return _train(cfg, store, out, rank, world, device)
    finally:
        distributed.teardown(world)


def _train(cfg: TrainConfig, store: ActivationStore, out: Path, rank: int, world: int,
           device: torch.device) -> Path:
    if rank == 0:
        ensure_writable_dir(out, "run")
    sae, opt, scale = _new_sae(cfg, store, device)
    bf16, precision_reason = cfg.bf16(device)
    aux_k = cfg.aux_k or store.d_model // 2
    n_steps = data.total_steps(store, cfg.batch_size, cfg.epochs)
    if n_steps < 1:
        raise SaexError(f"the store has {store.manifest['n_usable']:,} usable vectors, "
                        f"fewer than one batch of {cfg.batch_size}",
                        "lower batch_size or harvest more tokens")
    counters = {"since_fired": torch.zeros(cfg.d_sae, dtype=torch.long, device=device),
                "fired": torch.zeros(cfg.d_sae, dtype=torch.long, device=device)}
    resumed = load_checkpoint(out, sae, opt, counters, cfg.to_dict(), store_identity(store))
    first, seen, spent = (resumed["step"], resumed["vectors"], resumed["seconds"]) if resumed else (0, 0, 0.0)
    if resumed:
        scale = resumed["input_scale"]
        if rank == 0:
            print(f"resuming {out} at step {first:,} of {n_steps:,}", file=sys.stderr)
    log = _open_log(out, first) if rank == 0 else None
    from tqdm.auto import tqdm

    bar = tqdm(total=n_steps, initial=first, unit="step", desc="train", disable=not cfg.progress or rank > 0)
    started = time.perf_counter() - spent
    step = first - 1
    for step, x in data.batches(store, cfg.batch_size, cfg.epochs, cfg.shards_in_memory, cfg.seed,
                                start_step=first, rank=rank, world_size=world):
        x = x.to(device) * scale
        for group in opt.param_groups:
            group["lr"] = lr_at(step, n_steps, cfg)
        codes, residual, loss, mse, aux = _step(sae, opt, x, counters, cfg, aux_k, world, bf16)
        seen += cfg.batch_size
        done = step + 1
        if step % cfg.log_every == 0 or done == n_steps:
            rec = _metrics(step, seen, x, residual, loss, mse, aux, codes, counters, cfg, opt, world,
                           time.perf_counter() - started)
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            bar.set_postfix(ev=f"{rec['explained_variance']:.3f}", dead=f"{rec['dead_fraction']:.1%}")
        if rank == 0 and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < n_steps:
            save_checkpoint(out, sae, opt, counters, {"step": done, "vectors": seen, "input_scale": scale,
                                                      "seconds": time.perf_counter() - started,
                                                      "config": cfg.to_dict(), "store": store_identity(store)})
        bar.update(1)
    bar.close()
    if log:
        log.close()
    elapsed = time.perf_counter() - started
    if rank == 0:
        density = counters["fired"].float() / max(seen, 1)
        save_run(sae, scale, density, store, cfg, out, {"train_seconds": elapsed, "vectors": seen,
                                                        "vectors_per_s": seen / elapsed, "steps": step + 1,
                                                        "world_size": world, "resumed_at_step": first or None,
                                                        "bf16_encoder": bf16, "precision_reason": precision_reason})
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)
        print(f"trained on {seen:,} vectors in {elapsed:.0f} s ({seen / elapsed:,.0f} vectors/s)", file=sys.stderr)
    distributed.barrier(world)
    return out


def _new_sae(cfg: TrainConfig, store: ActivationStore,
             device: torch.device) -> tuple[FastTopKSAE, torch.optim.Optimizer, float]:
    """(sae, optimizer, input scale) for a fresh run: inputs are scaled to mean norm sqrt(d_in)
    (unless cfg.normalize is "none") and b_dec starts at the mean of the scaled data."""
    torch.manual_seed(cfg.seed)
    scale, mean = data.estimate_scale(store)
    if cfg.normalize == "none":
        scale, mean = 1.0, mean / scale
    sae = FastTopKSAE(store.d_model, cfg.d_sae, cfg.k, batch_topk=cfg.architecture == "batchtopk",
                      threshold_lr=cfg.batchtopk_threshold_lr,
                      generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(mean)
    # The fused kernel is ~5x faster than the default foreach Adam on CPU (13 vs 70 ms a step here).
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    return sae, opt, scale


def _step(sae: FastTopKSAE, opt: torch.optim.Optimizer, x: torch.Tensor, counters: dict[str, torch.Tensor],
          cfg: TrainConfig, aux_k: int, world: int,
          bf16: bool) -> tuple[TopKCodes, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on the scaled batch x; returns (codes, residual, loss, mse, aux) for the metrics."""
    codes, pre, xc = sae.encode(x, bf16=bf16)
    residual = x - sae.decode(codes)
    mse = residual.pow(2).sum(-1).mean()
    dead = counters["since_fired"] > cfg.dead_after
    aux = auxk_loss(sae, xc, pre, residual.detach(), dead, aux_k) if dead.any() else mse.new_zeros(())
    loss = mse + cfg.aux_coef * aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(sae.parameters(), world)
    sae.remove_parallel_grad()
    opt.step()
    sae.normalise_decoder()
    with torch.no_grad():
        counts = distributed.all_sum(torch.bincount(codes.cols[codes.vals > 0], minlength=cfg.d_sae), world)
        counters["fired"] += counts
        counters["since_fired"] += cfg.batch_size
        counters["since_fired"][counts > 0] = 0
        if sae.batch_topk:
            kept = codes.vals[codes.vals > 0]
            sae.update_threshold(distributed.all_min(kept.min() if len(kept) else x.new_tensor(math.inf), world))
    return codes, residual, loss, mse, aux


def _open_log(out: Path, first_step: int):
    """metrics.jsonl for appending, without lines from steps a resumed run will redo."""
    path = out / METRICS_FILE
    if first_step and path.exists():
        keep = [line for line in path.read_text().splitlines() if line.strip()
                and json.loads(line)["step"] < first_step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))
        return open(path, "a")
    return open(path, "w")


@torch.no_grad()
def _metrics(step, seen, x, residual, loss, mse, aux, codes, counters, cfg, opt, world, seconds) -> dict:
    """One metrics line; under torchrun the batch figures cover every rank's slice."""
    sums = torch.stack([residual.pow(2).sum(), (x - x.mean(0)).pow(2).sum(), (codes.vals > 0).sum().float(),
                        loss.detach() * len(x), aux.detach() * len(x), torch.tensor(float(len(x)))])
    err, var, active, loss_sum, aux_sum, n = distributed.all_sum(sums, world).tolist()
    return {"step": step, "vectors": seen, "loss": loss_sum / n, "mse": err / n,
            "explained_variance": 1 - err / max(var, 1e-12), "aux": aux_sum / n, "l0": active / n,
            "dead_fraction": float((counters["since_fired"] > cfg.dead_after).float().mean()),
            "lr": opt.param_groups[0]["lr"], "seconds": seconds, "vectors_per_s": seen / seconds}
