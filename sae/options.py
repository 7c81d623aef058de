"""The settings every analysis that runs a model shares: which model, on which device, with progress shown.

`LookaheadConfig`, `DepthConfig`, `FindConfig`, `EvalConfig` and `IndexConfig` extend `ModelOptions`, so the
three mean the same everywhere; a config that defaults the model differently redeclares `model` with its own
docstring. (Labels run on the CPU whatever the device, so `LabelConfig` keeps its own model and progress.)

What every config declares on its fields rather than in lists of names: a lower bound (`at_least`),
whether the field changes the output (`outside_key`; `key_settings` is the reuse key derived from it),
and its choices (a `Literal` type). `check_fields` enforces bounds and choices in one place.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields


def at_least(low: int, default: int, *, in_key: bool = True, **kw):
    """A config field whose value must be `low` or more: `check_fields` enforces it and the
    command line's help states it, so the bound is written once, on the field. in_key=False:
    see `outside_key`."""
    return field(default=default, metadata={"at_least": low, "in_key": in_key}, **kw)


def outside_key(default, **kw):
    """A config field that does not change what the analysis computes (where it writes, how
    fast, whether it shows progress or recomputes): `key_settings` leaves it out, so a stored
    result made with other such settings is still reused."""
    return field(default=default, metadata={"in_key": False}, **kw)


def key_settings(cfg) -> dict:
    """The settings that change a config's output, in field order: every field not declared
    with `outside_key` (or in_key=False). What a reusable result must have been made with."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.metadata.get("in_key", True)}


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


@dataclass(kw_only=True)
class ModelOptions:
    model: str | None = None
    """Model; default: the one the SAE was trained on."""
    device: str = outside_key("auto")
    """auto, cpu, cuda or cuda:N."""
    progress: bool = outside_key(True)
    """Show progress bars."""
