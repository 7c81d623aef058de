"""Load an SAE saved in SAELens's on-disk format, whatever its architecture.

A run folder holds `cfg.json` + `sae_weights.safetensors` (and, when trained here, a
`run.json` naming the activation store, model and hook). `resolve_run` also takes SAEs from
elsewhere and turns them into such a folder first: `release/sae_id` of sae-lens's pretrained
directory (sae.runs.pretrained) and sparsify hookpoint folders (sae.runs.sparsify).
sae-lens's own classes do the encoding and decoding, so every architecture it knows
behaves exactly as in sae-lens; what this module adds is checking the files first, so a
bad folder gives one sentence naming the problem instead of a stack trace from deep
inside sae-lens, plus the identity an SAE is known by elsewhere (hook, model, content hash).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sae.errors import SaexError
from sae.fsutil import sha256_file
from sae.runs import pretrained, sparsify
from sae.runs.files import CFG_FILE, RUN_FILE, WEIGHTS_FILE

# Architectures whose encode/decode map "batch d_in" to "batch d_sae" and back, so
# that decode(encode(x)) reconstructs x (BatchTopK and Matryoshka are saved for
# inference as jumprelu).
ARCHITECTURES = ("topk", "jumprelu", "standard", "gated", "abstopk", "matching_pursuit")
_TRAINING_ONLY = {"batchtopk", "matryoshka_batchtopk"}
_NOT_AN_SAE = {"transcoder", "skip_transcoder", "jumprelu_transcoder", "temporal"}


@dataclass
class LoadedSAE:
    """An SAE in raw-activation space: `encode` "batch d_in" -> "batch d_sae" (dense),
    `decode` back. Backed by the sae-lens module in `.sae` (fp32)."""

    sae: torch.nn.Module
    path: Path
    architecture: str
    d_in: int
    d_sae: int
    hook_name: str | None  # "blocks.L.hook_resid_post", as in cfg.json's metadata
    module_path: str | None  # the HF module of that hook ("model.layers.L"), when recorded
    model_spec: str | None  # the model it was trained on, when recorded
    model_weights_sha256: str | None
    content_hash: str  # sha256 of sae_weights.safetensors: annotations key on it
    cfg: dict = field(repr=False, default_factory=dict)
    run: dict | None = field(repr=False, default=None)

    @property
    def device(self) -> torch.device:
        return self.sae.W_dec.device

    def to(self, device: str | torch.device) -> LoadedSAE:
        self.sae.to(device)
        return self

    def _check(self, x: torch.Tensor, width: int, what: str) -> None:
        if x.shape[-1] != width:
            raise SaexError(f"{what} has last dimension {x.shape[-1]}, the SAE in {self.path} expects {width}",
                            "use activations from the model and hook point the SAE was trained on")

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """ "... d_in" -> "... d_sae" dense activations, fp32, on the SAE's device."""
        self._check(x, self.d_in, "the input")
        acts = self.sae.encode(x.to(self.device, torch.float32))
        return acts.to_dense() if acts.is_sparse else acts

    @torch.no_grad()
    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """ "... d_sae" -> "... d_in" reconstruction."""
        self._check(acts, self.d_sae, "the latent activations")
        return self.sae.decode(acts.to(self.device, torch.float32))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def describe(self) -> dict:
        return {"path": str(self.path), "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
                "hook_name": self.hook_name, "model_spec": self.model_spec,
                "model_weights_sha256": self.model_weights_sha256, "content_hash": self.content_hash}


def _fix(path: Path) -> str:
    return (f"give a run folder made by `saex train` (or any folder sae-lens saved, a sae-lens release/sae_id, "
            f"or a sparsify hookpoint folder), not {path}")


def read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SaexError(f"{path} does not exist", f"the {what} is missing: train the SAE again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SaexError(f"{path} is not readable JSON ({e})", f"the {what} is damaged: train the SAE again") from None
    if not isinstance(doc, dict):
        raise SaexError(f"{path} does not hold a JSON object", f"the {what} is damaged: train the SAE again")
    return doc


def _check_folder(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """cfg.json and the tensor shapes in the weights header, or a SaexError."""
    from safetensors import safe_open

    if not path.exists():
        raise SaexError(f"the SAE folder {path} does not exist", _fix(path))
    if not path.is_dir():
        raise SaexError(f"{path} is a file, not an SAE folder", _fix(path))
    missing = [n for n in (CFG_FILE, WEIGHTS_FILE) if not (path / n).is_file()]
    if missing:
        raise SaexError(f"{path} holds no complete SAE: {' and '.join(missing)} missing",
                        "an unfinished training run writes cfg.json last; train again or " + _fix(path))
    cfg = read_json(path / CFG_FILE, "SAE config")
    arch = cfg.get("architecture")
    if arch in _TRAINING_ONLY:
        raise SaexError(f"{path} holds a {arch} training config, not an inference SAE",
                        "save it with sae-lens's save_inference_model (BatchTopK and Matryoshka become jumprelu)")
    if arch in _NOT_AN_SAE:
        raise SaexError(f"{path} holds a {arch}, which does not reconstruct its input", "give an SAE")
    if arch not in ARCHITECTURES:
        raise SaexError(f"{path} holds an SAE of unknown architecture {arch!r}",
                        f"supported: {', '.join(ARCHITECTURES)}")
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise SaexError(f"{path / CFG_FILE} has no valid {key}", "the config is damaged: train the SAE again")
    try:
        with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # SafetensorError: truncated, empty, or another format
        raise SaexError(f"{path / WEIGHTS_FILE} is truncated or not a safetensors file ({e})",
                        "the weights are damaged: copy or train the SAE again") from None
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,), "b_enc": (d_sae,),
                "threshold": (d_sae,), "b_gate": (d_sae,), "b_mag": (d_sae,), "r_mag": (d_sae,)}
    for name, shape in shapes.items():
        if name in expected and shape != expected[name]:
            raise SaexError(f"{path / WEIGHTS_FILE}: {name} has shape {shape}, but cfg.json (d_in {d_in}, "
                            f"d_sae {d_sae}) implies {expected[name]}",
                            "the weights and the config belong to different SAEs: train it again")
    if "W_dec" not in shapes:
        raise SaexError(f"{path / WEIGHTS_FILE} holds no W_dec", "the weights are damaged: train the SAE again")
    return cfg, shapes


def resolve_run(spec: str | Path, hookpoint: str | None = None) -> Path:
    """The run folder (SAELens format) that `spec` names, written first when it names an SAE
    from elsewhere:

    - a folder holding cfg.json + sae_weights.safetensors: itself;
    - a sparsify hookpoint folder (cfg.json without `architecture` + sae.safetensors), or a
      sparsify run folder with `hookpoint` (e.g. "layers.6"): the converted TopK SAE under
      checkpoints/sparsify/ (sae.runs.sparsify);
    - `release/sae_id` of sae-lens's pretrained_saes.yaml (not an existing path): the SAE
      sae-lens's from_pretrained gives, under checkpoints/pretrained/ (sae.runs.pretrained).

    Anything else comes back unchanged, for load_sae to say what is wrong with it. Commands
    write their outputs (eval.json, index/, lookahead/) into the folder this returns."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if hookpoint is not None or sparsify.is_hookpoint_folder(path) or sparsify.is_sparsify_run(path):
            return sparsify.convert(path, hookpoint)  # a run folder of several: says to pick one
        return path
    if hookpoint is not None:
        raise SaexError(f"hookpoint {hookpoint!r} given, but {path} is not a sparsify run folder",
                        "give the sparsify run folder holding that hookpoint, or leave the hookpoint out")
    release_id = pretrained.parse_spec(spec)
    if release_id is not None:
        return pretrained.materialize(*release_id, architectures=ARCHITECTURES)
    return path


def load_sae(path: str | Path, device: str | torch.device = "cpu", hookpoint: str | None = None) -> LoadedSAE:
    """Load an SAE in fp32 on `device`: any SAELens-format folder (see ARCHITECTURES), a
    sae-lens `release/sae_id`, or a sparsify hookpoint folder (or run folder + `hookpoint`);
    see `resolve_run`. `.path` is the run folder it was loaded from."""
    from sae_lens import SAE

    from sae.data.models import resolve_device

    path = resolve_run(path, hookpoint)
    cfg, _ = _check_folder(path)
    dev = resolve_device(device)
    try:
        with warnings.catch_warnings():  # "load the model with from_pretrained_no_processing": our runs say so
            warnings.filterwarnings("ignore", message=".*model_from_pretrained_kwargs")
            sae = SAE.load_from_disk(str(path), device=str(dev), dtype="float32")
    except Exception as e:  # sae-lens raises ValueError, KeyError, RuntimeError ... for bad folders
        raise SaexError(f"sae-lens could not load the SAE in {path} ({type(e).__name__}: {e})",
                        "the folder is damaged or was written by an incompatible sae-lens: train it again") from None
    sae.eval().requires_grad_(False)
    if not all(torch.isfinite(p).all() for p in sae.parameters()):
        raise SaexError(f"the SAE in {path} has NaN/inf weights", "the training diverged: train it again")
    run = read_json(path / RUN_FILE, "run record") if (path / RUN_FILE).exists() else None
    meta = cfg.get("metadata") or {}
    run_model = (run or {}).get("model") or {}
    run_hook = (run or {}).get("hook") or {}
    # run.json wins over cfg.json's metadata: for SAEs from elsewhere it holds the names
    # mapped for this project (an HF model id, resid_pre of block L read as resid_post of L-1)
    return LoadedSAE(
        sae=sae, path=path, architecture=cfg["architecture"], d_in=cfg["d_in"], d_sae=cfg["d_sae"],
        hook_name=run_hook.get("name") or meta.get("hook_name"),
        module_path=run_hook.get("module_path") or (None if run_hook.get("name") else meta.get("hf_hook_name")),
        model_spec=run_model["spec"] if "spec" in run_model else meta.get("model_name"),
        model_weights_sha256=run_model.get("weights_sha256") or meta.get("model_weights_sha256"),
        content_hash=sha256_file(path / WEIGHTS_FILE), cfg=cfg, run=run,
    )


def check_sae_fits(sae: LoadedSAE, lm) -> None:
    """One clear error when `sae` was not made for the loaded model `lm`: other weights, or another width."""
    if sae.model_weights_sha256 and lm.weights_sha256 != sae.model_weights_sha256:
        raise SaexError(f"the SAE in {sae.path} was trained on model weights {sae.model_weights_sha256[:12]}..., "
                        f"{lm.spec} has {lm.weights_sha256[:12]}...", "pass --model with the SAE's model, "
                        "or leave --model out")
    if sae.d_in != lm.d_model:
        raise SaexError(f"the SAE in {sae.path} reads {sae.d_in}-dimensional vectors, {lm.spec} has {lm.d_model}",
                        "use the model the SAE was trained on")


def load_model_and_sae(run: str | Path, model: str | None = None, device: str | torch.device = "auto",
                       lm=None) -> tuple:
    """The one loader of an SAE with its model: the SAE of `run` and the model it was trained on (or `model`,
    or the already loaded `lm`), checked to match (`check_sae_fits`). Returns (lm, sae)."""
    from sae.data.models import load_model, resolve_device

    dev = resolve_device(device)
    sae = load_sae(run, device=dev)
    if lm is None:
        spec = model or sae.model_spec
        if not spec:
            note = ((sae.run or {}).get("model") or {}).get("note")
            raise SaexError(f"the SAE in {run} does not record its model" + (f" ({note})" if note else ""),
                            f"pass --model, or set model.spec in {sae.path / RUN_FILE} to the model's HF id or folder")
        lm = load_model(spec, device=dev)
    check_sae_fits(sae, lm)
    return lm, sae
