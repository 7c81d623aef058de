"""The word finder's power estimate (sae/lookahead/finder/power.py) against a brute force: a
word feature of known firing rate planted into the activations, the finder's own activation
tests run on each draw, the share confirmed counted. A design of two held-out sources is
inconclusive, never null; the causal tests' detectable effect is the boundary of their p."""

from __future__ import annotations

import pytest
import torch

from sae.errors import SaexError
from sae.lookahead.finder.activation import activation_tests, split_clusters
from sae.lookahead.finder.answer import power_line, verdict_of
from sae.lookahead.finder.power import activation_power, detectable_effect, planted_values
from sae.statistics import empirical_p
from tests.test_lookahead_finder_activation import _design

CONTROL_RATE = 0.05


def _noise(ctx, n_latents: int, seed: int, sparsity: float = 1.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(len(ctx), n_latents, generator=g) - sparsity)


def _brute_force(values, ctx, half, rate: float, draws: int, seed: int) -> float:
    """Plant the feature in latent 0 and run the finder's tests, `draws` times."""
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(draws):
        v = values.clone()
        v[:, 0] = planted_values(ctx, rate, CONTROL_RATE, 1, g)[:, 0]
        act = activation_tests(v, ctx, "an", half, confirm=5, alpha=0.05, seed=0)
        hits += 0 in act["confirmed"]
    return hits / draws


@pytest.fixture(scope="module")
def design():
    ctx = _design(n_word_docs=6, n_word_defs=4)
    values = _noise(ctx, 80, seed=3)
    values[:, 0] = 0  # the latent the brute force plants into
    half = split_clusters(ctx, 0)
    act = activation_tests(values, ctx, "an", half, confirm=5, alpha=0.05, seed=0)
    pw = activation_power(values, ctx, "an", half, act, confirm=5, alpha=0.05, seed=0, control_rate=CONTROL_RATE,
                          sims=300)
    return ctx, values, half, pw


def test_power_matches_a_brute_force_of_the_finders_own_tests(design):
    ctx, values, half, pw = design
    curve = dict(zip(pw["rates"], pw["power"]))
    assert curve[0.1] < 0.2 and curve[1.0] > 0.8 and all(a <= b + 0.06 for a, b in zip(pw["power"], pw["power"][1:]))
    for rate in (0.4, 0.7):
        brute = _brute_force(values, ctx, half, rate, draws=120, seed=int(rate * 10))
        # binomial SDs: 120 brute-force draws and 300 simulated ones, at most 0.046 and 0.029 together 0.054
        assert abs(brute - curve[rate]) < 0.15, (rate, brute, curve[rate])


def test_a_feature_at_the_stated_detectable_rate_is_found_that_often(design):
    ctx, values, half, pw = design
    rate = pw["detectable_rate"]
    assert rate is not None and rate < 1.0
    assert _brute_force(values, ctx, half, rate, draws=120, seed=11) >= pw["target"] - 0.12


def test_two_held_out_sources_give_inconclusive_never_null():
    """Two sources on each side against the finder's usual controls and a few thousand
    latents, many of which tie at the largest z two sources allow."""
    ctx = _design(n_word_docs=2, n_word_defs=2)
    half = split_clusters(ctx, 0)
    assert len({c.cluster for c in ctx if c.role == "word" and half[c.cluster] == "check"}) == 2
    values = _noise(ctx, 3000, seed=5, sparsity=2.0)
    act = activation_tests(values, ctx, "an", half, confirm=5, alpha=0.05, seed=0)
    pw = activation_power(values, ctx, "an", half, act, confirm=5, alpha=0.05, seed=0, sims=200)
    assert pw["detectable_rate"] is None and pw["power"][-1] < 0.8
    rep = {"design": {"check": act["check"]}, "power": pw,
           "candidates": [{"feature": f, "confirmed": False, "specificity": None} for f in act["check"]["tested"]],
           "causal": {"features": {}}}
    if act["confirmed"]:
        pytest.skip("noise confirmed a latent on this seed")
    assert verdict_of(rep) == "inconclusive"
    assert power_line(rep).startswith("Power: even a feature that fires before every independent source")


def test_more_sources_are_asked_for_when_power_is_short(design):
    ctx, values, half, _ = design
    small = [c for c in ctx if c.role != "word" or c.cluster in sorted({c.cluster for c in ctx
                                                                          if c.role == "word"})[:4]]
    h = split_clusters(small, 0)
    v = values[[i for i, c in enumerate(ctx) if c in small]]
    act = activation_tests(v, small, "an", h, confirm=5, alpha=0.05, seed=0)
    pw = activation_power(v, small, "an", h, act, confirm=5, alpha=0.05, seed=0, sims=100)
    assert pw["power_at_reference"] < 0.8
    assert pw["extra_sources"] is not None and pw["extra_power"] >= 0.8
    assert f"About {pw['extra_sources']} more independent sources" in power_line({"power": pw})


def test_detectable_effect_is_the_boundary_of_the_empirical_p():
    nulls = [float(x) for x in torch.linspace(-1, 1, 39)]
    level = 0.05  # (1 + c) / 40 <= 0.05 for c <= 1: the second most extreme null is the boundary
    d = detectable_effect(nulls, level, lower=True)
    assert d == pytest.approx(sorted(nulls)[1])
    assert empirical_p(d - 1e-6, torch.tensor(nulls), lower=True) <= level
    assert empirical_p(d, torch.tensor(nulls), lower=True) > level
    up = detectable_effect(nulls, level, lower=False)
    assert up == pytest.approx(sorted(nulls)[-2])
    assert empirical_p(up + 1e-6, torch.tensor(nulls), lower=False) <= level
    assert detectable_effect(nulls[:10], 0.05, lower=True) is None  # 1 / 11 > 0.05: no mean can pass


def test_power_settings_are_checked():
    from sae.lookahead.finder import FindConfig

    with pytest.raises(SaexError, match="power_control_rate"):
        FindConfig(word="owl", run="x", power_rate=0.05, power_control_rate=0.1)
    with pytest.raises(SaexError, match="power_sims"):
        FindConfig(word="owl", run="x", power_sims=5)
