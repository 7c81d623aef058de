"""Training configuration: one dataclass is the TOML file, the CLI flags and the docs."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sae.errors import SaexError

ARCHITECTURES = ("topk",)


@dataclass
class TrainConfig:
    """Train a sparse autoencoder on an activation store."""

    store: str = "checkpoints/demo/acts-train"
    """Activation store to train on (made by `saex harvest`)."""
    out: str = "checkpoints/demo/sae"
    """Run folder: SAELens-format weights and config, sparsity, the training config and a metrics log."""
    architecture: str = "topk"
    """SAE architecture: topk (the fast path)."""
    d_sae: int = 4608
    """Number of latents."""
    k: int = 32
    """Active latents per vector (TopK)."""
    batch_size: int = 4096
    """Vectors per optimizer step."""
    epochs: float = 1.0
    """Passes over the store's usable vectors."""
    lr: float = 4e-4
    """Peak Adam learning rate."""
    lr_end: float = 4e-5
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    aux_k: int = 0
    """Dead latents used by the AuxK loss; 0 = d_in / 2."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss."""
    dead_after: int = 500_000
    """A latent that has not fired in this many training vectors counts as dead."""
    normalize: str = "expected_average_only_in"
    """Input scaling: expected_average_only_in (mean norm sqrt(d_in), as sae-lens) or none."""
    autocast: bool = True
    """Run the encoder matmul in bf16 (fp32 master weights)."""
    shards_in_memory: int = 4
    """Store shards mixed together in RAM for shuffling."""
    seed: int = 0
    """Seed for initialisation and data order."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    log_every: int = 20
    """Steps between metric log lines."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise SaexError(f"unknown architecture {self.architecture!r}", f"use one of {', '.join(ARCHITECTURES)}")
        for name in ("d_sae", "k", "batch_size", "shards_in_memory", "log_every", "dead_after"):
            if int(getattr(self, name)) < 1:
                raise SaexError(f"{name} must be at least 1, got {getattr(self, name)}", f"set {name} to a positive number")
        if self.k > self.d_sae:
            raise SaexError(f"k ({self.k}) is larger than d_sae ({self.d_sae})", "use k < d_sae")
        if self.epochs <= 0:
            raise SaexError(f"epochs must be positive, got {self.epochs}", "e.g. epochs = 1")
        if not 0 < self.lr_end <= self.lr:
            raise SaexError(f"need 0 < lr_end <= lr, got lr {self.lr}, lr_end {self.lr_end}", "e.g. lr = 4e-4, lr_end = 4e-5")
        if self.normalize not in ("expected_average_only_in", "none"):
            raise SaexError(f"unknown normalize {self.normalize!r}", "use expected_average_only_in or none")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a TOML config; unknown keys are an error that names them."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SaexError(f"config file {path} does not exist", "give the path of a TOML config, e.g. training/configs/default.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise SaexError(f"{path} is not valid TOML: {e}", "fix the syntax (see training/configs/default.toml)") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SaexError(f"unknown key(s) in {path}: {', '.join(unknown)}", f"valid keys: {', '.join(sorted(known))}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**data)
