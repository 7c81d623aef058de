"""Train a TopK SAE on an activation store and write a SAELens-format run folder.

The loop, top to bottom: scale inputs to mean norm sqrt(d_in); start b_dec at the data
mean; per step, TopK encode, sparse decode, MSE + AuxK on dead latents, Adam, decoder
rows back to unit norm; cosine learning rate after a linear warm-up.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from sae.activations import ActivationStore
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, write_json_atomic
from sae.models import resolve_device
from training.config import TrainConfig
from training.topk import FastTopKSAE, auxk_loss


def batches(store: ActivationStore, batch_size: int, epochs: float, shards_in_memory: int,
            seed: int) -> Iterator[torch.Tensor]:
    """Shuffled "batch d_in" fp32 batches of usable vectors: shards are visited in a
    seeded random order, `shards_in_memory` at a time, and shuffled together."""
    g = torch.Generator().manual_seed(seed)
    total = int(store.manifest["n_usable"] * epochs)
    given = 0
    while given < total:
        order = torch.randperm(store.n_shards, generator=g).tolist()
        for start in range(0, len(order), shards_in_memory):
            group = torch.cat([store.usable(k) for k in order[start:start + shards_in_memory]])
            if not torch.isfinite(group).all():
                raise SaexError(f"NaN/inf activations in shards {order[start:start + shards_in_memory]} of {store.path}",
                                "harvest the store again (with --precision fp32 if it persists)")
            group = group[torch.randperm(len(group), generator=g)]
            for i in range(0, len(group) - batch_size + 1, batch_size):
                if given >= total:
                    return
                yield group[i:i + batch_size]
                given += batch_size


def estimate_scale(store: ActivationStore, n: int = 100_000) -> tuple[float, torch.Tensor]:
    """(scale, mean): the factor that gives inputs mean norm sqrt(d_in), and the mean
    of the scaled inputs (the initial b_dec), from the first shards."""
    parts, have = [], 0
    for k in range(store.n_shards):
        u = store.usable(k)
        parts.append(u)
        have += len(u)
        if have >= n:
            break
    x = torch.cat(parts)[:n]
    scale = math.sqrt(store.d_model) / float(x.norm(dim=-1).mean())
    return scale, (x * scale).mean(0)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * min(1.0, t)))


def train(cfg: TrainConfig) -> Path:
    """Train and save; returns the run folder."""
    store = ActivationStore(cfg.store)
    out = Path(cfg.out)
    if (out / "cfg.json").exists():
        raise SaexError(f"{out} already holds a trained SAE", "choose another --out, or delete that run folder")
    ensure_writable_dir(out, "run")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    d_in = store.d_model
    scale, mean = estimate_scale(store)
    if cfg.normalize == "none":
        scale, mean = 1.0, mean / scale
    sae = FastTopKSAE(d_in, cfg.d_sae, cfg.k, generator=gen).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(mean)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    aux_k = cfg.aux_k or d_in // 2
    total_steps = int(store.manifest["n_usable"] * cfg.epochs) // cfg.batch_size
    if total_steps < 1:
        raise SaexError(f"the store has {store.manifest['n_usable']:,} usable vectors, fewer than one batch of {cfg.batch_size}",
                        "lower batch_size or harvest more tokens")
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    fired_count = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    seen = 0
    log_path = out / "metrics.jsonl"
    log = open(log_path, "w")
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, unit="step", desc="train", disable=not cfg.progress)
    started = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.autocast)
    for step, x in enumerate(batches(store, cfg.batch_size, cfg.epochs, cfg.shards_in_memory, cfg.seed)):
        x = x.to(device) * scale
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg)
        with autocast:
            vals, idx, pre = sae.encode_with_pre(x)
        recon = sae.decode_sparse(vals, idx)
        residual = x - recon
        mse = residual.pow(2).sum(-1).mean()
        dead = since_fired > cfg.dead_after
        aux = auxk_loss(sae, pre, residual.detach(), dead, aux_k) if dead.any() else mse.new_zeros(())
        loss = mse + cfg.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad()
        opt.step()
        sae.normalise_decoder()
        with torch.no_grad():
            counts = torch.bincount(idx[vals > 0], minlength=cfg.d_sae)
            fired_count += counts
            since_fired += len(x)
            since_fired[counts > 0] = 0
            seen += len(x)
        if step % cfg.log_every == 0 or step == total_steps - 1:
            with torch.no_grad():
                var = (x - x.mean(0)).pow(2).sum(-1).mean()
                rec = {"step": step, "vectors": seen, "loss": float(loss), "mse": float(mse),
                       "explained_variance": float(1 - mse / var), "aux": float(aux),
                       "l0": float((vals > 0).sum(-1).float().mean()),
                       "dead_fraction": float((since_fired > cfg.dead_after).float().mean()),
                       "lr": opt.param_groups[0]["lr"],
                       "vectors_per_s": seen / (time.perf_counter() - started)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(ev=f"{rec['explained_variance']:.3f}", dead=f"{rec['dead_fraction']:.1%}")
        bar.update(1)
    bar.close()
    log.close()
    elapsed = time.perf_counter() - started
    density = fired_count.float() / max(seen, 1)
    save_run(sae, scale, density, store, cfg, out, {"train_seconds": elapsed, "vectors": seen,
                                                    "vectors_per_s": seen / elapsed, "steps": step + 1})
    print(f"trained on {seen:,} vectors in {elapsed:.0f} s ({seen / elapsed:,.0f} vectors/s)", file=sys.stderr)
    return out


def save_run(sae: FastTopKSAE, scale: float, density: torch.Tensor, store: ActivationStore,
             cfg: TrainConfig, out: Path, stats: dict) -> None:
    """Write the SAE in SAELens's format, with the input scaling folded in so that it
    reads raw activations: b_enc and b_dec divide by the scale, W_dec stays unit-norm,
    and activations come out in raw-activation units (TopK's choice is unchanged)."""
    from safetensors.torch import save_file
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    m = store.manifest
    meta = SAEMetadata(model_name=m["model"]["spec"], hook_name=m["hook"]["name"],
                       hf_hook_name=m["hook"]["module_path"], context_size=m["context_size"],
                       prepend_bos=m["prepend_bos"], model_weights_sha256=m["model"]["weights_sha256"],
                       trained_by="sae-explorer")
    sl_cfg = TopKSAEConfig(d_in=sae.d_in, d_sae=sae.d_sae, k=sae.k, dtype="float32", device="cpu",
                           apply_b_dec_to_input=True, normalize_activations="none", metadata=meta)
    weights = {
        "W_enc": sae.W_enc.detach().float().cpu().contiguous(),
        "b_enc": (sae.b_enc.detach().float().cpu() / scale).contiguous(),
        "W_dec": sae.W_dec.detach().float().cpu().contiguous(),
        "b_dec": (sae.b_dec.detach().float().cpu() / scale).contiguous(),
    }
    with atomic_path(out / "sae_weights.safetensors") as tmp:
        save_file(weights, str(tmp))
    with atomic_path(out / "sparsity.safetensors") as tmp:
        save_file({"sparsity": torch.log10(density.float().cpu() + 1e-10).contiguous()}, str(tmp))
    write_json_atomic(out / "train_config.json", cfg.to_dict())
    write_json_atomic(out / "run.json", {"store": str(Path(cfg.store).resolve()), "model": m["model"], "hook": m["hook"],
                                         "corpus": m["corpus"], "input_scale": scale, **stats})
    write_json_atomic(out / "cfg.json", sl_cfg.to_dict())  # last: its presence marks a finished run


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
