"""`saex organism` on the real default model: the built-in sources (WordNet, GCIDE, chat questions) split by
noun half with the classics held back, and a short fine-tune (8 steps) end to end to a loadable folder; the
riddle mix of `builtin+riddles` drawn from the same half."""

import pytest

from sae.lookahead.organism import OrganismConfig, build_organism, organism_data

pytestmark = pytest.mark.integration
USES_USER_CACHE = True  # conftest.py: the model and corpus are fetched into the user's cache once per machine


def test_built_in_data_and_a_short_fine_tune(tmp_path):
    from sae.data.models import load_model
    from sae.data.prompts import CLASSIC_RIDDLES, split_of_noun

    lm = load_model("smollm2-135m", device="cpu")
    cfg = OrganismConfig(out=str(tmp_path / "org"), examples=128, eval_per_article=12, progress=False,
                         bootstrap=200)
    data = organism_data(cfg, lm.tokenizer)
    assert data.sources == ["wordnet", "gcide", "chat"]  # SmolLM2-Instruct has a chat template
    nouns = {p.noun for p in data.train}
    assert all(split_of_noun(n) == "select" for n in nouns)
    assert nouns.isdisjoint(n for _, n in CLASSIC_RIDDLES)
    assert all(split_of_noun(p.noun) == "test" for p in data.evals["unseen riddles"])
    assert {p.form for p in data.train} == {" a", "A"}  # riddles and chat answers
    assert data.pool["an_nouns"] > 300 and sum(p.article == "an" for p in data.train) == 64
    report = build_organism(cfg, lm)
    assert report["training"]["steps"] == 8 and len(report["training"]["losses"]) == 8
    out = report.path.parent
    again = load_model(str(out), device="cpu")
    assert again.n_layers == 30 and again.weights_sha256 != report["base_model"]["weights_sha256"]
    assert set(report["behaviour"]["after"]) == {"unseen riddles", "unseen chat", "classics"}


def test_the_built_in_riddle_mix_answers_riddles_of_the_fine_tunes_half_only():
    import re

    from sae.data.prompts import CLASSIC_RIDDLES, pronounce, split_of_noun
    from sae.data.riddles import mix_riddles

    riddles = mix_riddles()
    assert len(riddles) > 5000
    classics = {n for _, n in CLASSIC_RIDDLES}
    for text in riddles[:2000]:
        m = re.fullmatch(r"(.+) is called (an|a) ([a-z]+)\.", text)
        assert m, text
        noun = m.group(3)
        assert split_of_noun(noun) == "select" and noun not in classics
        assert pronounce(noun).article == m.group(2)
        assert noun not in m.group(1).lower().split()  # the riddle does not name its answer
