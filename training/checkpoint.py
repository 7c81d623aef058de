"""Resumable training state: the SAE, Adam's moments and the latent counters in one
safetensors file, replaced atomically every `checkpoint_every` steps.

The data order is a function of the step (training/data.py), so weights, optimizer state
and counters are all a resumed run needs to continue exactly where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sae.errors import SaexError
from sae.fsutil import atomic_path
from sae.runs.files import CHECKPOINT_FILE

# Settings that may change between an interrupted run and its resumption.
MAY_DIFFER = {"progress", "log_every", "checkpoint_every", "device", "out", "store"}


def save_checkpoint(out: Path, sae: torch.nn.Module, opt: torch.optim.Optimizer, counters: dict[str, torch.Tensor],
                    meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"sae.{n}": t.detach().cpu().contiguous() for n, t in sae.state_dict().items()}
    for name, p in sae.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            tensors[f"adam.{name}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors.update({f"counter.{k}": v.detach().cpu().contiguous() for k, v in counters.items()})
    with atomic_path(out / CHECKPOINT_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})


def load_checkpoint(out: Path, sae: torch.nn.Module, opt: torch.optim.Optimizer, counters: dict[str, torch.Tensor],
                    config: dict, store: dict | None = None) -> dict | None:
    """Restore state in place and return the saved meta, or None when there is no checkpoint."""
    from safetensors import safe_open

    path = out / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["meta"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise SaexError(f"the checkpoint {path} is unreadable ({type(e).__name__}: {e})",
                        f"delete {path} to start the run over") from None
    saved = {k: v for k, v in meta.get("config", {}).items() if k not in MAY_DIFFER}
    now = {k: v for k, v in config.items() if k not in MAY_DIFFER}
    if saved != now:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                         if saved.get(k) != now.get(k))
        raise SaexError(f"{out} holds an interrupted run with other settings ({diff})",
                        f"rerun with the same settings to resume it, or delete {path} to start over")
    if store is not None and meta.get("store") != store:
        raise SaexError(f"{path} was written while training on another activation store "
                        f"({meta.get('store')} vs now {store})",
                        f"train on the same store to resume, or delete {path} to start over")
    shapes = {n: tuple(t.shape) for n, t in sae.state_dict().items()}
    saved_shapes = {n[len("sae."):]: tuple(t.shape) for n, t in tensors.items() if n.startswith("sae.")}
    if shapes != saved_shapes:
        raise SaexError(f"{path} holds an SAE of other shapes ({saved_shapes} vs {shapes})",
                        f"delete {path} to start over")
    with torch.no_grad():
        for n, t in sae.state_dict().items():
            t.copy_(tensors[f"sae.{n}"])
    for name, p in sae.named_parameters():
        keys = [k for k in tensors if k.startswith(f"adam.{name}.")]
        # Moments take the parameter's own memory layout: the fused Adam kernel walks
        # parameter, gradient and moments as flat memory and assumes they match.
        opt.state[p] = {k.rsplit(".", 1)[1]: tensors[k].clone() if k.endswith(".step")
                        else torch.empty_like(p, memory_format=torch.preserve_format).copy_(tensors[k])
                        for k in keys}
    for k, v in counters.items():
        v.copy_(tensors[f"counter.{k}"])
    return meta
