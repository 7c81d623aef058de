"""Training configuration: one dataclass is the TOML file, the CLI flags and the docs."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from sae.errors import SaexError
from sae.options import at_least, check_fields

Architecture = Literal["topk", "batchtopk", "standard", "gated", "jumprelu", "matryoshka_batchtopk"]
ARCHITECTURES = get_args(Architecture)
# Architectures our own fast loop (training/topk_loop.py) trains; sae-lens's SAETrainer trains them all.
FAST_ARCHITECTURES = ("topk", "batchtopk")
Backend = Literal["auto", "ours", "saelens"]
BACKENDS = get_args(Backend)


@dataclass
class TrainConfig:
    """Train a sparse autoencoder on an activation store."""

    store: str = "checkpoints/demo/acts-train"
    """Activation store to train on (made by `saex harvest`)."""
    out: str = "checkpoints/demo/sae"
    """Run folder: SAELens-format weights and config, sparsity, the training config and a metrics log."""
    architecture: Architecture = "topk"
    """SAE architecture: topk, batchtopk, standard (ReLU + L1), gated, jumprelu or matryoshka_batchtopk."""
    backend: Backend = "auto"
    """Trainer: auto (our fast loop for topk and batchtopk, sae-lens's SAETrainer for the rest), ours or saelens."""
    d_sae: int = at_least(1, 4608)
    """Number of latents."""
    k: int = at_least(1, 32)
    """Active latents per vector (TopK; BatchTopK: on average over each batch)."""
    batch_size: int = at_least(1, 4096)
    """Vectors per optimizer step."""
    epochs: float = 1.0
    """Passes over the store's usable vectors."""
    lr: float = 2e-3
    """Peak Adam learning rate."""
    lr_end: float = 2e-4
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    aux_k: int = 0
    """Dead latents used by the AuxK loss; 0 = d_in / 2."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss."""
    dead_after: int = at_least(1, 500_000)
    """A latent that has not fired in this many training vectors counts as dead
    (sae-lens backend: rounded up to whole steps, its dead_feature_window)."""
    aux_loss_coefficient: float = 1.0
    """sae-lens backend, topk/batchtopk/matryoshka_batchtopk: weight of sae-lens's AuxK loss
    (not variance-normalised, unlike aux_coef)."""
    l1_coefficient: float = 5.0
    """standard, gated: weight of the L1 penalty
    (activations times decoder-row norms, on inputs of mean norm sqrt(d_in))."""
    l1_warm_up_steps: int = 0
    """standard, gated: steps over which the L1 weight ramps up linearly from 0."""
    l0_coefficient: float = 1.0
    """jumprelu: weight of the L0 sparsity loss."""
    l0_warm_up_steps: int = 0
    """jumprelu: steps over which the L0 weight ramps up linearly from 0."""
    jumprelu_init_threshold: float = 0.01
    """jumprelu: initial threshold of every latent."""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: width of the straight-through estimator's window around the threshold."""
    jumprelu_sparsity_loss_mode: Literal["step", "tanh"] = "step"
    """jumprelu: step (DeepMind: L0 through a straight-through estimator) or tanh (Anthropic)."""
    pre_act_loss_coefficient: float = 0.0
    """jumprelu: weight of Anthropic's pre-activation loss that pulls dead latents up to their threshold;
    0 = off (Anthropic: 3e-6)."""
    matryoshka_widths: list[int] = field(default_factory=list)
    """matryoshka_batchtopk: nested dictionary sizes, strictly increasing, the last equal to d_sae
    (on the command line: 576,1152,4608); empty = d_sae/8, d_sae/4, d_sae/2, d_sae."""
    normalize: Literal["expected_average_only_in", "none"] = "expected_average_only_in"
    """Input scaling: expected_average_only_in (mean norm sqrt(d_in), as sae-lens) or none."""
    autocast: Literal["auto", "yes", "no"] = "auto"
    """Run the encoder matmul in bf16 (fp32 master weights): auto (when bf16 is fast on this device,
    as measured by sae.precision), yes or no."""
    shards_in_memory: int = at_least(1, 4)
    """Store shards mixed together in RAM for shuffling."""
    seed: int = 0
    """Seed for initialisation and data order."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    log_every: int = at_least(1, 20)
    """Steps between metric log lines."""
    checkpoint_every: int = 100
    """Steps between resumable checkpoints (RUN/checkpoint/); 0 = none.
    A rerun of an interrupted run resumes from the last one."""
    batchtopk_threshold_lr: float = 0.01
    """batchtopk: rate of the running mean that sets the inference threshold from the smallest kept activation."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if isinstance(self.autocast, bool):  # TOML's true/false
            self.autocast = "yes" if self.autocast else "no"
        if self.checkpoint_every < 0:
            raise SaexError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
                            "set it to 0 (no checkpoints) or a number of steps")
        check_fields(self)
        if self.k > self.d_sae:
            raise SaexError(f"k ({self.k}) is larger than d_sae ({self.d_sae})", "use k < d_sae")
        if self.epochs <= 0:
            raise SaexError(f"epochs must be positive, got {self.epochs}", "e.g. epochs = 1")
        if not 0 < self.lr_end <= self.lr:
            raise SaexError(f"need 0 < lr_end <= lr, got lr {self.lr}, lr_end {self.lr_end}",
                            "e.g. lr = 2e-3, lr_end = 2e-4")
        self._check_saelens_fields()

    def _check_saelens_fields(self):
        if self.backend == "ours" and self.architecture not in FAST_ARCHITECTURES:
            raise SaexError(f"backend 'ours' does not train {self.architecture} SAEs",
                            f"use backend = \"auto\" or \"saelens\" (ours trains {', '.join(FAST_ARCHITECTURES)})")
        if self.trainer() == "saelens" and self.aux_k != 0:
            raise SaexError(f"aux_k ({self.aux_k}) is not adjustable with the sae-lens backend (it uses d_in / 2)",
                            "set aux_k = 0")
        for name in ("aux_loss_coefficient", "l1_coefficient", "l0_coefficient", "l1_warm_up_steps", "l0_warm_up_steps",
                     "jumprelu_init_threshold", "pre_act_loss_coefficient"):
            if not getattr(self, name) >= 0:
                raise SaexError(f"{name} must be >= 0, got {getattr(self, name)}",
                                f"set {name} to zero or a positive number")
        if not self.jumprelu_bandwidth > 0:
            raise SaexError(f"jumprelu_bandwidth must be positive, got {self.jumprelu_bandwidth}",
                            "e.g. jumprelu_bandwidth = 0.05")
        widths = self.matryoshka_widths
        if isinstance(widths, str):  # from the command line
            try:
                widths = [int(w) for w in widths.replace(" ", "").split(",") if w]
            except ValueError:
                raise SaexError(f"matryoshka_widths must be integers, got {self.matryoshka_widths!r}",
                                "e.g. matryoshka_widths = 576,1152,2304,4608") from None
        widths = list(widths)
        if widths and (any(not isinstance(w, int) or w < 1 for w in widths)
                       or any(a >= b for a, b in zip(widths, widths[1:])) or widths[-1] != self.d_sae):
            raise SaexError(f"matryoshka_widths must be strictly increasing positive integers ending at d_sae "
                            f"({self.d_sae}), got {widths}",
                            f"e.g. matryoshka_widths = [{self.d_sae // 4}, {self.d_sae // 2}, {self.d_sae}]")
        self.matryoshka_widths = widths

    def trainer(self) -> str:
        """Which loop trains this config: "ours" (training/topk_loop.py) or "saelens" (training/saelens_backend.py)."""
        if self.backend == "ours" or (self.backend == "auto" and self.architecture in FAST_ARCHITECTURES):
            return "ours"
        return "saelens"

    def bf16(self, device) -> tuple[bool, str]:
        """Whether the encoder matmul runs in bf16 on `device`, and why."""
        if self.autocast != "auto":
            return self.autocast == "yes", f"autocast = {self.autocast}"
        from sae.precision import speed

        decision = speed(device)
        return decision.fast_bf16, decision.reason

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a TOML config; unknown keys are an error that names them."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SaexError(f"config file {path} does not exist",
                        "give the path of a TOML config, e.g. training/configs/default.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise SaexError(f"{path} is not valid TOML: {e}",
                        "fix the syntax (see training/configs/default.toml)") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SaexError(f"unknown key(s) in {path}: {', '.join(unknown)}", f"valid keys: {', '.join(sorted(known))}")
    _check_types(data, path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**data)


def _check_types(data: dict, path: Path) -> None:
    """A TOML value of the wrong type is an error, not a silent truthiness ("no" is not false)."""
    hints = get_type_hints(TrainConfig)
    for key, value in data.items():
        hint = hints[key]
        if get_origin(hint) is Literal:
            ok = value in get_args(hint) or (key == "autocast" and isinstance(value, bool))
            want = " or ".join(repr(a) for a in get_args(hint))
        elif hint is bool:
            ok, want = isinstance(value, bool), "true or false"
        elif hint is int:
            ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif hint is float:
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif hint is str:
            ok, want = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise SaexError(f"{key} in {path} must be {want}, got {value!r}", f"write e.g. {key} = {_example(hint)}")


def _example(hint) -> str:
    if get_origin(hint) is Literal:
        return repr(get_args(hint)[0]).replace("'", '"')
    return {bool: "true", int: "1", float: "0.5", str: '"..."'}.get(hint, "...")
