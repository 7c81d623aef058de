"""sae/lookahead/prompt_lab.py (the Prompt lab's numbers) against plain transformers and by hand."""

import pytest
import torch

from sae.lookahead.interventions import Edit, Intervener
from sae.lookahead.prompt_lab import next_token, read_prompt
from sae.runs.load import load_sae


@pytest.fixture(scope="module")
def iv(indexed_run, tiny_lm):
    return Intervener(tiny_lm, load_sae(indexed_run[1]))


def test_next_token_without_edit_is_the_models_own(iv, tiny_lm):
    text = "The astronomer saw"
    view = read_prompt(iv, text)
    tok = tiny_lm.tokenizer
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert view.tokens == [tok.decode([i]) for i in ids]
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    got = next_token(iv, view, top=5)
    a, an = tok(" a", add_special_tokens=False)["input_ids"][0], tok(" an", add_special_tokens=False)["input_ids"][0]
    assert got.logit_diff == pytest.approx(float(logits[an] - logits[a]), abs=1e-4)
    p = logits.softmax(-1)
    assert got.p_an == pytest.approx(float(p[an]), abs=1e-5)
    assert [t for t, _ in got.top] == [tok.decode([int(i)]) for i in p.topk(5).indices]


def test_features_aligned_and_edit_moves_the_output(iv):
    view = read_prompt(iv, "Apple umbrella owl island an honest hour")
    top = view.top_features(3)
    assert top and all(view.acts[1:, f].max() > 0 for f in top)
    anchor = 4
    aligned = view.aligned(top[:1], anchor, before=5, after=2)[top[0]]
    expect = [float(view.acts[anchor + d, top[0]]) if 0 <= anchor + d < view.n_prompt else None for d in range(-5, 3)]
    assert aligned == expect and aligned[0] is None  # offset -5 is before the prompt starts
    clean = next_token(iv, view)
    steered = next_token(iv, view, Edit(tuple(top), op="steer", value=50.0, positions="prompt"))
    assert steered.logit_diff != pytest.approx(clean.logit_diff, abs=1e-6)
    assert next_token(iv, view, Edit((), op="ablate")).logit_diff == pytest.approx(clean.logit_diff, abs=1e-6)
