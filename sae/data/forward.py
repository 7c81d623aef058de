"""Run a loaded model up to one residual-stream hook point, or on from it.

`ResidualReader` reads the residual stream after block L without computing anything past
it (a truncated copy of the model, compiled when asked); `UpperForward` runs the blocks
after L, the final norm and the unembedding from an edited residual stream.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from sae.data.models import HookPoint, LoadedModel
from sae.errors import SaexError
from sae.precision import speed

# Median relative L2 error per token vector that bf16 autocast may add before we
# fall back to fp32 (measured on SmolLM2 layer 15: 0.66%).
BF16_TOLERANCE = 0.02

class _StopForward(Exception):
    pass


def _stop_at_layer_forward(lm: LoadedModel, hook: HookPoint,
                           layers: Sequence[int] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Generic path: a forward hook on the block stores its output and raises, so no
    block after it runs. Works for any architecture whose blocks we found. With `layers`
    (ascending, the last being hook.layer) it also keeps the outputs of those blocks and
    returns them stacked: "batch pos layer d_model"."""
    block = lm.model.get_submodule(hook.module_path)
    taps = [] if layers is None else [k for k in layers if k != hook.layer]
    box: dict[int, torch.Tensor] = {}

    def tap(k: int, stop: bool):
        def grab(_mod, _inp, out):
            box[k] = out[0] if isinstance(out, tuple) else out
            if stop:
                raise _StopForward
        return grab

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        handles = [lm.layers[k].register_forward_hook(tap(k, False)) for k in taps]
        handles.append(block.register_forward_hook(tap(hook.layer, True)))
        try:
            lm.model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if hook.layer not in box:
            raise RuntimeError(f"block {hook.module_path} did not run")
        if layers is None:
            return box.pop(hook.layer)
        out = torch.stack([box[k] for k in layers], dim=2)
        box.clear()
        return out

    return forward


def _share_capture_hooks(model: torch.nn.Module) -> None:
    """transformers (5.x) records hidden states through hooks it installs once per model object, on its
    blocks. A shallow copy of the model (the truncated forward, the upper blocks) shares those blocks: were
    the copy to install its own there first, the model's later install would add a second set, and its
    `hidden_states` would count the shared blocks twice (seen: a full forward's hidden_states[2] became
    another layer's after a multi-layer harvest). Installing the model's hooks before copying makes the copy
    inherit them (and the flag), so there is one set."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older transformers: no such hooks
        return
    try:
        maybe_install_capturing_hooks(model)
    except Exception:  # a model without recorded outputs: nothing to share
        pass


def _truncated_forward(lm: LoadedModel, hook: HookPoint, linear_dtype: torch.dtype | None = None,
                       layers: Sequence[int] | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Fast path: a shallow copy of the base model that holds only blocks 0..L and no
    final norm, so its `last_hidden_state` is the residual stream after block L. It
    has no Python-level exception in the middle, so torch.compile can fuse it whole.

    With `linear_dtype`, the blocks are copies whose Linear weights are stored in that
    dtype: under autocast this gives the same numbers as casting the fp32 weights on
    every call, without the per-batch cast (norms and the residual stay fp32).
    With `layers`, the hidden states after those blocks, stacked "batch pos layer d_model"
    (the caller checks them against the generic path).
    Returns None when the model's layout is not the familiar one."""
    layers_attr = lm.layers_path.rpartition(".")[2]
    found = lm.final_norm()
    if found is None:
        return None
    base, norm_attr = found
    _share_capture_hooks(base)
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
        if layers is not None:
            hs = trunc(input_ids=input_ids, use_cache=False, output_hidden_states=True).hidden_states
            return torch.stack([hs[k + 1] for k in layers], dim=2)
        out = trunc(input_ids=input_ids, use_cache=False)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    return forward


class ResidualReader:
    """Reads the residual stream after block `hook.layer` for batches of token ids.

    precision: "fp32", "bf16" (autocast: matmuls in bf16, norms and residual adds in
    fp32), or "auto": bf16 when bf16 is fast on the device (`sae.precision`) and a check
    on `calibration_ids` stays within BF16_TOLERANCE (median relative error) of fp32;
    `precision_reason` says why.
    compile: run the forward through torch.compile (about 1.3-1.5x faster on CPU after
    10-40 s of compilation; worth it for large harvests).
    layers: several blocks read in the same forward (ascending, the deepest being
    `hook.layer`); the output is then "batch pos layer d_model".
    """

    def __init__(self, lm: LoadedModel, hook: HookPoint, precision: str = "auto",
                 compile: bool = False, calibration_ids: torch.Tensor | None = None,
                 layers: Sequence[int] | None = None):
        if precision not in {"auto", "bf16", "fp32"}:
            raise SaexError(f"unknown precision {precision!r}", "use auto, bf16 or fp32")
        if layers is not None:
            layers = [int(k) for k in layers]
            if layers != sorted(set(layers)) or layers[-1] != hook.layer:
                raise ValueError(f"layers {layers} must ascend without repeats and end at {hook.layer}")
        self.lm, self.hook, self.layers = lm, hook, layers
        generic = _stop_at_layer_forward(lm, hook, layers)
        fast = _truncated_forward(lm, hook, layers=layers)
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
        self.precision_reason = f"{precision} asked for"
        if precision == "auto":
            decision = speed(lm.device)
            self.precision_reason = decision.reason
            if not decision.fast_bf16:
                precision = "fp32"  # bf16 is emulated here: never faster, so its accuracy is moot
        if precision in ("auto", "bf16"):
            self.bf16_error = self._relative_error(probe, reference)
            if precision == "auto":
                precision = "bf16" if self.bf16_error <= BF16_TOLERANCE else "fp32"
                self.precision_reason += f"; bf16 changes activations by {self.bf16_error:.2%}"
                if precision == "fp32":
                    self.precision_reason += f", above {BF16_TOLERANCE:.0%}"
                    warnings.warn(f"bf16 autocast changes activations by {self.bf16_error:.2%} (median "
                                  f"relative error) on this model, above {BF16_TOLERANCE:.0%}: using fp32")
        self.precision = precision
        if precision == "bf16" and self.path == "truncated":
            self._forward = _truncated_forward(lm, hook, linear_dtype=torch.bfloat16, layers=layers)
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
        """input_ids: "batch pos" -> residual: "batch pos d_model" ("batch pos layer d_model"
        with `layers`), float32, on CPU."""
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
        _share_capture_hooks(base)
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
