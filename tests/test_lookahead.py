"""Prompt sets and pronunciation, article-aligned profiles and onsets (offsets counted by
hand), statistics against hand computation, corpus occurrences, and `saex lookahead` end
to end on the tiny model."""

import json

import pytest
import torch

from sae.data.occurrences import article_occurrences
from sae.data.prompts import (
    Prompt,
    controls,
    explicit_prompt,
    load_prompt_file,
    noun_prompts,
    parse_data_noun,
    parse_first_senses,
    parse_lexnames,
    pronounce,
    riddle_candidates,
    sample_riddles,
    split_of_noun,
)
from sae.data.sources import Document
from sae.errors import SaexError
from sae.lookahead.activity import aligned_activations, profile_report, separating_features
from sae.lookahead.article.ranking import gap_attribution
from sae.lookahead.interventions import Attribution, Intervener, encode_prompts
from sae.statistics import bootstrap_gap, gap_change, group_stats, onset
from saex.cli import main
from tests.helpers import SELECT_PROMPTS, TEST_PROMPTS, save_sae, write_prompts

# --------------------------------------------------------------------------- pronunciation


@pytest.mark.parametrize("word,article", [
    ("hour", "an"), ("honest", "an"), ("heir", "an"), ("astronomer", "an"), ("umbrella", "an"), ("egg", "an"),
    ("unicorn", "a"), ("university", "a"), ("European", "a"), ("one", "a"), ("user", "a"), ("house", "a"),
    ("FBI", "an"), ("x-ray", "an"),
])
def test_article_follows_pronunciation(word, article):
    p = pronounce(word)
    assert p.article == article and p.source == "cmudict"


@pytest.mark.parametrize("word,article", [
    ("hour", "an"), ("honest", "an"), ("unicorn", "a"), ("university", "a"), ("European", "a"), ("one", "a"),
    ("uninformed", "an"), ("umbrella", "an"), ("user", "a"), ("astronomer", "an"), ("pilot", "a"), ("FBI", "an"),
    ("NASA", "a"),
])
def test_rule_fallback(word, article):
    p = pronounce(word, use_dictionary=False)
    assert p.article == article and p.source == "rule"


def test_unknown_word_uses_the_rules_and_ambiguous_words_are_flagged():
    assert pronounce("zorblaxian") == pronounce("zorblaxian", use_dictionary=False)
    assert pronounce("herb").article is None  # "an herb" (US) and "a herb" (UK)
    with pytest.raises(SaexError):
        pronounce("1984")


# --------------------------------------------------------------------------- WordNet riddles

LEXNAMES = "03\tnoun.Tops\t1\n18\tnoun.person\t1\n07\tnoun.attribute\t1\n05\tnoun.animal\t1\n"
DATA_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
09818343 18 n 03 astronomer 0 uranologist 0 stargazer 0 001 @ 10428004 n 0000 | a physicist who studies astronomy  
09819291 18 n 01 astrophysicist 0 001 @ 09818343 n 0000 | an astronomer who studies the physical properties \
of celestial bodies  
10000001 18 n 01 pilot 0 000 | someone who is licensed to operate an aircraft in flight  
10000002 18 n 01 baker 0 000 | someone who bakes bread or cake for a living  
10000003 18 n 01 baker 1 000 | a person who owns a bakery and sells bread  
10000004 18 n 02 herbalist 0 herb_doctor 0 000 | a person who grows or gathers or sells herbs  
10000005 07 n 01 honesty 0 000 | the quality of being honest and fair to all  
10000006 18 n 01 editor 0 000 | a person responsible for the editorial aspects of publication  
10000007 18 n 01 user 0 000 | a person who makes use of a thing  
10000008 05 n 02 owl 0 bird_of_Minerva 0 000 | a nocturnal bird of prey with hawk-like beak and claws  
10000009 18 n 01 miner 0 000 | someone who works in a mine and digs for coal  
10000010 18 n 01 writer 0 000 | writes things  
10000011 18 n 01 tailor 0 000 | a person whose occupation is making and altering garments  
"""
INDEX_NOUN = """  1 This software and database is being provided to you
astronomer n 1 3 @ ~ ; 1 0 09818343  
astrophysicist n 1 2 @ ; 1 0 09819291  
pilot n 1 1 @ 1 0 10000001  
baker n 2 1 @ 2 0 10000003 10000002  
herbalist n 1 1 @ 1 0 10000004  
honesty n 1 1 @ 1 0 10000005  
editor n 1 1 @ 1 0 10000006  
user n 1 1 @ 1 0 10000007  
owl n 1 1 @ 1 0 10000008  
miner n 1 1 @ 1 0 10000009  
writer n 1 1 @ 1 0 10000010  
tailor n 1 1 @ 1 0 10000011  
"""


@pytest.fixture(scope="module")
def wordnet():
    synsets = parse_data_noun(DATA_NOUN, parse_lexnames(LEXNAMES))
    return synsets, parse_first_senses(INDEX_NOUN)


def test_wordnet_parsing(wordnet):
    synsets, first = wordnet
    astro = synsets[0]
    assert (astro.offset, astro.lexname, astro.lemmas) == ("09818343", "noun.person",
                                                         ("astronomer", "uranologist", "stargazer"))
    assert astro.definition == "a physicist who studies astronomy"
    assert next(s for s in synsets if s.offset == "10000008").lemmas == ("owl", "bird of Minerva")
    assert first["baker"] == "10000003" and first["astronomer"] == "09818343"


def test_riddles_keep_only_clean_count_noun_riddles(wordnet):
    riddles = {r.prompt.noun: r for r in riddle_candidates(*wordnet)}
    astro = riddles["astronomer"].prompt
    assert astro.prompt == "A physicist who studies astronomy is called"
    assert (astro.article, astro.condition) == ("an", "riddle")
    assert riddles["owl"].prompt.article == "an" and riddles["tailor"].prompt.article == "a"
    assert riddles["baker"].prompt.prompt == "A person who owns a bakery and sells bread is called"  # first sense
    # dropped: an "an" inside the gloss (pilot: a cue to copy), an uncountable lexicographer file (honesty), a
    # gloss that is no description (writer); kept: a gloss whose own first word is "an" (astrophysicist), words
    # that merely contain a shorter one (editorial, mine, use)
    assert "pilot" not in riddles and "honesty" not in riddles and "writer" not in riddles
    assert "herbalist" not in riddles  # "an herbalist" and "a herbalist" are both in cmudict
    assert riddles["astrophysicist"].prompt.prompt.startswith("An astronomer who studies")
    assert riddles["editor"].prompt.article == "an"
    assert riddles["miner"].prompt.article == "a" and riddles["user"].prompt.article == "a"


def test_riddle_filter_drops_glosses_that_give_the_noun_away():
    lex = parse_lexnames(LEXNAMES)
    syn = parse_data_noun("20000001 18 n 01 teacher 0 000 | a person who is a teacher of children  \n", lex)
    assert riddle_candidates(syn, {"teacher": "20000001"}) == []


def test_sampling_pairs_an_and_a_nouns_and_splits_by_noun(wordnet):
    riddles = riddle_candidates(*wordnet)
    both = sample_riddles(riddles, 10, None)
    arts = [r.prompt.article for r in both]
    assert arts == ["an", "a"] * (len(both) // 2)
    for v, c in zip(both[::2], both[1::2]):
        assert v.prompt.pair == c.prompt.pair == f"{v.prompt.noun}|{c.prompt.noun}"
        if v.prompt.source.endswith("noun.person"):  # a counterpart of the same lexicographer file where one is left
            assert c.prompt.source.endswith("noun.person")
    assert sample_riddles(riddles, 10, None) == both  # deterministic
    sel = {r.prompt.noun for r in sample_riddles(riddles, 10, "select")}
    test = {r.prompt.noun for r in sample_riddles(riddles, 10, "test")}
    assert not sel & test
    assert all(split_of_noun(n) == "select" for n in sel) and all(split_of_noun(n) == "test" for n in test)


def test_controls(wordnet):
    riddles = [r for r in riddle_candidates(*wordnet) if r.prompt.noun == "astronomer"]
    c = controls(riddles)
    assert c["explicit"][0].prompt == "The indefinite article for 'astronomer' is"
    assert c["in_context"][0].prompt == ("astronomer: a physicist who studies astronomy. "
                                         "A physicist who studies astronomy is called")
    assert all(p.noun == "astronomer" and p.article == "an" for ps in c.values() for p in ps)
    got = noun_prompts("astronomer", wordnet[0])
    assert [p.condition for p in got] == ["classic", "riddle", "explicit", "in_context"]
    assert got[0].prompt == "A person who studies the stars is called"
    assert got[-1].prompt.startswith("astronomer: a person who studies the stars. A person")
    assert explicit_prompt("hour", "an").article == "an"
    with pytest.raises(SaexError, match="no riddle"):
        noun_prompts("zebra", wordnet[0])


# --------------------------------------------------------------------------- user prompt files


def test_prompt_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "A person who studies the stars is called ", "noun": "astronomer", "article": "An"}\n'
                    '\n{"prompt": "x", "noun": "pilot", "article": "a", "condition": "mine"}\n')
    ps = load_prompt_file(path)
    assert ps[0] == Prompt("A person who studies the stars is called", "astronomer", "an", "user", None, "p.jsonl:1")
    assert ps[1].condition == "mine" and ps[1].source == "p.jsonl:3"


@pytest.mark.parametrize("text,match", [
    ("", "holds no prompts"),
    ("{not json}\n", "line 1 is not valid JSON"),
    ('["a"]\n', "line 1 is not a JSON object"),
    ('{"prompt": "p", "article": "a"}\n', "line 1 has no 'noun'"),
    ('{"prompt": "p", "noun": "n", "article": "the"}\n', "neither 'a' nor 'an'"),
])
def test_bad_prompt_files(tmp_path, text, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(SaexError, match=match):
        load_prompt_file(path)
    with pytest.raises(SaexError, match="does not exist"):
        load_prompt_file(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- aligned profiles


def test_aligned_profile_offsets_counted_by_hand(tiny_lm, sae):
    tok = tiny_lm.tokenizer
    texts = [Prompt("the stars and", "astronomer", "an"), Prompt("in the dark the bird", "king", "a")]
    enc = encode_prompts(tok, texts, completion=True, suffix=[".", ""])
    pieces = [tok.decode([i]) for i in enc[0].ids]
    # counted by hand: <s> | th | e | _st | ars | _a | nd | _an | _astronomer | .
    assert pieces == ["<s>", "th", "e", " st", "ars", " a", "nd", " an", " astronomer", "."]
    assert enc[0].article_pos == 7
    assert pieces[enc[0].article_pos] == " an" and tok.decode([enc[1].ids[enc[1].article_pos]]) == " a"
    assert tok.decode([enc[0].noun_id]) == " astronomer"

    iv = Intervener(tiny_lm, sae, sink_threshold=1e9, batch_size=2)
    prep = iv.prepare(enc)
    b = prep.batches[0]
    assert b.offsets[0].tolist()[:10] == list(range(-7, 3))
    # latent 0 := the position index, latent 1 := the token id; a sink at position 3 of text 0
    pos = torch.arange(b.ids.shape[1]).float().expand(2, -1)
    b.acts = torch.zeros_like(b.acts)
    b.acts[..., 0] = pos
    b.acts[..., 1] = b.ids.float()
    b.sink[0, 3] = True
    offsets = [-8, -7, -6, -4, -1, 0, 1, 2]
    got = aligned_activations(prep, offsets, features=[0, 1])
    nan = float("nan")
    want0 = [nan, nan, 1, nan, 6, 7, 8, 9]  # before the text, BOS, th, (sink), nd, an, astronomer, .
    assert torch.allclose(got[0, :, 0], torch.tensor(want0), equal_nan=True)
    assert got[0, 4, 1] == enc[0].ids[6] and got[0, 7, 1] == enc[0].ids[9]
    n1 = len(enc[1].ids)  # text 1 ends at the noun: +2 is padding
    assert enc[1].article_pos == n1 - 2
    assert got[1, 6, 0] == n1 - 1 and torch.isnan(got[1, 7, 0])
    with_sinks = aligned_activations(prep, offsets, features=[0], include_sinks=True)
    assert with_sinks[0, 3, 0] == 3 and torch.isnan(with_sinks[0, 1, 0])  # the sink is back, BOS never


def test_group_stats_and_onset_by_hand():
    offsets = [-3, -2, -1, 0]
    g = torch.Generator().manual_seed(0)
    n = 40
    acts = 0.1 * torch.randn(2 * n, 4, 3, generator=g)
    is_a = torch.arange(2 * n) < n
    acts[:n, 1:, 0] += 2.0  # feature 0: group A higher from -2 on
    acts[:n, 3:, 1] += 2.0  # feature 1: only at the article
    acts[:n, :, 2] = acts[n:, :, 2]  # feature 2: the same in both groups
    acts[0, 0, 2] = float("nan")  # a missing value
    sa, sb = group_stats(acts, is_a), group_stats(acts, ~is_a)
    x = acts[:n, 2, 0]
    assert float(sa["mean"][2, 0]) == pytest.approx(float(x.mean()), rel=1e-5)
    se = float(x.std() / n ** 0.5)
    assert float(sa["hi"][2, 0] - sa["mean"][2, 0]) == pytest.approx(1.959964 * se, rel=1e-4)
    assert int(sa["n"][0, 2]) == n - 1
    assert float(sa["mean"][0, 2]) == pytest.approx(float(acts[1:n, 0, 2].mean()), rel=1e-5)
    assert onset(sa, sb, offsets) == [-2, 0, None]
    rep = profile_report(acts, {"A": is_a, "B": ~is_a}, [10, 11, 12], offsets, ("A", "B"))
    assert rep["features"]["10"]["onset"] == -2 and rep["n_texts"] == {"A": n, "B": n}
    assert rep["features"]["12"]["A"]["n"][0] == n - 1


def test_separating_features_over_every_latent():
    offsets = [-2, -1, 0]
    g = torch.Generator().manual_seed(1)
    acts = torch.rand(60, 3, 50, generator=g)
    is_an = torch.arange(60) % 2 == 0
    acts[is_an, 1, 7] += 1.0  # latent 7 marks an-nouns at -1
    acts[~is_an, 1:, 9] += 1.0  # latent 9 marks a-nouns from -1 on
    sep = separating_features(acts, is_an, offsets, at=-1, top=3)
    assert sep["n_beyond_bound"] == 2 and sep["n_latents"] == 50
    assert {sep["top"][0]["feature"], sep["top"][1]["feature"]} == {7, 9}
    by = {t["feature"]: t for t in sep["top"]}
    assert by[7]["z"] > 0 and by[9]["z"] < 0
    assert by[7]["onset_an_over_a"] == -1 and by[9]["onset_a_over_an"] == -1
    x, y = acts[is_an, 1, 7], acts[~is_an, 1, 7]
    z = (x.mean() - y.mean()) / (x.var() / len(x) + y.var() / len(y)).sqrt()
    assert by[7]["z"] == pytest.approx(float(z), rel=1e-4)


def test_onset_needs_two_texts_a_side():
    acts = torch.zeros(3, 2, 1)
    acts[0] = 5.0
    one = torch.tensor([True, False, False])
    assert onset(group_stats(acts, one), group_stats(acts, ~one), [-1, 0]) == [None]


# --------------------------------------------------------------------------- statistics


def test_gap_and_its_change_by_hand():
    ld = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.0])
    is_an = torch.tensor([True, True, True, False, False])
    g = bootstrap_gap(ld, is_an, n_boot=500)
    assert g["value"] == pytest.approx(2.0 - (-0.5))
    assert g["ci"][0] <= g["value"] <= g["ci"][1]
    assert (g["n_an"], g["n_a"], g["mean_an"], g["mean_a"]) == (3, 2, 2.0, -0.5)
    edited = ld + torch.tensor([-1.0, -1.0, -1.0, 0.25, 0.25])
    c = gap_change(ld, edited, is_an, n_boot=500)
    assert c["gap_clean"] == pytest.approx(2.5) and c["gap_edited"] == pytest.approx(1.25)
    assert c["removed"] == pytest.approx(1.25) and c["fraction_removed"] == pytest.approx(0.5)
    # every resample removes exactly the same amount here: the intervals collapse
    assert c["removed_ci"] == pytest.approx([1.25, 1.25])
    assert (c["delta_ld_an"], c["delta_ld_a"]) == (pytest.approx(-1.0), pytest.approx(0.25))
    assert gap_change(ld, ld, is_an)["removed"] == 0.0
    assert bootstrap_gap(ld[:3], is_an[:3])["value"] is None


def test_gap_attribution_by_hand():
    attr = torch.zeros(4, 2, 3)
    attr[0, 0, 1], attr[0, 1, 1], attr[1, 1, 1] = 1.0, 2.0, 3.0  # an prompts: sums 3 and 3
    attr[2, 0, 1] = -1.0  # a prompts: -1 and 0
    a = Attribution([-2, -1], attr, torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(2), torch.zeros(4))
    got = gap_attribution(a, torch.tensor([True, True, False, False]))
    assert got.tolist() == pytest.approx([0.0, 3.0 - (-0.5), 0.0])


# --------------------------------------------------------------------------- corpus occurrences


def test_article_occurrences():
    docs = [Document("t", "1", "Then they said an owl sat in a tree with a hour glass, and an owl again."),
            Document("t", "2", "Once there was a king and an astronomer who knew an owl well.")]
    ps, tails = article_occurrences(docs, {"owl", "tree", "hour", "king", "astronomer"}, n_per_article=5,
                                    max_per_noun=2)
    got = [(p.prompt, p.article, p.noun, t) for p, t in zip(ps, tails)]
    assert got == [("Then they said", "an", "owl", " sat"), ("Then they said an owl sat in", "a", "tree", " with"),
                   ("Then they said an owl sat in a tree with a hour glass, and", "an", "owl", " again."),
                   ("Once there was", "a", "king", " and"), ("Once there was a king and", "an", "astronomer", " who")]
    # "a hour" does not fit the pronunciation; the third owl is over max_per_noun
    only, _ = article_occurrences(docs, {"owl", "king"}, 5, only={"king"})
    assert [p.noun for p in only] == ["king"]


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def run_dir(tiny_lm, tmp_path_factory):
    from safetensors.torch import save_file

    path = save_sae(tmp_path_factory.mktemp("la") / "run", tiny_lm, seed=3)
    g = torch.Generator().manual_seed(0)
    save_file({"sparsity": -3 + 2 * torch.rand(96, generator=g)}, str(path / "sparsity.safetensors"))
    return path


def test_lookahead_command_end_to_end(run_dir, tiny_model_dir, text_corpus, tmp_path, capsys):
    from safetensors.torch import load_file

    sel, test = write_prompts(tmp_path / "s.jsonl", SELECT_PROMPTS), write_prompts(tmp_path / "t.jsonl", TEST_PROMPTS)
    out = tmp_path / "report"
    args = ["lookahead", str(run_dir), "--model", str(tiny_model_dir), "--select-prompts", str(sel),
            "--test-prompts", str(test), "--corpus", str(text_corpus), "--corpus-occurrences", "4",
            "--n-features", "3", "--n-candidates", "8", "--random-sets", "20", "--bootstrap", "200",
            "--profile-before", "4", "--out", str(out), "--progress", "no", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Behaviour (test set" in printed and "Verdict" in printed
    r = json.loads((out / "report.json").read_text())
    for key in ("behaviour", "selection", "causal", "dose_response", "features", "profiles", "target", "answer"):
        assert key in r
    assert set(r["behaviour"]) == {"select", "test", "explicit"}
    assert r["prompt_sets"]["test"]["n"] == len(TEST_PROMPTS)
    sel_feats = r["selection"]["selected"]
    assert 1 <= len(sel_feats) <= 3
    # selection never saw the test prompts: its candidates come from the selection set
    assert r["selection"]["set"] == "select" and r["causal"]["set"] == "test"
    rnd = r["causal"]["random"]
    assert rnd["n_sets"] == 20 and rnd["density_source"].startswith("training density")
    log_d = load_file(str(run_dir / "sparsity.safetensors"))["sparsity"]
    for s in rnd["sets"]:
        assert not set(s) & set(sel_feats)
        for f, t in zip(s, sel_feats):
            assert abs(float(log_d[f] - log_d[t])) <= rnd["max_abs_log10_density_difference"] + 1e-9
    err = r["causal"]["error_term"]
    assert err["last"]["positions"] == "last" and err["edited_positions"]["positions"] == r["causal"]["positions"]
    assert err["last"]["gap_clean"] == pytest.approx(r["causal"]["clean_gap"]["value"], abs=1e-5)
    assert err["last"]["gap_edited"] != pytest.approx(err["last"]["gap_clean"], abs=1e-6)  # a random SAE misses much
    assert len(r["dose_response"]["selected"]["ld_an"]) == 7
    # dose 1 is no edit (the clean means), dose 0 the ablation
    dose = r["dose_response"]
    one, zero = dose["doses"].index(1.0), dose["doses"].index(0.0)
    assert dose["selected"]["ld_an"][one] == pytest.approx(r["behaviour"]["test"]["gap"]["mean_an"], abs=1e-5)
    assert dose["selected"]["gap"][zero] == pytest.approx(r["causal"]["ablation"]["gap_edited"], abs=1e-5)
    assert dose["random"][0]["gap"][one] == pytest.approx(r["causal"]["clean_gap"]["value"], abs=1e-5)
    assert r["profiles"]["offsets"] == list(range(-4, 3))
    assert "riddles" in r["profiles"]["sources"]
    assert r["target"]["noun"] == "astronomer" and r["target"]["by_attribution"]
    for name in r["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"behaviour.png", "profiles.png", "causal.png", "dose_response.png"} <= set(r["plots"])
    assert (out / "prompts-test.jsonl").exists()


def test_lookahead_bad_input(run_dir, tiny_model_dir, tmp_path, capsys):
    only_an = write_prompts(tmp_path / "an.jsonl", [r for r in SELECT_PROMPTS if r[2] == "an"])
    test = write_prompts(tmp_path / "t.jsonl", TEST_PROMPTS)
    base = ["lookahead", str(run_dir), "--model", str(tiny_model_dir), "--test-prompts", str(test),
            "--corpus", "none", "--target-noun", "none", "--progress", "no", "--out", str(tmp_path / "o")]
    assert main(base + ["--select-prompts", str(only_an)]) == 2
    assert "only an-noun prompts" in capsys.readouterr().err
    assert main(base + ["--select-prompts", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--select-prompts", str(test), "--positions", "article"]) == 2
    assert "cannot move the article choice" in capsys.readouterr().err
    assert main(base + ["--select-prompts", str(test), "--random-sets", "5"]) == 2
    assert "random_sets must be at least 20" in capsys.readouterr().err
    assert main(base + ["--select-prompts", str(test), "--target-noun", "zebra"]) == 2
    assert "no riddle leads to 'zebra'" in capsys.readouterr().err
    assert main(base + ["--select-prompts", str(test), "--corpus", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["lookahead", str(tmp_path / "no-run"), "--progress", "no"]) == 2
    assert not (tmp_path / "o" / "report.json").exists()


def test_verdict_names_an_error_term_that_carries_more_than_the_features():
    from sae.lookahead.article.answer import _outside_latents, error_term_line

    def err(frac, lo, hi):
        e = {"fraction_removed": frac, "fraction_ci": [lo, hi], "positions": "prompt"}
        return {"edited_positions": e, "last": dict(e, positions="last")}

    assert "most of the gap lies outside" in _outside_latents(err(0.74, 0.60, 0.96), 0.09)
    assert "than in the chosen features" in _outside_latents(err(0.40, 0.20, 0.60), 0.09)
    assert _outside_latents(err(0.40, 0.05, 0.60), 0.09) == ""  # the intervals overlap: no claim
    assert _outside_latents(err(0.40, 0.20, 0.60), 0.30) == ""
    assert _outside_latents(None, 0.0) == ""
    assert "74% (95% CI 60% to 96%) of the test gap at prompt positions" in error_term_line(err(0.74, 0.60, 0.96))
