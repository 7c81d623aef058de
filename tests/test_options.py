"""The checks every config shares (sae/options.py): bounds declared on the field with
`at_least`, choices read from `Literal` types, one error naming the flag and the fix, and
the bound stated in the command line's help."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass

import pytest

from sae.errors import SaexError
from sae.options import at_least, check_fields, literal_choices


@dataclass
class _Toy:
    draws: int = at_least(20, 100)
    mode: typing.Literal["fast", "exact"] = "fast"
    maybe: typing.Literal["a", "b"] | None = None
    free: int = -5

    def __post_init__(self):
        check_fields(self)


def test_bounds_and_choices_are_read_off_the_fields():
    _Toy()
    _Toy(draws=20, mode="exact", maybe="b")
    with pytest.raises(SaexError, match="draws must be at least 20, got 19") as e:
        _Toy(draws=19)
    assert "--draws 20 or more" in e.value.fix
    with pytest.raises(SaexError, match="unknown mode 'slow'") as e:
        _Toy(mode="slow")
    assert "fast, exact" in e.value.fix and "--mode" in e.value.fix
    with pytest.raises(SaexError, match="unknown maybe 'c'"):
        _Toy(maybe="c")
    assert literal_choices(typing.Literal["x"] | None) == ("x", None) and literal_choices(int) is None


def test_the_help_states_the_bound():
    from saex.flags import add_dataclass_flags

    p = argparse.ArgumentParser()
    add_dataclass_flags(p, _Toy)
    text = " ".join(p.format_help().split())
    assert "(at least 20; default: 100)" in text


REUSED = {"HarvestConfig": {"out": "x"}, "IndexConfig": {"run": "x"}, "LabelConfig": {"run": "x"},
          "FindConfig": {"run": "x", "word": "owl"}, "OrganismConfig": {"out": "x"}, "DepthConfig": {}}


def _configs():
    from sae.data.harvest import HarvestConfig
    from sae.index.config import IndexConfig
    from sae.labels.config import LabelConfig
    from sae.lookahead.article import LookaheadConfig
    from sae.lookahead.depth import DepthConfig
    from sae.lookahead.finder import FindConfig
    from sae.lookahead.organism.config import OrganismConfig
    from sae.runs.evaluate import EvalConfig
    from training.config import TrainConfig

    return [HarvestConfig, IndexConfig, LabelConfig, LookaheadConfig, DepthConfig, FindConfig, OrganismConfig,
            EvalConfig, TrainConfig]


@pytest.mark.parametrize("cls", _configs(), ids=lambda c: c.__name__)
def test_every_declared_bound_is_enforced(cls):
    """Each config refuses one below each declared bound, and every Literal default is a choice."""
    need = {"HarvestConfig": {"out": "x"}, "IndexConfig": {"run": "x"}, "LabelConfig": {"run": "x"},
            "LookaheadConfig": {"run": "x"}, "FindConfig": {"run": "x", "word": "owl"}, "EvalConfig": {"run": "x"},
            "TrainConfig": {"store": "x", "out": "y"}, "OrganismConfig": {"out": "x"}, "DepthConfig": {}}[cls.__name__]
    cls(**need)
    bounded = [f for f in dataclasses.fields(cls) if "at_least" in f.metadata]
    assert bounded
    for f in bounded:
        with pytest.raises(SaexError, match=f"{f.name} must be at least {f.metadata['at_least']}"):
            cls(**need, **{f.name: f.metadata["at_least"] - 1})


@pytest.mark.parametrize("cls", [c for c in _configs() if c.__name__ in REUSED], ids=lambda c: c.__name__)
def test_the_reuse_key_leaves_out_where_and_how_but_not_what(cls):
    """Where a result goes and how it is shown never change the reuse key of a config whose
    results are reused; a seed, which changes the numbers, always does."""
    from sae.options import key_settings

    need = REUSED[cls.__name__]
    base = key_settings(cls(**need))
    assert not {"progress", "force", "device", "out"} & set(base)
    names = {f.name for f in dataclasses.fields(cls)}
    changed = {"seed": 7} if "seed" in names else {"tokens": 999}
    assert key_settings(cls(**need, **changed)) != base
