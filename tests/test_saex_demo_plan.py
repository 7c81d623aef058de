"""`saex demo` sizes itself from the model's speed measured on the machine at hand."""

import json

import pytest

from sae.errors import SaexError
from saex.demo_plan import (
    CONTEXT,
    FLOOR_VECTORS,
    FULL_HELDOUT,
    FULL_TOKENS,
    MAX_EPOCHS,
    MIN_TOKENS,
    TARGET_VECTORS,
    Sizes,
    Speeds,
    estimate,
    fit_sizes,
)

D_SAE = 4608


def _speeds(scale: float, precision: str = "bf16") -> Speeds:
    """A machine `scale` times as fast as the reference one (its measured rates)."""
    return Speeds(precision, "test", 1800 * scale, 700 * scale, 1200 * scale, 157 * scale, 395 * scale)


def test_a_fast_machine_gets_the_full_run():
    sizes, note = fit_sizes(900, _speeds(20), D_SAE, 1.0, {})
    assert (sizes.tokens, sizes.heldout_tokens, sizes.ce_windows, sizes.lookahead) == (FULL_TOKENS, FULL_HELDOUT,
                                                                                        256, "full")
    assert sizes.epochs is None and note == ""


@pytest.mark.parametrize("scale", [0.6, 1.0, 1.5, 3.0])
def test_the_plan_fits_the_budget_and_never_shrinks_on_a_faster_machine(scale):
    budget = 765
    sizes, _ = fit_sizes(budget, _speeds(scale), D_SAE, 1.0, {})
    faster, _ = fit_sizes(budget, _speeds(scale * 1.3), D_SAE, 1.0, {})
    assert estimate(sizes, _speeds(scale), D_SAE, 1.0).total <= budget + 1
    assert sizes.tokens % CONTEXT == 0
    order = ["none", "quick", "full"]
    assert order.index(faster.lookahead) >= order.index(sizes.lookahead)
    if faster.lookahead == sizes.lookahead:  # time the lookahead takes may come from the store
        assert faster.tokens >= sizes.tokens
    if sizes.tokens < FULL_TOKENS:  # a smaller store is trained longer, never below the quality floor
        assert sizes.tokens >= MIN_TOKENS and sizes.epochs <= MAX_EPOCHS
        assert sizes.tokens * sizes.epochs >= FLOOR_VECTORS


def test_the_store_keeps_its_floor_before_the_lookahead_gets_time():
    # slow enough that the lookahead and the quality floor do not both fit: the lookahead goes
    sizes, note = fit_sizes(765, _speeds(0.6, "fp32"), D_SAE, 1.0, {})
    assert sizes.lookahead == "none" and "left for later" in note
    assert sizes.tokens >= MIN_TOKENS and sizes.tokens * sizes.epochs >= FLOOR_VECTORS
    # the time the lookahead would not fit in buys training: more epochs over the smallest store first
    assert sizes.epochs > FLOOR_VECTORS / MIN_TOKENS
    # slower still: even the floor does not fit; the plan keeps it and says how long it will take
    sizes, note = fit_sizes(765, _speeds(0.1, "fp32"), D_SAE, 1.0, {})
    assert (sizes.tokens, sizes.lookahead) == (MIN_TOKENS, "none")
    assert sizes.tokens * sizes.epochs >= FLOOR_VECTORS and "longer than the budget" in note


def test_more_time_buys_epochs_before_tokens():
    plans = [fit_sizes(b, _speeds(1.0), D_SAE, 1.0, {})[0] for b in range(700, 1500, 50)]
    vectors = [p.tokens * (p.epochs or 1.0) for p in plans]
    assert vectors == sorted(vectors) or all(p.lookahead == "full" for p in plans)
    grown = [p for p in plans if p.tokens > MIN_TOKENS and p.tokens < FULL_TOKENS]
    assert grown and all(p.epochs == MAX_EPOCHS or p.tokens * p.epochs >= 0.99 * TARGET_VECTORS for p in grown)


def test_what_the_user_asked_for_is_kept():
    asked = {"tokens": 4096, "heldout_tokens": 512, "ce_windows": 3, "lookahead": "none", "epochs": 5.0}
    sizes, _ = fit_sizes(765, _speeds(1.0), D_SAE, 1.0, asked)
    assert (sizes.tokens, sizes.heldout_tokens, sizes.ce_windows, sizes.lookahead, sizes.epochs) == \
        (4096, 512, 3, "none", 5.0)


def test_estimates_scale_with_the_work():
    sp = _speeds(1.0)
    one = estimate(Sizes(1_000_000, 100_000, 1.0, 100, "none"), sp, D_SAE, 1.0).steps
    two = estimate(Sizes(2_000_000, 200_000, 2.0, 200, "none"), sp, D_SAE, 1.0).steps
    assert two["harvest_train"] == pytest.approx(2 * one["harvest_train"], rel=1e-3)
    assert two["training"] == pytest.approx(4 * one["training"], rel=1e-3)  # twice the tokens, twice the epochs
    assert two["evaluation"] == pytest.approx(2 * one["evaluation"], rel=1e-2)
    assert one["lookahead"] == 0
    slow = estimate(Sizes(1_000_000, 100_000, 1.0, 100, "full"), _speeds(0.5), D_SAE, 1.0).steps
    assert slow["harvest_train"] == pytest.approx(2 * one["harvest_train"], rel=1e-3)
    quick = estimate(Sizes(1_000_000, 100_000, 1.0, 100, "quick"), _speeds(0.5), D_SAE, 1.0).steps
    assert 0 < quick["lookahead"] < slow["lookahead"]


def test_speeds_are_measured_on_the_model(monkeypatch, tiny_lm):
    from sae import precision
    from saex.demo_plan import measure_speeds

    monkeypatch.setenv(precision.ENV_VAR, "0")
    sp = measure_speeds(tiny_lm, None)
    assert sp.precision == "fp32" and sp.upper_eval == sp.upper_fp32
    assert sp.lower > 0 and sp.upper_fp32 > 0 and sp.fp32_gflops > 0 and sp.train_gflops == sp.fp32_gflops


def test_plan_demo_full_and_flags(monkeypatch, tiny_lm):
    from saex.demo import DemoConfig, plan_demo

    slow = _speeds(0.5, "fp32")
    full = plan_demo(DemoConfig(full=True), tiny_lm, speeds=slow)
    assert (full.tokens, full.heldout_tokens, full.ce_windows, full.lookahead, full.lookahead_size) == \
        (FULL_TOKENS, FULL_HELDOUT, 256, True, "full")
    planned = plan_demo(DemoConfig(), tiny_lm, speeds=slow)
    assert planned.tokens < FULL_TOKENS
    assert f"{planned.tokens:,} training tokens" in planned.reason and "--full" in planned.reason
    assert sum(planned.estimate_s.values()) <= 15 * 60
    assert plan_demo(DemoConfig(lookahead="no"), tiny_lm, speeds=_speeds(20)).lookahead is False
    forced = plan_demo(DemoConfig(lookahead="yes"), tiny_lm, speeds=_speeds(0.1, "fp32"))
    assert forced.lookahead and forced.lookahead_size == "quick"


def test_plan_only_prints_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    from saex.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), model=str(tiny_model_dir), device="cpu", plan_only=True))
    assert "plan: " in capsys.readouterr().out
    assert not (tmp_path / "demo").exists()


def test_a_rerun_keeps_the_plan_and_records_step_times(tmp_path, tiny_lm):
    from saex.demo import PLAN_FILE, DemoConfig, _load_or_plan

    cfg = DemoConfig(out_dir=str(tmp_path), tokens=4096, heldout_tokens=512)
    first = _load_or_plan(cfg, tiny_lm, tmp_path, 0.0)
    saved = json.loads((tmp_path / PLAN_FILE).read_text())
    assert saved["tokens"] == 4096 and saved["estimate_s"]
    again = _load_or_plan(DemoConfig(out_dir=str(tmp_path)), tiny_lm, tmp_path, 0.0)
    assert again == first  # the stores on disk were sized by it
    other = _load_or_plan(DemoConfig(out_dir=str(tmp_path), tokens=8192), tiny_lm, tmp_path, 0.0)
    assert other.tokens == 8192  # nothing harvested yet: a new plan
    (tmp_path / "acts-train").mkdir()
    with pytest.raises(SaexError, match="holds a demo of 8,192 training tokens") as e:
        _load_or_plan(DemoConfig(out_dir=str(tmp_path), full=True), tiny_lm, tmp_path, 0.0)
    assert "--out-dir" in e.value.fix


# The re-plan after the training harvest, against hand arithmetic: later steps 10 + 10 + 5 + 15 s, training
# 60 s for 6 epochs, the lookahead 100 s (full) or 40 s (quick).
EST = {"harvest_train": 100.0, "harvest_heldout": 10.0, "training": 60.0, "evaluation": 10.0, "index": 5.0,
       "labels": 15.0}
LOOK = {"full": 100.0, "quick": 40.0}


def test_a_harvest_on_time_or_faster_changes_nothing():
    from saex.demo_plan import replan_after_harvest

    for took in (60.0, 100.0, 110.0):
        r = replan_after_harvest(EST, took, 10.0, 6.0, "full", LOOK, 3.0, {})
        assert (r.epochs, r.lookahead, r.note) == (6.0, "full", "")


def test_a_slow_harvest_cuts_epochs_to_the_floor_then_the_lookahead():
    from saex.demo_plan import replan_after_harvest

    # at 1.5x: 60 fixed + 15 per epoch + 150 (full) or 60 (quick)
    assert replan_after_harvest(EST, 150.0, 300.0, 6.0, "full", LOOK, 3.0, {}).note == ""  # 60 + 90 + 150 fits
    r = replan_after_harvest(EST, 150.0, 285.0, 6.0, "full", LOOK, 3.0, {})
    assert (r.epochs, r.lookahead) == (5.0, "full")  # (285 - 60 - 150) / 15 = 5 epochs
    r = replan_after_harvest(EST, 150.0, 250.0, 6.0, "full", LOOK, 3.0, {})
    assert (r.epochs, r.lookahead) == (3.0, "quick")  # the floor, 255 s with the full lookahead: too long
    assert "1.50x its estimate" in r.note and "6 -> 3 training epochs" in r.note and "the quick one" in r.note
    r = replan_after_harvest(EST, 150.0, 100.0, 6.0, "full", LOOK, 3.0, {})
    assert (r.epochs, r.lookahead) == (3.0, "none") and "left for later" in r.note


def test_the_users_own_choices_are_never_replanned():
    from saex.demo_plan import replan_after_harvest

    r = replan_after_harvest(EST, 150.0, 100.0, 6.0, "full", LOOK, 3.0, {"epochs": True, "lookahead": True})
    assert (r.epochs, r.lookahead, r.note) == (6.0, "full", "")
