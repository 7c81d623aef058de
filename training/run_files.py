"""The run folder every trainer writes: SAELens-format weights and cfg.json, sparsity.safetensors,
train_config.json, run.json and the training plot, plus the store facts a checkpoint must match."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sae.data.store import ActivationStore
from sae.fsutil import atomic_path, write_json_atomic
from sae.runs.files import CFG_FILE, CURVES_FILE, METRICS_FILE, RUN_FILE, SPARSITY_FILE, TRAIN_CONFIG_FILE, WEIGHTS_FILE
from training.config import TrainConfig
from training.plot import plot_metrics
from training.topk import FastTopKSAE


def store_identity(store: ActivationStore) -> dict:
    """What a checkpoint must agree with to be resumed on this store (its path may move)."""
    m = store.manifest
    return {"model_weights_sha256": m["model"]["weights_sha256"], "hook": m["hook"]["name"],
            "d_model": m["d_model"], "n_usable": m["n_usable"], "corpus": m["corpus"]}


def sae_metadata(store: ActivationStore, cfg: TrainConfig | None = None):
    """sae-lens's SAEMetadata for an SAE trained on `store`, with the fields sae-lens's own
    trainer writes (model, hook, dataset, context, which tokens were left out)."""
    from sae_lens.saes.sae import SAEMetadata

    from sae.data.models import builtin_model_note

    m = store.manifest
    meta = dict(model_name=m["model"]["spec"], model_class_name="AutoModelForCausalLM",
                model_architecture=m["model"].get("class"), hook_name=m["hook"]["name"],
                hf_hook_name=m["hook"]["module_path"], hook_head_index=None, context_size=m["context_size"],
                prepend_bos=m["prepend_bos"], model_weights_sha256=m["model"]["weights_sha256"],
                dataset_path=f"{m['corpus']['spec']} ({m['corpus']['split']} split)", seqpos_slice=[None],
                # training reads only flag-0 vectors: special tokens and norm outliers are left out
                exclude_special_tokens=True, exclude_norm_outliers_above=m.get("outlier_threshold"),
                neuronpedia_id=None, trained_by="sae-explorer")
    note = builtin_model_note(m["model"]["spec"])
    if note:
        meta["model_weights_note"] = note
    if cfg is not None and cfg.architecture == "matryoshka_batchtopk":
        meta["matryoshka_widths"] = list(cfg.matryoshka_widths)
    return SAEMetadata(**meta)


def write_run_files(out: Path, cfg: TrainConfig, store: ActivationStore, scale: float, density: torch.Tensor,
                    stats: dict) -> None:
    """sparsity.safetensors, train_config.json and run.json: the files every run folder has."""
    from safetensors.torch import save_file

    m = store.manifest
    with atomic_path(out / SPARSITY_FILE) as tmp:
        save_file({"sparsity": torch.log10(density.float().cpu() + 1e-10).contiguous()}, str(tmp))
    write_json_atomic(out / TRAIN_CONFIG_FILE, cfg.to_dict())
    write_json_atomic(out / RUN_FILE, {"store": str(Path(cfg.store).resolve()), "model": m["model"],
                                         "hook": m["hook"], "corpus": m["corpus"], "input_scale": scale, **stats})


def write_plot(out: Path) -> None:
    """training.png from metrics.jsonl, or a warning: a missing plot must not cost the trained SAE."""
    try:
        plot_metrics(out / METRICS_FILE, out / CURVES_FILE)
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
                  normalize_activations="none", metadata=sae_metadata(store, cfg))
    sl_cfg = JumpReLUSAEConfig(**common) if sae.batch_topk else TopKSAEConfig(k=sae.k, **common)
    weights = {
        "W_enc": sae.W_enc.detach().float().cpu().contiguous(),
        "b_enc": (sae.b_enc.detach().float().cpu() / scale).contiguous(),
        "W_dec": sae.W_dec.detach().float().cpu().contiguous(),
        "b_dec": (sae.b_dec.detach().float().cpu() / scale).contiguous(),
    }
    if sae.batch_topk:
        weights["threshold"] = torch.full((sae.d_sae,), float(sae.threshold) / scale)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp))
    write_run_files(out, cfg, store, scale, density, stats)
    write_plot(out)
    write_json_atomic(out / CFG_FILE, sl_cfg.to_dict())  # last: its presence marks a finished run
