"""Build argparse flags from a config dataclass, so the dataclass (its fields, defaults
and the docstring under each field) is the single source of flags, help and docs."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass (a subclass's own wins over its bases')."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _own_fields_first(cls) -> list:
    """The config's own fields in their order, then those it inherits (model, device, progress)."""
    own = cls.__dict__.get("__annotations__", {})
    fields = dataclasses.fields(cls)
    return [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]


def _parse_bool(s: str) -> bool:
    if s.lower() in {"1", "true", "yes", "on"}:
        return True
    if s.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {s!r}")


def _optional(conv):
    def parse(s: str):
        return None if s.lower() in {"none", ""} else conv(s)
    return parse


def _comma_list(conv):
    def parse(s: str):
        return [conv(v) for v in s.split(",") if v.strip()]
    parse.__name__ = f"comma-separated {conv.__name__} list"
    return parse


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                        positional: tuple[str, ...] = (), defaults_to_none: bool = False) -> None:
    """One flag per field. With `defaults_to_none`, unset flags parse as None (so a
    config file's values are not overridden by flag defaults); help still shows the default."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in _own_fields_first(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        if choices:
            hint = str
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        optional = type(None) in args
        if choices:
            conv = str  # argparse checks the value against `choices`
        elif typing.get_origin(hint) is list:
            conv = _comma_list(args[0] if args else str)  # e.g. --matryoshka-widths 576,1152,4608
        elif str in args:
            conv = str  # e.g. a layer given as a number or a hook name
        elif base is bool:
            conv = _parse_bool
        elif base in (int, float):
            conv = base
        else:
            conv = str
        if optional:
            conv = _optional(conv)
        default = f.default if f.default is not dataclasses.MISSING else None
        low = f.metadata.get("at_least")
        facts = ([f"at least {low}"] if low is not None else []) + \
            ([f"default: {default}"] if default not in (None, "") else [])
        help_text = docs.get(f.name, "") + (f" ({'; '.join(facts)})" if facts else "")
        help_text = help_text.replace("%", "%%")  # argparse reads % as a format; a docstring means a percent
        if f.name in positional:
            parser.add_argument(f.name, type=conv, help=help_text, choices=choices)
        else:
            metavar = "|".join(c for c in choices if c) if choices else "yes|no" if base is bool else f.name.upper()
            # a yes/no flag given alone means yes (`saex demo --full`)
            alone = {"nargs": "?", "const": True} if base is bool else {}
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=conv, choices=choices,
                                default=None if defaults_to_none else default, help=help_text, metavar=metavar,
                                **alone)


def dataclass_from_args(cls, ns: argparse.Namespace, **overrides):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in vars(ns).items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)
