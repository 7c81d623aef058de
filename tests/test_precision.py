"""sae.precision: `auto` picks the path its own probe measured faster, the switch forces the
"no fast bf16" path, and every command honours it (harvest reader, training, demo plan)."""

from __future__ import annotations

import json

import pytest
import torch

from sae import precision
from sae.data.forward import ResidualReader


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("SAEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    precision._decide.cache_clear()
    yield
    precision._decide.cache_clear()


@pytest.mark.parametrize("fp32,bf16,fast", [(100.0, 400.0, True), (113.0, 1.2, False), (100.0, 110.0, False),
                                            (100.0, 121.0, True)])
def test_auto_never_picks_the_path_its_probe_measured_slower(monkeypatch, fp32, bf16, fast):
    rates = {torch.float32: fp32, torch.bfloat16: bf16}
    monkeypatch.setattr(precision, "_gflops", lambda dtype, seconds=0.08: rates[dtype])
    decision = precision.speed("cpu", announce=False)
    assert decision.fast_bf16 is fast
    assert (decision.fp32_gflops, decision.bf16_gflops) == (fp32, bf16)
    assert precision.resolve("auto", "cpu")[0] == ("bf16" if fast else "fp32")
    assert precision.resolve("fp32", "cpu") == ("fp32", None)  # an explicit choice is kept


def test_the_probe_is_cached_per_machine(monkeypatch, tmp_path):
    calls = []

    def probe():
        calls.append(1)
        return precision.Speed(False, "slow bf16", 100.0, 1.0)

    monkeypatch.setattr(precision, "measure_cpu", probe)
    assert precision.speed("cpu", announce=False).fast_bf16 is False
    precision._decide.cache_clear()  # a new process: only the file remains
    assert precision.speed("cpu", announce=False).reason == "slow bf16"
    assert calls == [1]
    cached = json.loads((tmp_path / "cache" / "precision.json").read_text())
    assert [v["fast_bf16"] for v in cached.values()] == [False]


def test_the_real_probe_is_consistent():
    decision = precision.measure_cpu()
    assert decision.fp32_gflops > 0 and decision.bf16_gflops > 0
    assert decision.fast_bf16 == (decision.bf16_gflops >= precision.MIN_SPEEDUP * decision.fp32_gflops)


@pytest.mark.parametrize("tick,want_reps", [(0.03, 3), (0.0, 50), (1.0, 1)])
def test_the_probe_is_short_it_stops_after_its_time_or_50_repetitions(monkeypatch, tick, want_reps):
    """A fake clock that advances `tick` seconds per timed product: the probe of one dtype runs
    until 0.08 s have passed (0.03 a product: 3), at most 50 products (a clock that never moves),
    and a slow product (1 s) ends it after one. The warm-up is one small product more."""
    now = [0.0]
    calls = []

    def mm(a, b, out=None):
        calls.append(a.shape[0])
        now[0] += tick
        return out

    monkeypatch.setattr(precision.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(precision.torch, "mm", mm)
    precision._gflops(torch.float32)
    full = [c for c in calls if c == precision.PROBE_SHAPE[0]]
    assert len(full) == want_reps and len(calls) == want_reps + 1


@pytest.mark.parametrize("value,fast", [("0", False), ("no", False), ("1", True), ("yes", True)])
def test_the_switch_forces_the_decision_without_a_probe(monkeypatch, value, fast):
    monkeypatch.setenv(precision.ENV_VAR, value)
    monkeypatch.setattr(precision, "measure_cpu", lambda: pytest.fail("probed despite the switch"))
    decision = precision.speed("cpu", announce=False)
    assert decision.fast_bf16 is fast and precision.ENV_VAR in decision.reason


def test_reader_auto_uses_fp32_without_fast_bf16(monkeypatch, tiny_lm):
    monkeypatch.setenv(precision.ENV_VAR, "0")
    reader = ResidualReader(tiny_lm, tiny_lm.hook_point(1), precision="auto")
    assert reader.precision == "fp32" and reader.bf16_error is None
    assert precision.ENV_VAR in reader.precision_reason
    monkeypatch.setenv(precision.ENV_VAR, "1")
    reader = ResidualReader(tiny_lm, tiny_lm.hook_point(1), precision="auto")
    assert reader.bf16_error is not None  # bf16 is fast: its accuracy decides
    assert reader.precision == ("bf16" if reader.bf16_error <= 0.02 else "fp32")


def test_training_autocast_follows_the_decision(monkeypatch):
    from training.config import TrainConfig

    monkeypatch.setenv(precision.ENV_VAR, "0")
    assert TrainConfig().bf16("cpu")[0] is False
    monkeypatch.setenv(precision.ENV_VAR, "1")
    assert TrainConfig().bf16("cpu")[0] is True
    assert TrainConfig(autocast="no").bf16("cpu") == (False, "autocast = no")
    assert TrainConfig(autocast=True).autocast == "yes"  # TOML's true


@pytest.mark.parametrize("line,needle", [('autocast = "flase"', "autocast"),
                                         ('progress = "no"', "must be true or false"),
                                         ("k = 3.5", "k in"), ('architecture = "topkk"', "architecture")])
def test_config_values_of_the_wrong_type_are_refused(tmp_path, line, needle):
    from sae.errors import SaexError
    from training.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(line + "\n")
    with pytest.raises(SaexError, match=needle):
        load_config(path)


def test_a_misspelt_boolean_flag_is_one_clear_error(capsys):
    from saex.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--lookahead", "flase"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'flase'" in err and "fix:" in err
