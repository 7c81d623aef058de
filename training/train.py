"""Train a TopK or BatchTopK SAE on an activation store and write a SAELens-format run folder.

The loop, top to bottom: scale inputs to mean norm sqrt(d_in); start b_dec at the data
mean; per step, encode (dense bf16 matmul, sparse backward), sparse decode, MSE + AuxK on
dead latents, Adam, decoder rows back to unit norm; cosine learning rate after a linear
warm-up. Every `checkpoint_every` steps the state goes to RUN/checkpoint.safetensors; a
rerun of an interrupted run continues from there. Under `torchrun` each process trains on
its slice of every batch and gradients are averaged (training/distributed.py).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from sae.data.models import resolve_device
from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, write_json_atomic
from training import data, distributed
from training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.topk import FastTopKSAE, auxk_loss


def batches(store: ActivationStore, batch_size: int, epochs: float, shards_in_memory: int,
            seed: int) -> Iterator[torch.Tensor]:
    """The run's batches in order, "batch d_in" fp32 (see training.data.batches)."""
    for _, x in data.batches(store, batch_size, epochs, shards_in_memory, seed):
        yield x


def estimate_scale(store: ActivationStore, n: int = 100_000) -> tuple[float, torch.Tensor]:
    """(scale, mean): the factor that gives inputs mean norm sqrt(d_in), and the mean
    of the scaled inputs (the initial b_dec), from the first shards."""
    parts, have = [], 0
    for k in range(store.n_shards):
        u = store.usable(k)
        if not torch.isfinite(u).all():
            raise SaexError(f"NaN/inf activations in shard {k} of {store.path} (found while estimating the "
                            "input scale, before training)", "harvest that store again (with --precision fp32 if it persists)")
        parts.append(u)
        have += len(u)
        if have >= n:
            break
    x = torch.cat(parts)[:n]
    if not len(x):
        raise SaexError(f"{store.path} has no usable vectors", "harvest more tokens (or check the outlier threshold)")
    scale = math.sqrt(store.d_model) / float(x.norm(dim=-1).mean())
    return scale, (x * scale).mean(0)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * min(1.0, t)))


def train(cfg: TrainConfig) -> Path:
    """Train and save (or resume an interrupted run); returns the run folder."""
    if cfg.trainer() == "saelens":
        from training.saelens_backend import train_with_saelens

        return train_with_saelens(cfg)
    store = ActivationStore(cfg.store)
    out = Path(cfg.out)
    if (out / "cfg.json").exists():
        raise SaexError(f"{out} already holds a trained SAE", "choose another --out, or delete that run folder")
    rank, world, device = distributed.setup(resolve_device(cfg.device))
    if rank == 0:
        ensure_writable_dir(out, "run")
    torch.manual_seed(cfg.seed)
    d_in = store.d_model
    scale, mean = estimate_scale(store)
    if cfg.normalize == "none":
        scale, mean = 1.0, mean / scale
    sae = FastTopKSAE(d_in, cfg.d_sae, cfg.k, batch_topk=cfg.architecture == "batchtopk",
                      threshold_lr=cfg.batchtopk_threshold_lr,
                      generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(mean)
    # The fused kernel is ~5x faster than the default foreach Adam on CPU (13 vs 70 ms a step here).
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    aux_k = cfg.aux_k or d_in // 2
    n_steps = data.total_steps(store, cfg.batch_size, cfg.epochs)
    if n_steps < 1:
        raise SaexError(f"the store has {store.manifest['n_usable']:,} usable vectors, fewer than one batch of {cfg.batch_size}",
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
        codes, pre, xc = sae.encode(x, bf16=cfg.autocast)
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
            seen += cfg.batch_size
            if sae.batch_topk:
                kept = codes.vals[codes.vals > 0]
                sae.update_threshold(distributed.all_min(kept.min() if len(kept) else x.new_tensor(math.inf), world))
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
                                                        "world_size": world, "resumed_at_step": first or None})
        (out / CHECKPOINT).unlink(missing_ok=True)
        print(f"trained on {seen:,} vectors in {elapsed:.0f} s ({seen / elapsed:,.0f} vectors/s)", file=sys.stderr)
    distributed.barrier(world)
    return out


def store_identity(store: ActivationStore) -> dict:
    """What a checkpoint must agree with to be resumed on this store (its path may move)."""
    m = store.manifest
    return {"model_weights_sha256": m["model"]["weights_sha256"], "hook": m["hook"]["name"],
            "d_model": m["d_model"], "n_usable": m["n_usable"], "corpus": m["corpus"]}


def _open_log(out: Path, first_step: int):
    """metrics.jsonl for appending, without lines from steps a resumed run will redo."""
    path = out / "metrics.jsonl"
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


def save_run(sae: FastTopKSAE, scale: float, density: torch.Tensor, store: ActivationStore,
             cfg: TrainConfig, out: Path, stats: dict) -> None:
    """Write the SAE in SAELens's format, with the input scaling folded in so that it
    reads raw activations: b_enc and b_dec divide by the scale, W_dec stays unit-norm,
    and activations come out in raw-activation units (TopK's choice is unchanged).
    BatchTopK is written as sae-lens writes it: a JumpReLU whose threshold (one value
    for all latents) is the running threshold learnt in training."""
    from sae_lens import JumpReLUSAEConfig, TopKSAEConfig
    from safetensors.torch import save_file

    common = dict(d_in=sae.d_in, d_sae=sae.d_sae, dtype="float32", device="cpu", apply_b_dec_to_input=True,
                  normalize_activations="none", metadata=sae_metadata(store))
    sl_cfg = JumpReLUSAEConfig(**common) if sae.batch_topk else TopKSAEConfig(k=sae.k, **common)
    weights = {
        "W_enc": sae.W_enc.detach().float().cpu().contiguous(),
        "b_enc": (sae.b_enc.detach().float().cpu() / scale).contiguous(),
        "W_dec": sae.W_dec.detach().float().cpu().contiguous(),
        "b_dec": (sae.b_dec.detach().float().cpu() / scale).contiguous(),
    }
    if sae.batch_topk:
        weights["threshold"] = torch.full((sae.d_sae,), float(sae.threshold) / scale)
    with atomic_path(out / "sae_weights.safetensors") as tmp:
        save_file(weights, str(tmp))
    write_run_files(out, cfg, store, scale, density, stats)
    try:
        from training.plot import plot_metrics

        plot_metrics(out / "metrics.jsonl", out / "training.png")
    except Exception as e:  # a missing plot must not cost the trained SAE
        print(f"warning: no training plot ({type(e).__name__}: {e})", file=sys.stderr)
    write_json_atomic(out / "cfg.json", sl_cfg.to_dict())  # last: its presence marks a finished run


def sae_metadata(store: ActivationStore):
    from sae_lens.saes.sae import SAEMetadata

    m = store.manifest
    return SAEMetadata(model_name=m["model"]["spec"], hook_name=m["hook"]["name"],
                       hf_hook_name=m["hook"]["module_path"], context_size=m["context_size"],
                       prepend_bos=m["prepend_bos"], model_weights_sha256=m["model"]["weights_sha256"],
                       trained_by="sae-explorer")


def write_run_files(out: Path, cfg: TrainConfig, store: ActivationStore, scale: float, density: torch.Tensor,
                    stats: dict) -> None:
    """sparsity.safetensors, train_config.json and run.json: the files every run folder has."""
    from safetensors.torch import save_file

    m = store.manifest
    with atomic_path(out / "sparsity.safetensors") as tmp:
        save_file({"sparsity": torch.log10(density.float().cpu() + 1e-10).contiguous()}, str(tmp))
    write_json_atomic(out / "train_config.json", cfg.to_dict())
    write_json_atomic(out / "run.json", {"store": str(Path(cfg.store).resolve()), "model": m["model"], "hook": m["hook"],
                                         "corpus": m["corpus"], "input_scale": scale, **stats})


def load_sae(path: str | Path) -> FastTopKSAE:
    """Our module from a SAELens-format TopK folder (raw-activation space)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        cfg = json.loads((path / "cfg.json").read_text())
        w = load_file(str(path / "sae_weights.safetensors"))
    except FileNotFoundError:
        raise SaexError(f"{path} holds no trained SAE (cfg.json + sae_weights.safetensors)",
                        "give a run folder made by `saex train`") from None
    except Exception as e:
        raise SaexError(f"the SAE in {path} is unreadable ({type(e).__name__}: {e})",
                        "the files are truncated or not SAELens format: train it again") from None
    if cfg.get("architecture") != "topk":
        raise SaexError(f"{path} holds a {cfg.get('architecture')} SAE", "this loader reads TopK SAEs")
    sae = FastTopKSAE(cfg["d_in"], cfg["d_sae"], cfg["k"])
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            if tuple(w[name].shape) != tuple(getattr(sae, name).shape):
                raise SaexError(f"{path}: {name} has shape {tuple(w[name].shape)}, cfg.json implies "
                                f"{tuple(getattr(sae, name).shape)}", "the checkpoint is corrupt: train it again")
            getattr(sae, name).copy_(w[name])
    return sae
