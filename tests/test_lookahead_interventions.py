"""Feature edits with the SAE error term kept, checked against plain transformers with a
hand-made edit of the hidden state; gradient x activation against autograd on the plain
model; density-matched random controls."""

import pytest
import torch

from sae.data.prompts import Prompt
from sae.errors import SaexError
from sae.lookahead.interventions import (
    Edit,
    Intervener,
    encode_prompts,
    parse_positions,
    typical_activation,
)
from sae.statistics import density_matched_sets

LAYER = 1
D_SAE = 96  # latents of conftest.py's `sae` fixture

# Words of the tiny model's vocabulary (tests/conftest.py WORDS).
PROMPTS = [
    Prompt("the person studies the stars and it was called", "astronomer", "an"),
    Prompt("the king saw the light of the river and", "owl", "an"),
    Prompt("the queen of the night was", "umbrella", "an"),
    Prompt("her dog and his cat were by the", "house", "a"),
    Prompt("in the dark the bird", "king", "a"),
]


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    """The same model loaded again by plain transformers: the independent reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def iv(tiny_lm, sae):
    # batch_size 2: several padded batches of unequal lengths
    return Intervener(tiny_lm, sae, sink_threshold=1e9, sink_threshold_source="test", batch_size=2)


@pytest.fixture(scope="module")
def prepared(iv, tiny_lm):
    return iv.prepare(encode_prompts(tiny_lm.tokenizer, PROMPTS))


def _plain_logits(plain, ids, replace=None):
    """Logits of the plain model; `replace(h)` edits the output of block LAYER by hand."""
    handle = None
    if replace is not None:
        def hook(_m, _i, out):
            return (replace(out[0]), *out[1:]) if isinstance(out, tuple) else replace(out)
        handle = plain.model.layers[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return plain(input_ids=torch.tensor([ids])).logits[0]
    finally:
        if handle is not None:
            handle.remove()


def _hidden(plain, ids):
    with torch.no_grad():
        return plain(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]


def _encode_by_hand(sae, x):
    """StandardSAE encoder written out: relu((x - b_dec) @ W_enc + b_enc)."""
    s = sae.sae
    return torch.relu((x - s.b_dec) @ s.W_enc + s.b_enc)


# --------------------------------------------------------------------------- identity


def test_no_edit_spliced_logits_equal_clean(iv, prepared, plain, sae):
    # no edit, an empty one, and a no-op one: all must give the plain model's logits
    for edit in (None, Edit(()), Edit((0, 5), "scale", 1.0)):
        spliced = iv.clean_logits(prepared, edit)
        for e, got in zip(prepared.items, spliced):
            assert (got - _plain_logits(plain, e.ids)).abs().max() <= 1e-4


def test_logit_difference_equals_plain_transformers(iv, prepared, plain, tiny_lm):
    a_id = tiny_lm.tokenizer(" a", add_special_tokens=False)["input_ids"][0]
    an_id = tiny_lm.tokenizer(" an", add_special_tokens=False)["input_ids"][0]
    out = iv.run(prepared)
    for i, p in enumerate(PROMPTS):
        ids = [tiny_lm.bos_id] + tiny_lm.tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        logits = _plain_logits(plain, ids)[-1]
        assert abs(float(logits[an_id] - logits[a_id]) - float(out.ld[i])) <= 1e-4
        logp = logits.log_softmax(-1)
        assert abs(float(logp[a_id]) - float(out.logp_a[i])) <= 1e-4
        # P(noun | prompt, article): the article appended, read at the article
        art = an_id if p.article == "an" else a_id
        noun_id = tiny_lm.tokenizer(" " + p.noun, add_special_tokens=False)["input_ids"][0]
        lp = _plain_logits(plain, ids + [art])[-1].log_softmax(-1)[noun_id]
        assert abs(float(lp) - float(out.logp_noun[i])) <= 1e-4
    assert out.is_an.tolist() == [p.article == "an" for p in PROMPTS]


# --------------------------------------------------------------------------- edits against a hand edit


@pytest.mark.parametrize("op,value", [("ablate", 0.0), ("clamp", 2.5), ("steer", -1.5), ("scale", 3.0)])
def test_edit_equals_manual_edit_of_hidden_state(op, value, iv, prepared, plain, sae):
    e = prepared.items[0]
    p = e.article_pos - 1  # the position that chooses the article
    h = _hidden(plain, e.ids)
    acts = _encode_by_hand(sae, h)
    f = int(acts[p].argmax())  # a latent that fires there
    a = float(acts[p, f])
    assert a > 0
    w = sae.sae.W_dec[f].detach()
    new = {"ablate": 0.0, "clamp": value, "steer": a + value, "scale": a * value}[op]

    def by_hand(hidden):
        hidden = hidden.clone()
        hidden[0, p] += (new - a) * w
        return hidden

    want = _plain_logits(plain, e.ids, by_hand)
    got = iv.clean_logits(prepared, Edit((f,), op, value, positions="last"))[0]
    assert (got - want).abs().max() <= 1e-4
    clean = _plain_logits(plain, e.ids)
    assert (got[:p] - clean[:p]).abs().max() <= 1e-4  # earlier positions cannot see the edit
    assert (got[p:] - clean[p:]).abs().max() > 1e-3  # and the edit did something


def test_edit_at_several_positions_and_features(iv, prepared, plain, sae):
    e = prepared.items[3]
    h = _hidden(plain, e.ids)
    acts = _encode_by_hand(sae, h)
    feats = (1, 7, 20)
    prompt_pos = list(range(1, e.article_pos))  # every prompt token but BOS

    def by_hand(hidden):
        hidden = hidden.clone()
        for q in prompt_pos:
            hidden[0, q] -= acts[q, list(feats)] @ sae.sae.W_dec[list(feats)].detach()
        return hidden

    got = iv.clean_logits(prepared, Edit(feats, "ablate", positions="prompt"))[3]
    assert (got - _plain_logits(plain, e.ids, by_hand)).abs().max() <= 1e-4


def test_bos_and_sinks_left_alone_unless_asked(tiny_lm, sae, plain):
    enc = encode_prompts(tiny_lm.tokenizer, PROMPTS[:1])
    h = _hidden(plain, enc[0].ids)
    norms = h.norm(dim=-1)
    sink = int(norms[1:enc[0].article_pos].argmax()) + 1
    threshold = float(norms[sink]) - 1e-3  # exactly one sink (BOS aside)
    iv = Intervener(tiny_lm, sae, sink_threshold=threshold, batch_size=4)
    prep = iv.prepare(enc)
    assert prep.n_sinks == 1 and bool(prep.batches[0].sink[0, sink])
    acts = _encode_by_hand(sae, h)
    feats = tuple(range(D_SAE))

    def ablate_at(positions):
        def edit(hidden):
            hidden = hidden.clone()
            for q in positions:
                hidden[0, q] -= acts[q] @ sae.sae.W_dec.detach()
            return hidden
        return edit

    ordinary = [q for q in range(1, enc[0].article_pos) if q != sink]
    got = iv.clean_logits(prep, Edit(feats, positions="prompt"))[0]
    assert (got - _plain_logits(plain, enc[0].ids, ablate_at(ordinary))).abs().max() <= 1e-4
    got = iv.clean_logits(prep, Edit(feats, positions="sinks"))[0]  # BOS and the sink only
    assert (got - _plain_logits(plain, enc[0].ids, ablate_at([0, sink]))).abs().max() <= 1e-4


def test_default_sink_threshold_is_the_harvest_rule(tiny_lm, sae):
    iv = Intervener(tiny_lm, sae, batch_size=4)
    prep = iv.prepare(encode_prompts(tiny_lm.tokenizer, PROMPTS))
    norms = torch.cat([b.h.norm(dim=-1)[b.valid & ~b.special] for b in prep.batches])
    assert prep.sink_threshold == pytest.approx(6 * float(norms.median()))
    assert "median" in prep.sink_threshold_source


# --------------------------------------------------------------------------- attribution


def test_attribution_equals_autograd_on_the_plain_model(iv, prepared, plain, sae, tiny_lm):
    a_id = tiny_lm.tokenizer(" a", add_special_tokens=False)["input_ids"][0]
    an_id = tiny_lm.tokenizer(" an", add_special_tokens=False)["input_ids"][0]
    attr = iv.attribute(prepared)
    k = len(attr.offsets)
    grads = []
    for i, e in enumerate(prepared.items):
        box = {}

        def hook(_m, _i, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h.detach().requires_grad_(True)
            box["h"] = h
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = plain.model.layers[LAYER].register_forward_hook(hook)
        try:
            logits = plain(input_ids=torch.tensor([e.ids[:e.article_pos]])).logits[0, -1]
        finally:
            handle.remove()
        (g,) = torch.autograd.grad(logits[an_id] - logits[a_id], box["h"])
        h = box["h"].detach()[0]
        acts = _encode_by_hand(sae, h)
        by_hand = acts * (g[0] @ sae.sae.W_dec.detach().T)  # "pos d_sae"
        for q in range(1, e.article_pos):  # BOS is reported apart
            want = by_hand[q]
            got = attr.attr[i, q - e.article_pos + k]
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
        assert torch.allclose(attr.sink_attr[i], by_hand[0], atol=1e-5, rtol=1e-4)
        assert abs(float(attr.ld[i]) - float((logits[an_id] - logits[a_id]).detach())) <= 1e-4
        grads.append(g[0, 1:e.article_pos] @ sae.sae.W_dec.detach().T)
    want_mean = torch.cat(grads).mean(0)
    assert torch.allclose(attr.grad_mean(), want_mean, atol=1e-5, rtol=1e-4)
    at_last = torch.stack([gr[-1] for gr in grads]).mean(0)  # offset -1 only
    assert torch.allclose(attr.grad_mean([-1]), at_last, atol=1e-5, rtol=1e-4)


def test_attribution_predicts_a_small_ablation(iv, prepared):
    """Linearity check: scaling one latent by 0.999 at one position moves the logit
    difference by about -0.001 x its attribution there."""
    attr = iv.attribute(prepared)
    i, j, f = [int(x) for x in torch.nonzero(attr.attr.abs() == attr.attr.abs().max())[0]]
    off = attr.offsets[j]
    clean = iv.run(prepared).ld[i]
    edited = iv.run(prepared, Edit((f,), "scale", 0.999, positions=str(off))).ld[i]
    assert float(edited - clean) == pytest.approx(-0.001 * float(attr.attr[i, j, f]), rel=0.05, abs=1e-6)


# --------------------------------------------------------------------------- controls and validation


def test_random_controls_match_the_targets_density():
    g = torch.Generator().manual_seed(0)
    log_d = -4 + 3 * torch.rand(2000, generator=g)
    log_d[:50] = -10  # never fired
    log_d[1999] = -0.2  # a lone dense latent: its matches come from the nearest
    target = [100, 500, 1200, 1999]
    sets, worst = density_matched_sets(log_d, target, n_sets=25, seed=1, tolerance=0.05)
    assert len(sets) == 25 and len({tuple(s) for s in sets}) == 25
    for s in sets:
        assert len(s) == len(target) and len(set(s)) == len(s)
        assert not set(s) & set(target)
        assert all(log_d[f] > -9 for f in s)
        for f, t in zip(s[:3], target[:3]):
            assert abs(float(log_d[f] - log_d[t])) <= 0.05
    nearest = (log_d - log_d[1999]).abs().argsort()[1:9]  # its 8 nearest (itself excluded)
    assert all(s[3] in nearest.tolist() for s in sets)
    assert worst == pytest.approx(max(float((log_d[f] - log_d[t]).abs()) for s in sets for f, t in zip(s, target)))


def test_typical_activation_is_the_mean_where_firing(prepared):
    acts = torch.cat([b.acts[b.ordinary & (b.offsets <= -1)] for b in prepared.batches])
    feats = [0, 1, 2]
    got = typical_activation(prepared, feats)
    for f, v in zip(feats, got):
        col = acts[:, f]
        want = col[col > 0].mean() if (col > 0).any() else acts[acts > 0].mean()
        assert float(v) == pytest.approx(float(want), rel=1e-5)


def test_bad_edits_and_positions():
    assert parse_positions("-3:-1") == [-3, -2, -1]
    assert parse_positions("-1,-4") == [-1, -4]
    assert parse_positions("last") == "last"
    for bad in ("", "x", "-1:-3", "1:a"):
        with pytest.raises(SaexError):
            parse_positions(bad)
    with pytest.raises(SaexError, match="unknown edit"):
        Edit((1,), "zero")
    with pytest.raises(SaexError, match="values for"):
        Edit((1, 2), "clamp", (1.0,))


def test_feature_out_of_range_is_one_clear_error(iv, prepared):
    with pytest.raises(SaexError, match="out of range"):
        iv.run(prepared, Edit((D_SAE,)))


def test_error_term_at_its_mean_equals_a_hand_edit(iv, prepared, plain, sae, tiny_lm):
    """error_mean is the mean of h - decode(encode(h)) over the prompt tokens (BOS left out);
    run_error_at_mean puts decode(encode(h)) + that mean at -1 and nothing else changes."""
    s = sae.sae
    errs = []
    for e in prepared.items:
        h = _hidden(plain, e.ids)[1:e.article_pos]  # prompt tokens: after BOS, before the article
        errs.append(h - (_encode_by_hand(sae, h) @ s.W_dec + s.b_dec))
    mean = torch.cat(errs).mean(0).detach()
    torch.testing.assert_close(iv.error_mean(prepared, "prompt"), mean, atol=1e-5, rtol=1e-4)
    an_id, a_id = (tiny_lm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" an", " a"))
    out = iv.run_error_at_mean(prepared, "last", mean)
    for i, e in enumerate(prepared.items):
        p = e.article_pos - 1

        def by_hand(hidden, p=p):
            hidden = hidden.clone()
            hidden[0, p] = (_encode_by_hand(sae, hidden[0, p]) @ s.W_dec + s.b_dec) + mean
            return hidden

        logits = _plain_logits(plain, e.ids[:e.article_pos], by_hand)[-1]
        assert abs(float(logits[an_id] - logits[a_id]) - float(out.ld[i])) <= 1e-4
    assert (out.ld - iv.run(prepared).ld).abs().max() > 1e-4  # the SAE is imperfect: the edit does something
