"""The settings every analysis that runs a model shares: which model, on which device, with progress shown.

`LookaheadConfig`, `DepthConfig`, `FindConfig`, `EvalConfig` and `IndexConfig` extend `ModelOptions`, so the
three mean the same everywhere; a config that defaults the model differently redeclares `model` with its own
docstring. (Labels run on the CPU whatever the device, so `LabelConfig` keeps its own model and progress.)
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields


@dataclass(kw_only=True)
class ModelOptions:
    model: str | None = None
    """Model; default: the one the SAE was trained on."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    progress: bool = True
    """Show progress bars."""


def at_least(low: int, default: int):
    """A config field whose value must be `low` or more: `check_fields` enforces it and the
    command line's help states it, so the bound is written once, on the field."""
    return field(default=default, metadata={"at_least": low})


def literal_choices(hint) -> tuple | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) type allows; None for other types."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg) + ((None,) if type(None) in typing.get_args(hint) else ())
    return None


def check_fields(cfg) -> None:
    """The checks every config shares, read off its fields: a value below its `at_least`
    bound, or outside its `Literal` choices, is one clear error naming the flag and the fix."""
    from sae.errors import SaexError

    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        low = f.metadata.get("at_least")
        if low is not None and int(value) < low:
            raise SaexError(f"{f.name} must be at least {low}, got {value}", f"pass {flag} {low} or more")
        choices = literal_choices(hints[f.name])
        if choices is not None and value not in choices:
            shown = [str(c) for c in choices if c is not None]
            raise SaexError(f"unknown {f.name} {value!r}", f"use one of {', '.join(shown)} ({flag})")
