"""The word finder (`saex find`): a planted "about to say owl" feature comes first; its
effect sizes equal a brute-force computation with plain transformers; its causal numbers
equal hand edits of the hidden state; multi-token and absent words; the cache; the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sae.errors import SaexError
from sae.lookahead.finder import NEUTRAL_FRAMES, FindConfig, find_word
from sae.statistics import contrast
from saex.cli import main
from tests.helpers import save_sae

USES_USER_CACHE = True  # the default model in the chat test; the other tests use no cache
LAYER = 1
MARKER = "night"  # every planted "an owl" follows it; nothing else does
FILLER = ("of to and in is was for on with as by at from that this it his her their person studies "
                      "stars called house tree river mountain king queen sword light dark water fire earth day "
                      "book word letter music song bird").split()
CONTROLS = [("a", "dog"), ("an", "egg"), ("a", "cat"), ("an", "apple"), ("a", "king"), ("an", "island"),
            ("a", "tree"), ("an", "hour")]


def _sentence(rng: random.Random, before: str, art: str, noun: str) -> str:
    head = " ".join(rng.choice(FILLER) for _ in range(rng.randint(4, 9)))
    tail = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 5)))
    return f"{head} {before} {art} {noun} {tail}.".capitalize()


@pytest.fixture(scope="module")
def owl_corpus(tmp_path_factory):
    """Paragraphs (documents) with "night an owl" twice each in 24 of them, and controls
    "X a dog", "X an egg" ... after other words everywhere."""
    rng = random.Random(5)
    paras = []
    for i in range(60):
        sents = [_sentence(rng, rng.choice(FILLER), *rng.choice(CONTROLS)) for _ in range(4)]
        if i % 5 < 2:
            sents += [_sentence(rng, MARKER, "an", "owl") for _ in range(2)]
        rng.shuffle(sents)
        paras.append(" ".join(sents))
    path = tmp_path_factory.mktemp("owl") / "owls.jsonl"  # one document per paragraph
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in paras))
    return path


def _residual(lm, text: str) -> torch.Tensor:
    """blocks.1 output at every position of BOS + text, by plain transformers."""
    ids = [lm.tokenizer.bos_token_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[LAYER + 1][0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_lm, owl_corpus):
    """A random SAE with feature 7 planted: it fires on the marker token (so, before "an
    owl") and nowhere else, and its decoder raises " owl"."""
    from safetensors.torch import load_file, save_file

    run = save_sae(tmp_path_factory.mktemp("planted") / "run", tiny_lm, seed=3)
    tok = tiny_lm.tokenizer
    marker_id = tok(" " + MARKER, add_special_tokens=False)["input_ids"][-1]
    on, off = [], []
    for para in [json.loads(line)["text"] for line in owl_corpus.read_text().splitlines()][:20]:
        ids = tok(para, add_special_tokens=False)["input_ids"]
        h = _residual(tiny_lm, para)[1:]
        for t, v in zip(ids, h):
            (on if t == marker_id else off).append(v)
    on, off = torch.stack(on), torch.stack(off)
    w = load_file(str(run / "sae_weights.safetensors"))
    u = on.mean(0) - off.mean(0)
    u = u / u.norm()
    proj_on, proj_off = (on - w["b_dec"]) @ u, (off - w["b_dec"]) @ u
    assert float(proj_on.min()) > float(proj_off.max()), "the marker is not linearly separable here"
    cut = (float(proj_on.min()) + float(proj_off.max())) / 2
    scale = 2.0 / float(proj_on.mean() - cut)
    w["W_enc"][:, 7] = u * scale
    w["b_enc"][7] = -cut * scale
    owl = tok(" owl", add_special_tokens=False)["input_ids"][0]
    emb = tiny_lm.model.get_output_embeddings().weight.detach()[owl]
    w["W_dec"][7] = 3 * emb / emb.norm()
    save_file({k: v.contiguous() for k, v in w.items()}, str(run / "sae_weights.safetensors"))
    return run


def _cfg(run, corpus, word="owl", **kw):
    base = dict(word=word, run=str(run), corpus=str(corpus), definitions=False, chat=False, corpus_contexts=30,
                controls_per_article=12, top=5, bootstrap=200, progress=False, device="cpu")
    return FindConfig(**(base | kw))


@pytest.fixture(scope="module")
def owl_report(planted, owl_corpus):
    return find_word(_cfg(planted, owl_corpus))


def test_planted_feature_comes_first_and_qualifies(owl_report):
    rep = owl_report
    assert rep["contexts"]["counts"]["corpus"] >= 12
    first = rep["candidates"][0]
    assert first["feature"] == 7
    assert first["fires_before"] and first["activation"]["z"] > rep["bonferroni_z"]
    assert first["activation"]["fires_controls"] == 0.0
    assert first["decoder"]["percentile"] == 1.0  # its decoder boosts " owl" most
    assert first["causal"]["steering"]["delta_logp_word"]["mean"] > 0
    assert rep["answer"]["verdict"] in ("found", "fires, no causal effect")
    assert any("#7 fires before 'an owl'" in line for line in rep["answer"]["lines"]) or \
        any("#7 (z =" in line for line in rep["answer"]["lines"])
    profile = rep["profiles"]["features"]["7"]
    assert profile["onset"] == -1  # the marker sits right before the article


def test_effect_sizes_equal_brute_force(owl_report, tiny_lm, planted):
    """Activation at -1 of every candidate: plain transformers + the SAE's own encode, then
    numpy's Welch z and Cohen's d, and scipy's Mann-Whitney U (the ranking's z and AUC)."""
    from scipy.stats import mannwhitneyu, norm

    from sae.runs.load import load_sae

    sae = load_sae(planted)
    items = owl_report["contexts"]["items"]
    rank = [it["prompt"] for it in items if it["half"] == "rank"]
    ctrl = [it["prompt"] for it in owl_report["contexts"]["control_items"]]

    def at_minus1(texts):
        with torch.no_grad():
            return np.stack([sae.encode(_residual(tiny_lm, t)[-1][None])[0].numpy() for t in texts]).astype(np.float64)

    x, y = at_minus1(rank), at_minus1(ctrl)
    assert owl_report["contexts"]["sink_positions"] == 0
    for c in owl_report["candidates"]:
        f = c["feature"]
        a, b = x[:, f], y[:, f]
        diff = a.mean() - b.mean()
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        got = c["activation"]
        assert got["diff"] == pytest.approx(diff, rel=1e-4, abs=1e-5)
        assert got["welch_z"] == pytest.approx(diff / se if se > 0 else 0.0, rel=1e-3, abs=1e-4)
        u = mannwhitneyu(a, b, alternative="two-sided", use_continuity=False, method="asymptotic")
        assert got["auc"] == pytest.approx(u.statistic / (len(a) * len(b)), abs=1e-6)
        if a.std() + b.std() > 0:  # scipy's z from its p: |z| = Phi^-1(1 - p/2), signed like U - mean
            z = norm.isf(u.pvalue / 2) * np.sign(u.statistic - len(a) * len(b) / 2)
            assert got["z"] == pytest.approx(z, rel=1e-3, abs=1e-3)
        assert got["d"] == pytest.approx(diff / pooled if pooled > 0 else 0.0, rel=1e-3, abs=1e-4)
        assert got["fires_word"] == pytest.approx((a > 0).mean())


def _logp(lm, ids, edit=None):
    """log-softmax at the last two positions of a plain forward, with `edit(h)` applied to
    the output of block LAYER."""
    block = lm.model.model.layers[LAYER]

    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = edit(h)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = block.register_forward_hook(hook) if edit else None
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0].float()
    finally:
        if handle:
            handle.remove()
    return logits.log_softmax(-1)


def test_causal_numbers_equal_hand_edits(owl_report, tiny_lm, planted):
    """Ablation on the held-out contexts and steering in the neutral frames, redone with a
    forward hook that edits the hidden state by hand: h - a_f(h) W_dec[f] (ablation) or
    h + value W_dec[f] (steering) at every position but BOS."""
    from sae.runs.load import load_sae

    sae = load_sae(planted)
    tok = tiny_lm.tokenizer
    bos = tok.bos_token_id
    an = tok(" an", add_special_tokens=False)["input_ids"][0]
    owl = tok(" owl", add_special_tokens=False)["input_ids"][0]
    f = 7
    row = next(c for c in owl_report["candidates"] if c["feature"] == f)
    w_dec = sae.sae.W_dec.detach()[f]

    def ablate(h):
        a = sae.encode(h[0])[:, f]
        out = h.clone()
        out[0, 1:] -= a[1:, None] * w_dec
        return out

    deltas_word, deltas_art = [], []
    for it in (i for i in owl_report["contexts"]["items"] if i["half"] == "check"):
        ids = [bos] + tok(it["prompt"], add_special_tokens=False)["input_ids"] + [an]
        clean, edited = _logp(tiny_lm, ids), _logp(tiny_lm, ids, ablate)
        deltas_word.append(float(edited[-1, owl] - clean[-1, owl]))
        deltas_art.append(float(edited[-2, an] - clean[-2, an]))
    got = row["causal"]["ablation"]
    assert got["delta_logp_word"]["mean"] == pytest.approx(np.mean(deltas_word), abs=2e-4)
    assert got["delta_logp_article"]["mean"] == pytest.approx(np.mean(deltas_art), abs=2e-4)
    assert got["contexts_fired"] == sum(d != 0 for d in deltas_word)

    value = row["causal"]["steering"]["added"]

    def steer(h):
        out = h.clone()
        out[0, 1:] += value * w_dec
        return out

    steered = []
    for frame in NEUTRAL_FRAMES:
        ids = [bos] + tok(frame, add_special_tokens=False)["input_ids"] + [an]
        steered.append(float(_logp(tiny_lm, ids, steer)[-1, owl] - _logp(tiny_lm, ids)[-1, owl]))
    assert row["causal"]["steering"]["delta_logp_word"]["mean"] == pytest.approx(np.mean(steered), abs=2e-4)
    null = owl_report["random"]["ablation_delta_logp_word"]["values"]
    assert len(null) == 19 and len(set(owl_report["random"]["features"]) & {c["feature"] for c in
                                                                             owl_report["candidates"]}) == 0
    p = (1 + sum(v <= got["delta_logp_word"]["mean"] for v in null)) / 20
    assert got["p"] == pytest.approx(p)


def test_rank_test_equals_scipy_with_ties_and_missing_rows():
    from scipy.stats import mannwhitneyu, norm

    from sae.lookahead.finder import rank_test

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(12, 5, generator=g) + 0.3)  # zero-inflated, like SAE activations
    y = torch.relu(torch.randn(40, 5, generator=g) - 0.5)
    x[3] = float("nan")  # a sink position: the whole row is missing
    got = rank_test(x, y)
    xs = x[~torch.isnan(x).any(1)].numpy()
    for f in range(5):
        u = mannwhitneyu(xs[:, f], y[:, f].numpy(), use_continuity=False, method="asymptotic")
        assert float(got["auc"][f]) == pytest.approx(u.statistic / (len(xs) * len(y)))
        z = norm.isf(u.pvalue / 2) * np.sign(u.statistic - len(xs) * len(y) / 2)
        assert float(got["z"][f]) == pytest.approx(z, rel=1e-6, abs=1e-9)
    assert float(rank_test(torch.zeros(4, 1), torch.zeros(6, 1))["z"][0]) == 0.0  # all tied: no evidence


def test_contrast_and_split_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, float("nan")], [2.0, 1.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    c = contrast(x, y)
    assert float(c["diff"][0]) == pytest.approx(2.0 - 0.5)
    se0 = np.sqrt(np.var([1, 3, 2], ddof=1) / 3 + np.var([0, 1], ddof=1) / 2)
    assert float(c["z"][0]) == pytest.approx(1.5 / se0)
    assert int(c["n_x"][1]) == 2 and float(c["mean_x"][1]) == pytest.approx(0.5)  # NaN is missing, not zero
    rank, check = split_halves(["corpus"] * 5 + ["riddle"] * 2 + ["user"], seed=0)
    assert sorted(rank + check) == list(range(8)) and not set(rank) & set(check)
    assert len([i for i in rank if i < 5]) == 3 and len([i for i in check if i < 5]) == 2
    assert 7 in rank  # a kind with one context ranks


def test_a_word_without_a_feature_gets_a_null(planted, owl_corpus):
    rep = find_word(_cfg(planted, owl_corpus, word="egg"))
    assert rep["answer"]["verdict"] == "none"
    line = next(line for line in rep["answer"]["lines"] if line.startswith("No feature fires before 'an egg'"))
    assert f"#{rep['strongest']['feature']}, z = " in line


def test_multi_token_word_from_typed_prompts(planted, owl_corpus, tiny_lm):
    word = "xylophone"
    pieces = tiny_lm.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    rep = find_word(_cfg(planted, owl_corpus, word=word, random_features=19,
                         prompt=["the song of the music was played on", "her music and his song were on",
                                 "in the dark the king played", "the queen and the bird heard"]))
    assert rep["tokens"]["ids"] == pieces
    assert "".join(rep["tokens"]["pieces"]) == " " + word
    assert any(f"is {len(pieces)} tokens" in line for line in rep["answer"]["lines"])
    assert any("never follows a/an in the corpus" in line for line in rep["answer"]["lines"])
    assert rep["contexts"]["counts"] == {"user": 4}
    assert rep["answer"]["verdict"] in ("none", "fires, no causal effect", "found")


def test_repeated_question_is_read_from_the_cache(planted, owl_corpus, owl_report):
    again = find_word(_cfg(planted, owl_corpus))
    assert again["cached"] and again["answer"] == owl_report["answer"]
    other = find_word(_cfg(planted, owl_corpus, top=4))
    assert not other["cached"] and len(other["candidates"]) < len(owl_report["candidates"]) + 1


def test_no_context_is_one_clear_error(planted, owl_corpus, capsys):
    with pytest.raises(SaexError, match="no context leads to 'zebra'"):
        find_word(_cfg(planted, owl_corpus, word="zebra"))
    code = main(["find", "zebra", str(planted), "--corpus", str(owl_corpus), "--definitions", "no",
                 "--chat", "no", "--progress", "no"])
    err = capsys.readouterr().err
    assert code == 2 and "error: no context leads to 'zebra'" in err and "fix:" in err


def test_cli_prints_the_answer_and_table(planted, owl_corpus, owl_report, capsys):
    code = main(["find", "owl", str(planted), "--corpus", str(owl_corpus), "--definitions", "no", "--chat", "no",
                 "--corpus-contexts", "30", "--controls-per-article", "12", "--top", "5", "--random-features", "19",
                 "--bootstrap", "200", "--progress", "no", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "stored answer" in out  # same settings as the fixture: read from the cache
    assert owl_report["answer"]["lines"][0] in out
    table = out.split("verdict\n", 1)[1].splitlines()
    assert table[0].split()[0] == "7"
    from sae.lookahead.finder import report_path

    stored = json.loads(report_path(_cfg(planted, owl_corpus), planted).read_text())
    assert stored["candidates"][0]["feature"] == 7


@pytest.mark.integration
def test_finder_page_shows_the_stored_answer(monkeypatch, planted, owl_report, tmp_path):
    from streamlit.testing.v1 import AppTest

    from sae.lookahead.finder import latest_report

    monkeypatch.setenv("SAEX_CHECKPOINTS", str(planted.parent))
    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "ann.sqlite"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=60)
    at.query_params["run"] = str(planted)
    at.query_params["word"] = "owl"
    at.switch_page("views/finder.py").run()
    assert not at.exception
    shown = latest_report(planted, "owl")
    bullets = [m.value for m in at.markdown if m.value.startswith("- ")]
    assert bullets == [f"- {line}" for line in shown["answer"]["lines"]]
    table = at.dataframe[0].value
    assert int(table["feature"].iloc[0]) == 7 and table["verdict"].iloc[0] in ("qualifies", "fires")
    assert any(b.label == "recompute with the settings above" for b in at.button)


def test_chat_forms_need_a_template_and_single_token_articles(tiny_lm):
    import copy

    from sae.lookahead.contexts import chat_versions
    from sae.lookahead.prompts import Prompt, chat_prompt

    tok = copy.deepcopy(tiny_lm.tokenizer)
    riddle = [Prompt("A bird that hoots is called", "owl", "an", "riddle")]
    assert chat_prompt(tok, "What do you call a bird?", "owl", "an") is None  # no template: no chat form
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert len(tok("An", add_special_tokens=False)["input_ids"]) > 1
    assert chat_versions(tok, riddle) == []  # "An" splits here: no chat form rather than an error later


@pytest.mark.integration
def test_chat_questions_read_the_capitalised_article(tmp_path):
    """On the default model: a chat-template question ends where the answer starts, the
    articles are "An"/"A" (no space), no second BOS is added, and logit(An) - logit(A)
    equals the plain model's."""
    from sae.data.models import load_model
    from sae.lookahead.contexts import chat_versions
    from sae.lookahead.interventions import Intervener, encode_prompts
    from sae.lookahead.prompts import Prompt
    from sae.runs.load import load_sae

    lm = load_model("smollm2-135m", device="cpu")
    tok = lm.tokenizer
    chats = chat_versions(tok, [Prompt("A person who studies the stars is called", "astronomer", "an", "riddle")])
    assert [p.prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0] for p in chats] == [
        "What do you call a person who studies the stars?", "What is a person who studies the stars called?"]
    p = chats[0]
    assert p.form == "A" and p.prompt.endswith("<|im_start|>assistant\n") and p.condition == "chat"
    (enc,) = encode_prompts(tok, [p])
    An, A = (tok(t, add_special_tokens=False)["input_ids"] for t in ("An", "A"))
    assert (enc.an_id, enc.a_id) == (An[0], A[0]) and enc.ids[enc.article_pos] == An[0]
    assert enc.ids[0] == tok.bos_token_id and enc.ids[1] != tok.bos_token_id
    sae_dir = save_sae(tmp_path / "sae", lm, layer=15, d_sae=32)
    iv = Intervener(lm, load_sae(sae_dir))
    out = iv.run(iv.prepare([enc]))
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([enc.ids])).logits[0, enc.article_pos - 1].float()
    assert float(out.ld[0]) == pytest.approx(float(logits[An[0]] - logits[A[0]]), abs=1e-3)



@pytest.mark.integration
def test_a_word_absent_from_the_corpus_is_asked_with_riddles_only(text_corpus):
    """The real WordNet and GCIDE definitions and the default model's chat template: a word
    the corpus never has after a/an gets riddles and chat questions, and a note that says so."""
    from sae.data.corpus import open_corpus
    from sae.data.models import load_model
    from sae.lookahead.contexts import gather

    tok = load_model("smollm2-135m", device="cpu").tokenizer
    wc = gather("xylophonist", tok, open_corpus(str(text_corpus)).documents(), controls_per_article=8)
    counts = wc.counts()
    assert set(counts) == {"riddle", "chat"} and counts["riddle"] >= 2 and counts["chat"] >= 2
    assert any("'xylophonist' never follows a/an in the corpus" in n for n in wc.notes)
    assert all(p.article == "a" and p.noun == "xylophonist" for p in wc.contexts)
    assert any(p.prompt == "Someone who plays a xylophone is called" for p in wc.contexts)
    assert {p.form for p in wc.contexts if p.condition == "chat"} == {"A"}
    assert {p.article for p in wc.controls} == {"a", "an"} and all(p.noun != "xylophonist" for p in wc.controls)
