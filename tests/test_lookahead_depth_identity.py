"""Planned or baked in (sae/lookahead/depth/identity.py): a per-noun code planted after one
block of the tiny model, at the noun's own token where it is named and at a stand-in "gloss"
token where it is only implied, with the article carried inside that code. The implied noun is
readable at -1 from that block on and not before it, nor at earlier offsets; setting its
subspace to its mean at -1 removes the article gap beyond random subspaces; the two-token rerun
behind it equals plain transformers with the same edit made by hand."""

import json
import random

import pytest
import torch

from sae.lookahead.depth import DepthConfig, LayerReader, run_depth
from tests.helpers import added_after_block
from tests.test_lookahead_depth import FILLERS, _nouns

PLANT_LAYER = 2
N_NOUNS = 6  # the identity subspace has at most 5 of the tiny model's 32 dimensions


def _setup(tiny_lm, path):
    tok = tiny_lm.tokenizer
    words = _nouns(tok)
    nouns, glosses = words[:N_NOUNS], words[N_NOUNS:2 * N_NOUNS]
    art = {n: ("an" if i % 2 == 0 else "a") for i, n in enumerate(nouns)}
    rng = random.Random(0)
    rows = []
    for n, g in zip(nouns, glosses):
        for cond, last in (("explicit", n), ("named_question", n), ("riddle", g), ("question", g)):
            for _ in range(3):
                prefix = " ".join(rng.choice(FILLERS) for _ in range(rng.randint(4, 7))).capitalize()
                rows.append({"prompt": f"{prefix} {last}", "noun": n, "article": art[n], "condition": cond})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return nouns, glosses, art


@pytest.fixture
def planted(tiny_lm, tmp_path):
    """After block PLANT_LAYER, at a noun's token or its gloss's: that noun's code, a random
    direction plus the an-minus-a unembedding direction (an-nouns) or minus it (a-nouns)."""
    tok = tiny_lm.tokenizer
    nouns, glosses, art = _setup(tiny_lm, tmp_path / "p.jsonl")
    w = tiny_lm.model.get_output_embeddings().weight.detach()
    a_id, an_id = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" a", " an"))
    v = (w[an_id] - w[a_id]) / (w[an_id] - w[a_id]).norm()
    g = torch.Generator().manual_seed(0)
    d = w.shape[1]
    code = {}
    for n, gl in zip(nouns, glosses):
        c = torch.randn(d, generator=g)
        c = 3 * c / c.norm() + 3 * (v if art[n] == "an" else -v)
        for word in (n, gl):
            code[tok(" " + word, add_special_tokens=False)["input_ids"][0]] = c
    ids_t = torch.tensor(list(code))
    table = torch.stack(list(code.values()))

    def add(ids, h):
        return (ids[..., None] == ids_t).to(h.dtype) @ table.to(h.dtype)  # "b t codes" @ "codes d"

    with added_after_block(tiny_lm, PLANT_LAYER, add):
        yield tmp_path / "p.jsonl"


def test_the_implied_noun_is_found_where_planted_and_its_removal_takes_the_article(planted, tiny_lm, tmp_path):
    cfg = DepthConfig(model="tiny", layers="all", prompts=str(planted), out=str(tmp_path / "out"),
                      random_directions=40, device="cpu", progress=False)
    r = run_depth(cfg, lm=tiny_lm)
    onset = r["noun_identity"]["onset"]
    for L in (0, 1):  # before the plant the named and the implied prompts end in different tokens
        assert not onset[str(L)]["-1"]["riddle"]["above_chance"]
    for L in (PLANT_LAYER, 3):
        assert onset[str(L)]["-1"]["riddle"]["above_chance"] and onset[str(L)]["-1"]["riddle"]["accuracy"] > 0.8
    assert not any(fr["riddle"]["above_chance"] for per in onset.values() for o, fr in per.items() if o != "-1")
    ab = r["noun_identity"]["ablation"][str(PLANT_LAYER)]
    assert ab["dims"] <= N_NOUNS - 1 and ab["prompts"] == N_NOUNS * 6
    art = ab["article"]
    assert art["random"]["p_permutation"] < 0.05 and art["fraction_ci"][0] > 0.3
    assert art["random"]["fraction_removed_mean"] < art["fraction_removed"] / 2
    # the plant carries the article along one direction only: without the article probe's, less is removed
    assert ab["article_without_probe_direction"]["fraction_removed"] < 0.75 * art["fraction_removed"]
    lines = r.answer.lines
    assert any(line.startswith("Planned or baked in: the noun, only implied by its gloss (riddle frame), is readable "
                               f"only at the token that chooses the article, at layer {PLANT_LAYER}")
               and f"by offset: at -1 from layer {PLANT_LAYER}." in line for line in lines)
    assert any(line.startswith("In words: the noun is represented at the token that chooses the article, and the "
                               "article depends on that representation") for line in lines)


def test_two_token_rerun_equals_a_hand_edit(tiny_lm):
    """rerun_last with the article fed after the prompt: the logit difference at -1 and log P(noun |
    prompt, article) equal a full forward of prompt + article with the residual after block L
    at the prompt's last token replaced by hand."""
    tok = tiny_lm.tokenizer
    reader = LayerReader(tiny_lm, [1], batch_size=4)
    prompts = ["The king and the queen saw", "In the dark night the bird", "A song of the river and"]
    ids = [tok(p)["input_ids"] for p in prompts]
    then = [reader.an_id, reader.a_id, reader.an_id]
    targets = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("owl", "dog", "egg")]
    g = torch.Generator().manual_seed(1)
    repl = torch.randn(len(ids), 2, tiny_lm.d_model, generator=g)
    ld, logp = reader.rerun_last(ids, 1, repl, then=then, targets=targets)
    for i, x in enumerate(ids):
        for k in range(2):
            pos = len(x) - 1

            def swap(_m, _i, out, i=i, k=k, pos=pos):
                h = (out[0] if isinstance(out, tuple) else out).clone()
                h[:, pos] = repl[i, k].to(h.dtype)
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handle = tiny_lm.layers[1].register_forward_hook(swap)
            try:
                with torch.no_grad():
                    logits = tiny_lm.model(torch.tensor([x + [then[i]]])).logits[0].float()
            finally:
                handle.remove()
            want_ld = logits[pos, reader.an_id] - logits[pos, reader.a_id]
            want_lp = logits[pos + 1].log_softmax(-1)[targets[i]]
            assert float(ld[i, k]) == pytest.approx(float(want_ld), abs=1e-4)
            assert float(logp[i, k]) == pytest.approx(float(want_lp), abs=1e-4)


def test_a_gap_that_may_be_zero_is_not_read_as_planning():
    """A model with no reliable article gap on the gloss-only prompts (the shuffled-article
    control: 0.07 logits) can show a large *share* of it removed; the answer must not call
    that planned."""
    from sae.lookahead.depth.answer import planned_lines

    frames = {"riddle": {"accuracy": 0.7, "control": 0.0, "above_chance": True}}
    change = {"removed": 0.1, "fraction_removed": 1.5, "fraction_ci": [0.6, 9.8],
              "random": {"n": 32, "p_permutation": 0.03, "fraction_removed_mean": 0.05}}
    ablation = {"dims": 23, "prompts": 72, "clean_gap": 0.07, "article": change,
                "noun": {"mean": -0.02, "ci": [-0.03, -0.01], "random": {"mean": 0.0, "p_permutation": 0.03}},
                "article_without_probe_direction": change}
    unsure = dict(ablation, clean_gap_ci=[-0.1, 0.2])
    r = {"noun_identity": {"onset": {"25": {"-1": frames}}, "ablation": {"25": unsure}}}
    lines = planned_lines(r)
    assert lines[-1].startswith("In words: on these prompts the model shows no reliable an-vs-a gap (0.07 logits")
    assert not any("planned, in this sense" in line or "without the article probe" in line for line in lines)
    r["noun_identity"]["ablation"]["25"]["clean_gap_ci"] = [0.03, 0.12]
    assert "planned, in this sense" in planned_lines(r)[-1]
