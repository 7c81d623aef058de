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


def _marker_direction(lm, corpus: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unit direction separating the marker token's residual (blocks.1) from every other
    token's, and the residuals on each side."""
    tok = lm.tokenizer
    marker_id = tok(" " + MARKER, add_special_tokens=False)["input_ids"][-1]
    on, off = [], []
    for para in [json.loads(line)["text"] for line in corpus.read_text().splitlines()][:20]:
        ids = tok(para, add_special_tokens=False)["input_ids"]
        for t, v in zip(ids, _residual(lm, para)[1:]):
            (on if t == marker_id else off).append(v)
    on, off = torch.stack(on), torch.stack(off)
    u = on.mean(0) - off.mean(0)
    # orthogonal to the mean direction of ordinary tokens, so that they read about zero along it
    m = off.mean(0) / off.mean(0).norm()
    u = u - (u @ m) * m
    return u / u.norm(), on, off


@pytest.fixture(scope="module")
def planner_lm(tmp_path_factory, owl_corpus):
    """The tiny model with a planted lookahead circuit: block 2's attention attends evenly to
    every earlier position, reads the marker direction there and writes the unembedding of
    " owl" and " an". So the model says " an" and then " owl" more after the marker, through
    what it computed before the article: the mechanism the word finder looks for."""
    from sae.data.models import load_model
    from tests.conftest import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("planner"))
    lm = load_model(str(folder), device="cpu")
    u, _, _ = _marker_direction(lm, owl_corpus)
    tok = lm.tokenizer
    emb = lm.model.get_output_embeddings().weight.detach()
    write = sum(emb[tok(w, add_special_tokens=False)["input_ids"][0]] for w in (" owl", " an"))
    attn = lm.model.model.layers[LAYER + 1].self_attn
    with torch.no_grad():
        attn.q_proj.weight.zero_()  # every score 0: even attention over the prefix
        attn.v_proj.weight.zero_()
        attn.v_proj.weight[0] = u
        attn.o_proj.weight.zero_()
        attn.o_proj.weight[:, 0] = 400 * write / write.norm()
    lm.model.save_pretrained(folder)
    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, planner_lm, owl_corpus):
    """A random SAE (512 latents) made sparse (each latent fires on about 3% of ordinary
    tokens) with feature 7 planted: it reads the marker direction above the midpoint between
    the marker's residuals and the others', and its decoder writes that direction back, so
    ablating it takes the marker's excess out of the residual. No other latent fires on the
    marker, so #7 alone carries it."""
    from safetensors.torch import load_file, save_file

    run = save_sae(tmp_path_factory.mktemp("planted") / "run", planner_lm, seed=3, d_sae=512)
    w = load_file(str(run / "sae_weights.safetensors"))
    u, on, off = _marker_direction(planner_lm, owl_corpus)
    pre_off = (off - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    w["b_enc"] -= pre_off.quantile(0.97, dim=0)
    pre_on = (on - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    w["b_enc"][(pre_on > 0).any(0)] = -1e4  # latents that fire on the marker would share its role
    proj_on, proj_off = (on - w["b_dec"]) @ u, (off - w["b_dec"]) @ u
    assert float(proj_on.min()) > float(proj_off.max()), "the marker is not linearly separable here"
    cut = (float(proj_on.min()) + float(proj_off.max())) / 2
    scale = 2.0 / float(proj_on.mean() - cut)
    w["W_enc"][:, 7] = u * scale
    w["b_enc"][7] = -cut * scale
    w["W_dec"][7] = u * float(proj_on.mean()) / 2.0  # its typical activation, 2, writes the marker's projection
    save_file({k: v.contiguous() for k, v in w.items()}, str(run / "sae_weights.safetensors"))
    return run


def _cfg(run, corpus, word="owl", **kw):
    base = dict(word=word, run=str(run), corpus=str(corpus), definitions=False, chat=False, corpus_contexts=30,
                controls_per_article=16, top=5, causal_features=3, bootstrap=200, progress=False, device="cpu")
    return FindConfig(**(base | kw))


@pytest.fixture(scope="module")
def owl_report(planted, owl_corpus):
    return find_word(_cfg(planted, owl_corpus))


def test_planted_lookahead_feature_is_found(owl_report):
    rep = owl_report
    assert rep["contexts"]["counts"]["corpus"] >= 20 and rep["contexts"]["check_clusters"] >= 10
    assert rep["answer"]["label"] == "found"
    row = next(c for c in rep["candidates"] if c["feature"] == 7)
    assert row["confirmed"] and row["fires"]["controls"] == 0.0 and row["fires"]["word"] > 0.9
    ca = rep["causal"]["features"]["7"]
    assert ca["ablation_word"] and ca["ablation_article"]  # it carries the word and picks the article
    assert ca["steering_word"]
    assert any(line.startswith("#7 fires before 'an owl'") for line in rep["answer"]["lines"])
    assert any("the lookahead signature" in line for line in rep["answer"]["lines"])
    assert rep["profiles"]["features"]["7"]["onset"] == -1  # the marker sits right before the article
    for c in rep["candidates"]:  # no other latent's ablation moves the word beyond its random features
        if str(c["feature"]) in rep["causal"]["features"] and c["feature"] != 7:
            assert not rep["causal"]["features"][str(c["feature"])]["ablation_word"]


def test_activation_statistics_equal_a_recomputation(owl_report, planner_lm, planted):
    """Activations at -1 recomputed with plain transformers and the SAE's own encode: the
    firing rates and means per group, and the ranking half's van Elteren z from scipy's ranks
    with the permutation mean and variance written out."""
    from scipy.stats import rankdata

    from sae.runs.load import load_sae

    sae = load_sae(planted)
    items = owl_report["contexts"]["items"]
    feats = [c["feature"] for c in owl_report["candidates"]]
    with torch.no_grad():
        acts = np.stack([sae.encode(_residual(planner_lm, it["prompt"])[-1][None])[0].numpy()
                         for it in items]).astype(np.float64)
    assert owl_report["contexts"]["sink_positions"] == 0
    word = np.array([it["role"] == "word" for it in items])
    ctrl = np.array([it["role"] == "control" and it["article"] == "an" for it in items])
    for c in owl_report["candidates"]:
        f = c["feature"]
        assert c["fires"]["word"] == pytest.approx((acts[word, f] > 0).mean())
        assert c["fires"]["controls"] == pytest.approx((acts[ctrl, f] > 0).mean())
        assert c["mean"]["word"] == pytest.approx(acts[word, f].mean(), rel=1e-4, abs=1e-6)

    rank = [i for i, it in enumerate(items) if it["half"] == "rank" and (word[i] or ctrl[i])]
    for f in feats:
        score = np.zeros(len(items))
        for frame in {items[i]["frame"] for i in rank}:
            rows = [i for i in rank if items[i]["frame"] == frame]
            score[rows] = rankdata(acts[rows, f]) / (len(rows) + 1)
        clusters = {}
        for i in rank:
            clusters.setdefault(items[i]["cluster"], []).append(i)
        unit = {k: score[v].mean() for k, v in clusters.items()}
        is_x = {k: items[v[0]]["role"] == "word" for k, v in clusters.items()}
        blocks = {}
        for k, v in clusters.items():  # exchangeable: same origin and the same set of frames
            blocks.setdefault((items[v[0]]["origin"], frozenset(items[i]["frame"] for i in v)), []).append(k)
        t = mean = var = 0.0
        for ks in blocks.values():
            s = np.array([unit[k] for k in ks])
            m = sum(is_x[k] for k in ks)
            if 0 < m < len(ks):
                t += sum(unit[k] for k in ks if is_x[k])
                mean += m * s.mean()
                var += m * (len(ks) - m) / (len(ks) - 1) * s.var()
        want = (t - mean) / np.sqrt(var) if var > 0 else 0.0
        got = next(c for c in owl_report["candidates"] if c["feature"] == f)["discovery"]["z"]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def _logp(lm, ids, edit=None):
    """log-softmax at every position of a plain forward, with `edit(h)` applied to the output
    of block LAYER."""
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


def test_causal_numbers_equal_hand_edits(owl_report, planner_lm, planted):
    """Ablation on the held-out contexts and steering in the neutral frames, redone with a
    forward hook that edits the hidden state by hand before the article only (positions 1 ..
    article - 1): h - a_f(h) W_dec[f] or h + value W_dec[f]; the word's log P is read
    relative to the mean over the alternatives' first tokens; p is the rank among the nulls."""
    from sae.runs.load import load_sae

    sae = load_sae(planted)
    tok = planner_lm.tokenizer
    bos = tok.bos_token_id
    an = tok(" an", add_special_tokens=False)["input_ids"][0]
    owl = tok(" owl", add_special_tokens=False)["input_ids"][0]
    alts = [tok(" " + n, add_special_tokens=False)["input_ids"][0]
            for n in owl_report["causal"]["alternatives"]["nouns"]]
    alts = list(dict.fromkeys(a for a in alts if a != owl))
    assert len(alts) == owl_report["causal"]["alternatives"]["tokens"] >= 2
    f = 7
    ca = owl_report["causal"]["features"]["7"]
    tests = {(t["op"], t["target"]): t for t in ca["tests"]}
    w_dec = sae.sae.W_dec.detach()[f]

    def rel(logp, at):
        return float(logp[at, owl] - logp[at, alts].mean())

    d_word, d_art = [], []
    for it in (i for i in owl_report["contexts"]["items"] if i["half"] == "check" and i["role"] == "word"):
        ids = [bos] + tok(it["prompt"], add_special_tokens=False)["input_ids"] + [an]
        art = len(ids) - 1

        def ablate(h, art=art):
            a = sae.encode(h[0])[:, f]
            out = h.clone()
            out[0, 1:art] -= a[1:art, None] * w_dec
            return out

        clean, edited = _logp(planner_lm, ids), _logp(planner_lm, ids, ablate)
        d_word.append(rel(edited, art) - rel(clean, art))
        d_art.append(float(edited[art - 1, an] - clean[art - 1, an]))
    assert tests[("ablation", "word")]["mean"] == pytest.approx(np.mean(d_word), abs=2e-4)
    assert tests[("ablation", "article")]["mean"] == pytest.approx(np.mean(d_art), abs=2e-4)
    assert tests[("ablation", "word")]["contexts_fired"] == sum(d != 0 for d in d_word)

    value = ca["steer_added"]
    steered = []
    for frame in NEUTRAL_FRAMES:
        ids = [bos] + tok(frame, add_special_tokens=False)["input_ids"] + [an]
        art = len(ids) - 1

        def steer(h, art=art):
            out = h.clone()
            out[0, 1:art] += value * w_dec
            return out

        steered.append(rel(_logp(planner_lm, ids, steer), art) - rel(_logp(planner_lm, ids), art))
    assert tests[("steering", "word")]["mean"] == pytest.approx(np.mean(steered), abs=2e-4)

    t = tests[("ablation", "word")]
    null = t["null_values"]
    assert len(null) == t["n_null"] and 1 / (1 + len(null)) <= t["level"]
    assert t["p"] == pytest.approx((1 + sum(v <= t["mean"] + 1e-12 for v in null)) / (1 + len(null)))
    matched = owl_report["causal"]["random"]["features"]["7"]
    assert f not in matched and len(set(matched)) == len(matched) == len(null)


def test_a_word_without_a_feature_gets_a_null(planted, owl_corpus):
    rep = find_word(_cfg(planted, owl_corpus, word="egg"))
    assert rep["answer"]["label"] == "none"
    rate = rep["power"]["detectable_rate"]  # a null states what it could have seen
    assert rate is not None and f"fires before {rate:.0%} or more of its sources" in rep["answer"]["verdict"]
    assert dict(zip(rep["power"]["rates"], rep["power"]["power"]))[rate] >= 0.8
    line = next(line for line in rep["answer"]["lines"] if line.startswith("No feature fires before 'an egg'"))
    assert f"#{rep['strongest']['feature']}, z = " in line


def test_shuffled_labels_find_nothing(planted, owl_corpus):
    """The same question with the word's and the controls' labels shuffled among comparable
    clusters: the planted feature no longer separates anything."""
    rep = find_word(_cfg(planted, owl_corpus, shuffle_labels=True))
    assert rep["answer"]["label"] in ("none", "inconclusive")
    assert any(line.startswith("Control run") for line in rep["answer"]["lines"])


def test_multi_token_word_from_typed_prompts(planted, owl_corpus, tiny_lm):
    word = "xylophone"
    pieces = tiny_lm.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    rep = find_word(_cfg(planted, owl_corpus, word=word,
                         prompt=["the song of the music was played on", "her music and his song were on",
                                 "in the dark the king played", "the queen and the bird heard"]))
    assert rep["tokens"]["ids"] == pieces
    assert "".join(rep["tokens"]["pieces"]) == " " + word
    assert any(f"is {len(pieces)} tokens" in line for line in rep["answer"]["lines"])
    assert any("never follows a/an in the corpus" in line for line in rep["answer"]["lines"])
    assert rep["contexts"]["counts"] == {"user": 4}
    # four typed prompts, two held out: too few to rule out a feature, so never a bare null
    assert rep["answer"]["label"] in ("inconclusive", "fires, no causal effect", "found")
    assert rep["power"]["detectable_rate"] is None
    assert any(line.startswith("Power: even a feature") for line in rep["answer"]["lines"])


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
                 "--corpus-contexts", "30", "--controls-per-article", "16", "--top", "5", "--causal-features", "3",
                 "--bootstrap", "200", "--progress", "no", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "stored answer" in out  # same settings as the fixture: read from the cache
    assert owl_report["answer"]["lines"][0] in out
    table = out.split("verdict\n", 1)[1].splitlines()
    assert table[0].split()[0] == "7"
    from sae.lookahead.finder import answer_path

    stored = json.loads(answer_path(_cfg(planted, owl_corpus), planted).read_text())
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
    assert any(m.value == f"### {shown['answer']['verdict']}" for m in at.markdown)
    table = at.dataframe[0].value
    row = table[table["feature"] == 7].iloc[0]
    assert row["verdict"] == "not checked" and row["fires (other nouns)"] == 0.0  # no category without definitions
    tests = at.dataframe[2].value  # after the strata
    assert list(tests["feature"]) == [t["feature"] for t in shown["causal"]["tests"]]
    assert (tests["result"] == ["passes" if t["passed"] else "does not pass" if t["reachable"] else
                                "level unreachable" for t in shown["causal"]["tests"]]).all()
    assert any(b.label == "recompute with the settings above" for b in at.button)


def test_chat_forms_need_a_template_and_single_token_articles(tiny_lm):
    import copy

    from sae.data.prompts import chat_prompt
    from sae.lookahead.finder.contexts import Definition, definition_contexts

    tok = copy.deepcopy(tiny_lm.tokenizer)
    riddle = [Definition("A bird that hoots", "owl", "an", "wordnet", "wordnet:1")]
    assert chat_prompt(tok, "What do you call a bird?", "owl", "an") is None  # no template: no chat form
    got = definition_contexts(riddle, "word", tok)
    assert [c.prompt.prompt for c in got] == ["A bird that hoots is called", "A bird that hoots is known as"]
    assert len({c.cluster for c in got}) == 1 and len({c.frame for c in got}) == 2
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert len(tok("An", add_special_tokens=False)["input_ids"]) > 1
    assert len(definition_contexts(riddle, "word", tok)) == 2  # "An" splits here: no chat form, not an error later


@pytest.mark.integration
def test_chat_questions_read_the_capitalised_article(tmp_path):
    """On the default model: a chat-template question ends where the answer starts, the
    articles are "An"/"A" (no space), no second BOS is added, and logit(An) - logit(A)
    equals the plain model's."""
    from sae.data.models import load_model
    from sae.lookahead.finder.contexts import Definition, definition_contexts
    from sae.lookahead.interventions import Intervener, encode_prompts
    from sae.runs.load import load_sae

    lm = load_model("smollm2-135m", device="cpu")
    tok = lm.tokenizer
    chats = [c.prompt for c in definition_contexts([Definition("A person who studies the stars", "astronomer", "an",
                                                                "classic", "hand-written")], "word", tok)
             if c.prompt.condition == "chat"]
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
    the corpus never has after a/an gets riddles and chat questions, and a note that says so;
    its category (noun.person) gives controls of the same article, siblings first."""
    from sae.data.corpus import open_corpus
    from sae.data.models import load_model
    from sae.lookahead.finder.controls import gather

    tok = load_model("smollm2-135m", device="cpu").tokenizer
    wc = gather("xylophonist", tok, open_corpus(str(text_corpus)).documents(), controls_per_article=8)
    counts = wc.counts()
    assert set(counts) == {"riddle", "chat"} and counts["riddle"] >= 2 and counts["chat"] >= 2
    assert any("'xylophonist' never follows a/an in the corpus" in n for n in wc.notes)
    assert all(c.prompt.article == "a" and c.prompt.noun == "xylophonist" for c in wc.contexts)
    assert any(c.prompt.prompt == "Someone who plays a xylophone is called" for c in wc.contexts)
    assert {c.prompt.form for c in wc.contexts if c.prompt.condition == "chat"} == {"A"}
    assert {c.prompt.article for c in wc.controls} == {"a", "an"}
    assert all(c.prompt.noun != "xylophonist" for c in wc.controls)
    assert wc.category["lexname"] == "noun.person" and wc.category["hypernyms"] == ["percussionist"]
    cat = [c for c in wc.controls if c.role == "category"]
    assert cat and all(c.prompt.article == "a" for c in cat)
    riddled = {c.prompt.noun for c in cat if c.prompt.condition == "riddle"}
    assert riddled <= set(wc.category["nouns"][:6]) and wc.category["siblings"][0] in riddled  # siblings first
    clusters = {}
    for c in wc.contexts + wc.controls:  # each definition is one cluster of one role, in frames of its article
        clusters.setdefault(c.cluster, set()).add(c.role)
        assert f"| {c.prompt.article} |" in c.frame
    assert all(len(roles) == 1 for roles in clusters.values())
