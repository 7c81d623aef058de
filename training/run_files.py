"""The run folder every trainer writes: SAELens-format weights and cfg.json, sparsity.safetensors,
train_config.json, run.json and the training plot, plus the store facts a checkpoint must match."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sae.data.store import ActivationStore
from sae.fsutil import atomic_path, write_json_atomic
from training.config import TrainConfig
from training.plot import plot_metrics
from training.topk import FastTopKSAE


def store_identity(store: ActivationStore) -> dict:
    """What a checkpoint must agree with to be resumed on this store (its path may move)."""
    m = store.manifest
    return {"model_weights_sha256": m["model"]["weights_sha256"], "hook": m["hook"]["name"],
            "d_model": m["d_model"], "n_usable": m["n_usable"], "corpus": m["corpus"]}


def sae_metadata(store: ActivationStore):
    """sae-lens's SAEMetadata for an SAE trained on `store`: its model, hook and context."""
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
    write_json_atomic(out / "run.json", {"store": str(Path(cfg.store).resolve()), "model": m["model"],
                                         "hook": m["hook"], "corpus": m["corpus"], "input_scale": scale, **stats})


def write_plot(out: Path) -> None:
    """training.png from metrics.jsonl, or a warning: a missing plot must not cost the trained SAE."""
    try:
        plot_metrics(out / "metrics.jsonl", out / "training.png")
    except Exception as e:
        print(f"warning: no training plot ({type(e).__name__}: {e})", file=sys.stderr)


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
    write_plot(out)
    write_json_atomic(out / "cfg.json", sl_cfg.to_dict())  # last: its presence marks a finished run
