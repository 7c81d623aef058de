"""The settings every analysis that runs a model shares: which model, on which device, with progress shown.

`LookaheadConfig`, `DepthConfig`, `FindConfig`, `EvalConfig` and `IndexConfig` extend `ModelOptions`, so the
three mean the same everywhere; a config that defaults the model differently redeclares `model` with its own
docstring. (Labels run on the CPU whatever the device, so `LabelConfig` keeps its own model and progress.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class ModelOptions:
    model: str | None = None
    """Model; default: the one the SAE was trained on."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    progress: bool = True
    """Show progress bars."""
