"""The word finder's activation tests (sae/lookahead/finder/activation.py) and its verdict
logic (answer.py) on synthetic designs with planted features whose truth is known: a word
feature is confirmed and specific; an article-only, a sentence-start and a chat-answer
feature are not confirmed; a category feature is named a category feature; the split never
puts one definition on both sides; a design too small to reach its level says so."""

from __future__ import annotations

import random

import pytest
import torch

from sae.data.prompts import Prompt
from sae.lookahead.finder.activation import activation_tests, cluster_blocks, shuffle_roles, split_clusters
from sae.lookahead.finder.answer import verdict_of
from sae.lookahead.finder.contexts import Context, frame_key

WORD = "astronomer"


def _definition(role: str, noun: str, art: str, i: int) -> list[Context]:
    cluster = f"def:wordnet:{noun}:{i}"
    out = [Context(Prompt(f"A gloss {i} of {noun}{e}", noun, art, "riddle"), ".", role, cluster,
                   frame_key("riddle", e.strip(), art, " a"), "wordnet") for e in (" is called", " is known as")]
    out += [Context(Prompt(f"<chat> {form} {i} {noun}", noun, art, "chat", form="A"), ".", role, cluster,
                    frame_key("chat", form, art, "A"), "wordnet") for form in ("what do you call", "what is it")]
    return out


def _corpus(role: str, noun: str, art: str, i: int, written: str) -> Context:
    return Context(Prompt(f"text {i} before {noun}", noun, art, "corpus", form=written), ".", role, f"doc:{role}{i}",
                   frame_key("corpus", "text", art, written), "corpus")


def _design(n_word_docs=10, n_word_defs=6, seed=0) -> list[Context]:
    ctx = []
    for i in range(n_word_docs):
        ctx.append(_corpus("word", WORD, "an", i, " A" if i % 4 == 0 else " a"))
    for i in range(n_word_defs):
        ctx += _definition("word", WORD, "an", i)
    for i in range(20):
        ctx.append(_corpus("control", f"apple{i}", "an", 100 + i, " A" if i % 4 == 0 else " a"))
    for i in range(8):
        ctx += _definition("control", f"egg{i}", "an", 100 + i)
    for i in range(8):
        ctx.append(_corpus("control", f"dog{i}", "a", 200 + i, " a"))
    for i in range(10):
        ctx.append(_corpus("category", f"actor{i}", "an", 300 + i, " A" if i % 4 == 0 else " a"))
    for i in range(6):
        ctx += _definition("category", f"architect{i}", "an", 300 + i)
    return ctx


WORD_F, ARTICLE_F, CATEGORY_F, START_F, CHAT_F = range(5)
N_NOISE = 300


def _values(ctx: list[Context], seed: int = 0) -> torch.Tensor:
    """Activations at -1: five planted features, then noise latents (zero-inflated)."""
    g = torch.Generator().manual_seed(seed)
    n = len(ctx)
    v = torch.relu(torch.randn(n, 5 + N_NOISE, generator=g) - 0.8)
    v[:, :5] = 0
    fire = 1 + torch.rand(n, generator=g)
    for i, c in enumerate(ctx):
        if c.role == "word":
            v[i, WORD_F] = fire[i]
        if c.prompt.article == "an":
            v[i, ARTICLE_F] = fire[i]  # "an article is due", word and other an-nouns alike
        if c.role in ("word", "category"):
            v[i, CATEGORY_F] = fire[i]
        if c.prompt.form in (" A", "A"):
            v[i, START_F] = fire[i]  # a sentence or an answer starts
        if c.prompt.condition == "chat":
            v[i, CHAT_F] = fire[i]
    return v


@pytest.fixture(scope="module")
def planted():
    ctx = _design()
    half = split_clusters(ctx, seed=0)
    return ctx, half, activation_tests(_values(ctx), ctx, "an", half, confirm=5, alpha=0.05, seed=0)


def test_the_word_feature_is_confirmed_and_specific(planted):
    _, _, act = planted
    assert act["order"][0] in (WORD_F, CATEGORY_F)
    assert WORD_F in act["confirmed"]
    assert act["specificity"]["features"][WORD_F]["kind"] == "word"


def test_article_sentence_start_and_chat_features_are_not_confirmed(planted):
    _, _, act = planted
    for f in (ARTICLE_F, START_F, CHAT_F):
        assert f not in act["confirmed"]
        assert float(act["z"][f]) < 2.5  # within every frame both sides fire alike: chance-level z only


def test_the_category_feature_gets_its_own_verdict(planted):
    _, _, act = planted
    assert CATEGORY_F in act["confirmed"]
    spec = act["specificity"]["features"][CATEGORY_F]
    assert spec["kind"] == "category"
    assert not spec["word_vs_category"]["passed"] and spec["category_vs_controls"]["passed"]


def test_no_noise_latent_is_confirmed_and_the_family_is_held_at_alpha(planted):
    _, _, act = planted
    assert set(act["confirmed"]) <= {WORD_F, CATEGORY_F}
    tested = act["check"]["tested"]
    assert len(tested) == 5 and act["check"]["resolvable"] >= 5


def test_split_keeps_each_cluster_on_one_side_and_both_sides_of_every_block(planted):
    ctx, half, _ = planted
    assert set(half.values()) == {"rank", "check"}
    for c in ctx:
        if c.role == "category":
            assert half[c.cluster] == "check"
    blocks = cluster_blocks(ctx)
    for role in ("word", "control"):
        per_block: dict[str, set[str]] = {}
        for k in {c.cluster for c in ctx if c.role == role}:
            per_block.setdefault(blocks[k], set()).add(half[k])
        assert all(len(sides) == 2 for b, sides in per_block.items() if sum(
            1 for k in {c.cluster for c in ctx if c.role == role} if blocks[k] == b) >= 2)


def test_shuffled_labels_move_whole_clusters_within_blocks():
    ctx = _design()
    shuffled = shuffle_roles(ctx, seed=3)
    by_cluster = {}
    for c in shuffled:
        by_cluster.setdefault(c.cluster, set()).add(c.role)
    assert all(len(r) == 1 for r in by_cluster.values())
    blocks = cluster_blocks(ctx)
    for b in set(blocks.values()):
        before = sorted(c.role for c in ctx if blocks[c.cluster] == b)
        after = sorted(c.role for c in shuffled if blocks[c.cluster] == b)
        assert before == after
    assert [c.role for c in shuffled] != [c.role for c in ctx]
    assert all(c.role == "category" for c in shuffled if c.prompt.noun.startswith("actor"))


def test_null_design_rarely_confirms_anything():
    """Labels carry no information (features fire by chance alone): over 40 seeds, the share
    of studies confirming any latent stays near alpha."""
    hits = 0
    for seed in range(40):
        ctx = _design()
        g = torch.Generator().manual_seed(100 + seed)
        v = torch.relu(torch.randn(len(ctx), 200, generator=g) - 0.5)
        act = activation_tests(v, ctx, "an", split_clusters(ctx, seed), confirm=5, alpha=0.05, seed=seed)
        hits += bool(act["confirmed"])
    assert hits <= 6  # expected 2 at alpha = 0.05; 6 has probability < 1% under the binomial


def test_a_design_too_small_for_its_level_is_inconclusive():
    ctx = _design(n_word_docs=2, n_word_defs=1)
    ctx = [c for c in ctx if c.role != "control" or random.Random(c.cluster).random() < 0.15]
    half = split_clusters(ctx, 0)
    act = activation_tests(_values(ctx), ctx, "an", half, confirm=5, alpha=0.05, seed=0)
    assert act["check"]["min_p"] > 0.05 and act["check"]["resolvable"] == 0 and act["check"]["tested"] == []
    rep = {"design": {"check": act["check"]}, "candidates": [], "causal": {"features": {}}}
    assert verdict_of(rep) == "inconclusive"


def test_a_single_source_is_inconclusive_not_an_error():
    ctx = _design(n_word_docs=1, n_word_defs=0)
    act = activation_tests(_values(ctx), ctx, "an", split_clusters(ctx, 0), confirm=5, alpha=0.05, seed=0)
    assert act["check"]["tested"] == [] and act["check"]["resolvable"] == 0 and act["confirmed"] == []


def _report(kind: str, confirmed: bool = True, ablation: bool = False, reachable: bool = True) -> dict:
    spec = None if kind == "not checked" else {"kind": kind}
    return {"design": {"check": {"resolvable": 3, "tested": [7]}},
            "candidates": [{"feature": 7, "confirmed": confirmed, "specificity": spec}],
            "causal": {"features": {"7": {"ablation_word": ablation, "reachable": reachable}}}}


@pytest.mark.parametrize("report, verdict", [
    (_report("word", ablation=True), "found"),
    (_report("not checked", ablation=True), "found"),
    (_report("word"), "fires, no causal effect"),
    (_report("word", reachable=False), "inconclusive"),
    (_report("category", ablation=True), "category"),  # a category feature is never "found" for the word
    (_report("unresolved", ablation=True), "fires, not specific"),
    (_report("word", confirmed=False, ablation=True), "none"),
])
def test_verdict_logic_on_synthetic_reports(report, verdict):
    assert verdict_of(report) == verdict
