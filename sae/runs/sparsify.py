"""SAEs trained by EleutherAI's sparsify, converted to our (SAELens) TopK format.

sparsify saves a run as one folder per hookpoint beside the run's `config.json` (which
names the `model`):

    RUN/config.json              the run's TrainConfig (+ model, dataset, ...)
    RUN/layers.6/cfg.json        expansion_factor, num_latents, k, activation, multi_topk,
                                 skip_connection, transcode, normalize_decoder, d_in, ...
    RUN/layers.6/sae.safetensors encoder.weight [num_latents, d_in], encoder.bias [num_latents],
                                 W_dec [num_latents, d_in], b_dec [d_in] (+ W_skip [d_in, d_in])

(several seeds: `RUN/layers.6/seed0/...`). Its encoder is top-k of relu(W (x - b_dec) + b),
decoding `acts @ W_dec + b_dec`: a SAELens TopK SAE with W_enc = encoder.weight.T,
b_enc = encoder.bias, W_dec as saved (already [d_sae, d_in]), b_dec as saved and
`apply_b_dec_to_input` true (TopKSAE.encode subtracts b_dec in `process_sae_in`). Relu then
top-k equals top-k then relu (sae-lens's order): relu is monotone. sae-lens's own sparsify
loader transposes W_dec, which is wrong for these files, so this module converts them
itself and writes a run folder of ours (`checkpoints/sparsify/<run>-<hash>/<hookpoint>`;
the user's folder is never written to), reused while the source files are unchanged.

Refused: transcoders (`transcode`: they predict a module's output), skip connections
(`skip_connection`, `W_skip`, `embed_skip`), n-gram lookups (`gram_lookup`), `groupmax`
activation and signed top-k, and hookpoints other than a block's output (`layers.N`,
`h.N` -> `blocks.N.hook_resid_post`). `multi_topk` is a training loss only: the SAE
encodes with k. Without a run `config.json` naming the model the model stays unknown
(`model.spec` null): commands that need it say to pass `--model`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

from sae.errors import SaexError
from sae.runs.catalogue import checkpoints_root
from sae.runs.files import CFG_FILE, RUN_FILE, is_finished
from sae.runs.pretrained import write_run_folder

SPARSIFY_WEIGHTS = "sae.safetensors"
SPARSIFY_CFG = "cfg.json"
RUN_CONFIG = "config.json"
SPARSIFY_DIR = "sparsify"
"""Under the checkpoints root: where converted sparsify SAEs are written."""


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_hookpoint_folder(path: str | Path) -> bool:
    """A sparsify hookpoint folder: sae.safetensors + a cfg.json that is not SAELens's
    (no `architecture`)."""
    path = Path(path)
    if not ((path / SPARSIFY_WEIGHTS).is_file() and (path / SPARSIFY_CFG).is_file()):
        return False
    cfg = _read_json(path / SPARSIFY_CFG)
    return cfg is not None and "architecture" not in cfg


def hookpoints(run: str | Path) -> list[str]:
    """The hookpoint folders (relative names, e.g. `layers.6` or `layers.6/seed0`) of a
    sparsify run folder."""
    run = Path(run)
    if not run.is_dir():
        return []
    found = []
    for p in sorted(run.iterdir()):
        if p.is_dir() and is_hookpoint_folder(p):
            found.append(p.name)
        elif p.is_dir():
            found += [f"{p.name}/{q.name}" for q in sorted(p.iterdir()) if q.is_dir() and is_hookpoint_folder(q)]
    return found


def is_sparsify_run(path: str | Path) -> bool:
    """A folder holding sparsify hookpoint folders (and no SAE of its own)."""
    path = Path(path)
    return path.is_dir() and not (path / CFG_FILE).exists() and bool(hookpoints(path))


def _hookpoint_name(folder: Path) -> str:
    """`layers.6` for RUN/layers.6 and for RUN/layers.6/seed0."""
    return folder.parent.name if re.fullmatch(r"seed\d+", folder.name) else folder.name


def _run_config(folder: Path) -> tuple[dict, Path | None]:
    """The run's config.json (the folder above the hookpoint; two above for seedN)."""
    for parent in (folder.parent, folder.parent.parent):
        doc = _read_json(parent / RUN_CONFIG)
        if doc is not None:
            return doc, parent / RUN_CONFIG
    return {}, None


def resid_hook(hookpoint: str, where: str) -> tuple[str, int]:
    """(blocks.N.hook_resid_post, N) for a block-output hookpoint, or a SaexError."""
    m = re.fullmatch(r"(?:(?:model|gpt_neox|transformer|base_model)\.)*(?:layers|h|blocks)[._](\d+)", hookpoint)
    if m is None:
        raise SaexError(f"{where} reads {hookpoint!r}, not a block's output (layers.N): sae-explorer reads only the "
                        "residual stream after a block, not embeddings, attention or MLP outputs",
                        "give a hookpoint folder of a layers.N sparse coder")
    layer = int(m.group(1))
    return f"blocks.{layer}.hook_resid_post", layer


def check_config(cfg: dict, where: str) -> None:
    """Refuse what cannot be read as a plain TopK SAE of the residual stream."""
    if cfg.get("transcode"):
        raise SaexError(f"{where} is a transcoder (transcode: true): it predicts a module's output from its input and "
                        "does not reconstruct the residual stream", "give a sparse autoencoder (transcode: false)")
    for key in ("skip_connection", "embed_skip"):
        if cfg.get(key):
            raise SaexError(f"{where} has a skip connection ({key}: true), which the SAELens TopK format cannot hold",
                            "give a sparse coder trained without skip connections")
    if cfg.get("gram_lookup"):
        raise SaexError(f"{where} subtracts an n-gram lookup table (gram_lookup: true) from its input",
                        "give a sparse coder trained without gram_lookup")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise SaexError(f"{where} uses the {activation!r} activation; only topk converts to a SAELens TopK SAE",
                        "give a sparse coder trained with activation topk")
    if cfg.get("signed"):
        raise SaexError(f"{where} uses signed top-k", "give a sparse coder trained with unsigned top-k")
    for key in ("k", "d_in"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise SaexError(f"{where}/{SPARSIFY_CFG} has no valid {key}", "the sparsify config is damaged")


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_dir(folder: str | Path, root: str | Path | None = None) -> Path:
    """Where the converted SAE of a sparsify hookpoint folder lives (written or not)."""
    folder = Path(folder).expanduser().resolve()
    hp = folder.relative_to(folder.parent.parent) if re.fullmatch(r"seed\d+", folder.name) else Path(folder.name)
    run = folder.parent.parent if len(hp.parts) == 2 else folder.parent
    tag = hashlib.sha256(str(run).encode()).hexdigest()[:8]
    root = Path(root) if root is not None else checkpoints_root()
    return root / SPARSIFY_DIR / f"{run.name or 'run'}-{tag}" / hp


def _complete(out: Path, source: dict) -> bool:
    if not (is_finished(out) and (out / RUN_FILE).is_file()):
        return False
    got = (_read_json(out / RUN_FILE) or {}).get("sparsify") or {}
    return got.get("source") == source


def pick_folder(path: str | Path, hookpoint: str | None = None) -> Path:
    """The sparsify hookpoint folder meant by `path` (a hookpoint folder, or a run folder
    plus `hookpoint`), or a SaexError."""
    path = Path(path).expanduser()
    if hookpoint is not None:
        folder = path / hookpoint
        if not is_hookpoint_folder(folder):
            have = hookpoints(path)
            raise SaexError(f"{folder} is not a sparsify hookpoint folder (cfg.json + sae.safetensors)",
                            f"give one of {', '.join(have)}" if have else "give a sparsify run folder")
        return folder
    if is_hookpoint_folder(path):
        return path
    have = hookpoints(path)
    if have:
        raise SaexError(f"{path} is a sparsify run with {len(have)} sparse coders ({', '.join(have[:6])}"
                        f"{', ...' if len(have) > 6 else ''})",
                        f"give one hookpoint folder, e.g. {path / have[0]} (in Python: hookpoint='{have[0]}')")
    raise SaexError(f"{path} holds no sparsify sparse coder (cfg.json + sae.safetensors)",
                    "give a sparsify hookpoint folder such as RUN/layers.6")


def convert(path: str | Path, hookpoint: str | None = None, root: str | Path | None = None) -> Path:
    """The run folder (SAELens TopK format) converted from a sparsify hookpoint folder, written
    under the checkpoints root on first use and reused while the source is unchanged."""
    from safetensors import safe_open

    folder = pick_folder(path, hookpoint)
    where = f"the sparsify SAE {folder}"
    cfg = _read_json(folder / SPARSIFY_CFG)
    if cfg is None:
        raise SaexError(f"{folder / SPARSIFY_CFG} is not readable JSON", "the sparsify config is damaged")
    check_config(cfg, where)
    hp = _hookpoint_name(folder)
    hook_name, layer = resid_hook(hp, where)
    run_cfg, run_cfg_path = _run_config(folder)
    source = {"folder": str(folder.resolve()), "weights": _fingerprint(folder / SPARSIFY_WEIGHTS),
              "cfg": _fingerprint(folder / SPARSIFY_CFG)}
    out = run_dir(folder, root)
    if _complete(out, source):
        return out

    try:
        with safe_open(str(folder / SPARSIFY_WEIGHTS), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError: truncated or another format
        raise SaexError(f"{folder / SPARSIFY_WEIGHTS} is truncated or not a safetensors file ({e})",
                        "copy the sparsify SAE again") from None
    if "W_skip" in tensors:
        raise SaexError(f"{where} has a skip connection (W_skip), which the SAELens TopK format cannot hold",
                        "give a sparse coder trained without skip connections")
    d_in, k = cfg["d_in"], cfg["k"]
    d_sae = cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor") or 0)
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if name not in tensors:
            raise SaexError(f"{folder / SPARSIFY_WEIGHTS} holds no {name} ({', '.join(sorted(tensors))} found)",
                            "give a sparse coder saved with its decoder by sparsify's save_to_disk")
        if tuple(tensors[name].shape) != shape:
            raise SaexError(f"{folder / SPARSIFY_WEIGHTS}: {name} has shape {tuple(tensors[name].shape)}, cfg.json "
                            f"(d_in {d_in}, {d_sae} latents) implies {shape}",
                            "the weights and the config belong to different sparse coders")
    if not 1 <= k <= d_sae:
        raise SaexError(f"{where} has k = {k} with {d_sae} latents", "the sparsify config is damaged")

    import sae_lens
    import torch
    from sae_lens.saes.sae import SAEMetadata

    model = run_cfg.get("model") if isinstance(run_cfg.get("model"), str) else None
    meta = SAEMetadata(model_name=model, model_class_name="AutoModelForCausalLM", hook_name=hook_name,
                       hf_hook_name=None, hook_head_index=None, model_from_pretrained_kwargs={},
                       sparsify_hookpoint=hp, converted_by="sae-explorer")
    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu",
                                                  apply_b_dec_to_input=True, normalize_activations="none",
                                                  metadata=meta))
    with torch.no_grad():
        sae.W_enc.copy_(tensors["encoder.weight"].float().T)
        sae.b_enc.copy_(tensors["encoder.bias"].float())
        sae.W_dec.copy_(tensors["W_dec"].float())
        sae.b_dec.copy_(tensors["b_dec"].float())
    if not all(torch.isfinite(p).all() for p in sae.parameters()):
        raise SaexError(f"{where} has NaN/inf weights", "the sparse coder diverged: train it again")

    model_rec = {"spec": model}
    if model is None:
        model_rec["note"] = (f"no run config.json naming the model beside {folder}: pass --model "
                             "(or set model.spec here)")
    record = {"sparsify": {"source": source, "hookpoint": hp, "run_config": str(run_cfg_path) if run_cfg_path else None,
                           "cfg": cfg, "dtype": str(tensors["W_dec"].dtype).removeprefix("torch.")},
              "model": model_rec, "hook": {"name": hook_name, "layer": layer, "sparsify_name": hp},
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_run_folder(out, sae, record)
    return out
