"""`saex depth`: a direction planted after one block of the tiny model is found there (lens,
probe, causal projection) and not before it; the probe split never puts a noun on both
sides; the lens at the last layer equals plain transformers' logits; probes against hand-made
data; the command end to end with an SAE, report reuse and the explorer page's inputs."""

import json
import random

import pytest
import torch

from sae.data.prompts import Prompt, split_of_noun
from sae.errors import SaexError
from sae.lookahead.depth import (
    DepthConfig,
    LayerReader,
    binomial_p,
    depth_prompts,
    fit_probes,
    frame_prompts,
    layer_table,
    run_depth,
)
from saex.cli import main
from tests.conftest import WORDS
from tests.helpers import added_after_block

PLANT_LAYER = 2
FILLERS = "the of to and in is was for on with as by at from that this it his her their".split()


def _nouns(tok) -> list[str]:
    return [w for w in WORDS if w not in FILLERS and w not in ("a", "an")
            and len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]


def _prompt_file(path, tok) -> tuple[list[str], dict[str, str]]:
    """Every noun in three frames: random filler words, then the noun (the last prompt token).
    Articles alternate within each half of the nouns, so both halves hold both."""
    nouns, art = _nouns(tok), {}
    for half in ("select", "test"):
        for i, n in enumerate(x for x in nouns if split_of_noun(x) == half):
            art[n] = "an" if i % 2 == 0 else "a"
    rng = random.Random(0)
    rows = []
    for n in nouns:
        for f in ("f1", "f2", "f3"):
            prefix = " ".join(rng.choice(FILLERS) for _ in range(rng.randint(4, 8))).capitalize()
            rows.append({"prompt": f"{prefix} {n}", "noun": n, "article": art[n], "condition": f})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return nouns, art


@pytest.fixture
def planted(tiny_lm, tmp_path):
    """After block PLANT_LAYER, add a vector along unembed(an) - unembed(a) at the positions
    of an-nouns' tokens (which end their prompts): the article becomes readable there, and
    only from there on; blocks before it never see it."""
    tok = tiny_lm.tokenizer
    nouns, art = _prompt_file(tmp_path / "p.jsonl", tok)
    an_ids = torch.tensor([tok(" " + n, add_special_tokens=False)["input_ids"][0] for n in nouns if art[n] == "an"])
    w = tiny_lm.model.get_output_embeddings().weight.detach()
    a_id, an_id = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" a", " an"))
    v = w[an_id] - w[a_id]
    v = v / v.norm()
    with added_after_block(tiny_lm, PLANT_LAYER, lambda ids, h: torch.isin(ids, an_ids)[..., None].float() * v):
        yield tmp_path / "p.jsonl"


def test_planted_direction_is_found_at_its_layer_and_not_before(planted, tiny_lm, tmp_path):
    cfg = DepthConfig(model="tiny", layers="all", prompts=str(planted), out=str(tmp_path / "out"),
                      random_directions=20, device="cpu", progress=False)
    r = run_depth(cfg, lm=tiny_lm)
    assert r["layers"] == [0, 1, 2, 3]
    probe = {L: r["article_probe"][str(L)]["-1"] for L in r["layers"]}
    lens = {L: r["lens"][str(L)] for L in r["layers"]}
    causal = {L: r["causal"][str(L)] for L in r["layers"]}
    for L in (0, 1):  # before the plant: nothing about the article in the residual
        assert not probe[L]["above_chance"] and probe[L]["accuracy"] < 0.75
        assert lens[L]["ci"][0] < 0 < lens[L]["ci"][1]
        assert abs(causal[L]["fraction_removed"]) < 0.1
    for L in (PLANT_LAYER, 3):
        assert probe[L]["above_chance"] and probe[L]["accuracy"] > 0.95 and probe[L]["control_mean"] < 0.75
        assert lens[L]["ci"][0] > 0.3
    c = causal[PLANT_LAYER]
    assert c["fraction_removed"] > 0.4 and c["random"]["z"] > 3 and c["random"]["p_permutation"] < 0.05
    assert c["random"]["fraction_removed_mean"] < 0.15
    # earlier offsets hold filler words, never the planted token
    assert not any(v["above_chance"] for L in r["layers"] for o, v in r["article_probe"][str(L)].items() if o != "-1")
    assert any("decodable above chance from layer 2 at offset -1" in line for line in r.answer.lines)
    # the verdict: readable at -1 from the planted layer, not before it
    assert r.answer.label == "at_minus1" and "from layer 2" in r.answer.verdict
    assert r.kind == "depth" and r.path == tmp_path / "out" / "report.json"
    assert (tmp_path / "out" / "depth.png").stat().st_size > 0
    rows = layer_table(r)
    assert [row["layer"] for row in rows] == [0, 1, 2, 3] and rows[2]["article acc @-1"] > 0.95
    # rerun with the same settings: the report is reused as it is
    assert run_depth(cfg, lm=tiny_lm)["seconds"] == r["seconds"]


def test_probe_split_never_shares_a_noun(tiny_lm, tmp_path):
    _prompt_file(tmp_path / "p.jsonl", tiny_lm.tokenizer)
    ps = depth_prompts(DepthConfig(prompts=str(tmp_path / "p.jsonl")), tiny_lm.tokenizer)
    train, test = {p.noun for p in ps.train}, {p.noun for p in ps.test}
    assert train and test and not train & test
    assert all(split_of_noun(n) == "select" for n in train) and all(split_of_noun(n) == "test" for n in test)
    # identity: every noun in its three frames plus the explicit prompt
    frames = {}
    for p in ps.identity:
        frames.setdefault(p.noun, set()).add(p.condition)
    assert all(f == {"f1", "f2", "f3", "explicit"} for f in frames.values())


def test_frames_of_a_riddle():
    riddle = Prompt("A physicist who studies astronomy is called", "astronomer", "an", "riddle")
    ps = frame_prompts(riddle, "a physicist who studies astronomy")
    assert [p.condition for p in ps] == ["riddle", "question", "dialogue", "in_context", "explicit",
                                         "named_question", "named_dialogue"]
    assert all(p.noun == "astronomer" and p.article == "an" for p in ps)
    for p in ps:  # implied frames never name the noun, named ones never hold the gloss
        assert ("astronomer" in p.prompt) == (p.condition in ("in_context", "explicit", "named_question",
                                                              "named_dialogue"))
        assert ("studies astronomy" in p.prompt) == (p.condition in ("riddle", "question", "dialogue", "in_context"))


def test_lens_at_the_last_layer_equals_transformers_logits(tiny_lm):
    tok = tiny_lm.tokenizer
    last = tiny_lm.n_layers - 1
    reader = LayerReader(tiny_lm, [1, last])
    ids = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
           for t in ("the cat was", "the king of the river is", "her dog", "his book of music and the")]
    feats, valid, ld = reader.read(ids, 3)
    a_id, an_id = reader.a_id, reader.an_id
    for i, x in enumerate(ids):
        with torch.no_grad():
            logits = tiny_lm.model(input_ids=torch.tensor([x])).logits[0, -1]
        want = float(logits[an_id] - logits[a_id])
        assert float(reader.lens(feats[i, 1, -1])) == pytest.approx(want, abs=1e-4)
        assert float(ld[i]) == pytest.approx(want, abs=1e-4)
        assert valid[i].tolist() == [len(x) - 1 >= 3 - j for j in range(3)]
    # the cached last-token rerun with the clean residual gives the same output
    repl = feats[:, 0, -1][:, None].expand(-1, 2, -1).clone()
    assert torch.allclose(reader.rerun_last(ids, 1, repl), ld[:, None].expand(-1, 2), atol=1e-4)


def test_probes_on_hand_made_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 40, generator=g)
    y = (x[:, 3] > 0).long()
    groups = [str(i // 2) for i in range(240)]
    real, shuffled = fit_probes(x, [y, y[torch.randperm(240, generator=g)]], groups, 2)
    xt = torch.randn(200, 40, generator=g)
    assert (real.predict(xt) == (xt[:, 3] > 0).long()).float().mean() > 0.85
    assert (shuffled.predict(xt) == (xt[:, 3] > 0).long()).float().mean() < 0.75
    assert real.direction().abs().argmax() == 3
    yk = torch.arange(60) % 3
    xk = torch.nn.functional.one_hot(yk, 40).float() * 3 + 0.3 * torch.randn(60, 40, generator=g)
    (multi,) = fit_probes(xk, [yk], [str(i % 4) for i in range(60)], 3, folds=4)
    assert bool((multi.predict(xk) == yk).all())
    assert binomial_p(10, 10, 0.5) == pytest.approx(2 ** -10) and binomial_p(0, 10, 0.5) == pytest.approx(1.0)


def test_depth_command_with_an_sae(run_dir, tiny_model_dir, tiny_lm, tmp_path, capsys):
    """The CLI end to end with the tiny model's SAE at block 1 (tests/helpers.py); and bad input."""
    _prompt_file(tmp_path / "p.jsonl", tiny_lm.tokenizer)
    out = tmp_path / "d"
    rc = main(["depth", "--run", str(run_dir), "--model", str(tiny_model_dir), "--layers", "0,2",
               "--prompts", str(tmp_path / "p.jsonl"), "--out", str(out), "--random-directions", "20",
               "--sae-features", "3", "--progress", "no", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    r = json.loads((out / "report.json").read_text())
    assert r["layers"] == [0, 1, 2]  # the SAE's layer joins the sweep
    assert "1" in r["sae"] and len(r["sae"]["1"]["features"]) == 3 and r["sae"]["1"]["random"]["n"] == 20
    assert "SAE at layer 1" in printed and "report:" in printed
    stamp = (out / "report.json").stat().st_mtime_ns
    args = ["depth", "--run", str(run_dir), "--model", str(tiny_model_dir), "--layers", "0,2", "--prompts",
            str(tmp_path / "p.jsonl"), "--out", str(out), "--random-directions", "20", "--sae-features", "3",
            "--progress", "no", "--device", "cpu"]
    assert main(args) == 0 and (out / "report.json").stat().st_mtime_ns == stamp  # same settings: reused
    assert main(args + ["--force", "yes"]) == 0 and (out / "report.json").stat().st_mtime_ns > stamp
    assert json.loads((out / "report.json").read_text())["lens"] == r["lens"]  # recomputed, same numbers
    assert main(["depth", "--model", str(tiny_model_dir), "--layers", "0,9", "--prompts", str(tmp_path / "p.jsonl"),
                 "--out", str(tmp_path / "e")]) == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(SaexError, match="random_directions"):
        DepthConfig(random_directions=3)


@pytest.fixture
def run_dir(tiny_lm, tmp_path):
    from tests.helpers import save_sae

    return save_sae(tmp_path / "run", tiny_lm)


@pytest.mark.integration
def test_depth_page(monkeypatch, tiny_lm, tmp_path):
    """The explorer's Depth page: the command when there is no report, the answer lines and the table after."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("SAEX_CHECKPOINTS", str(root))
    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "ann.sqlite"))
    app = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.switch_page("views/depth.py").run()
    assert not at.exception and any(c.value == "saex depth" for c in at.code)
    _prompt_file(tmp_path / "p.jsonl", tiny_lm.tokenizer)
    r = run_depth(DepthConfig(model="tiny", layers="0,2", prompts=str(tmp_path / "p.jsonl"),
                              out=str(root / "depth-tiny"), random_directions=20, device="cpu", progress=False),
                  lm=tiny_lm)
    at.switch_page("views/depth.py").run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown)
    assert r.answer.lines[0] in shown and len(at.dataframe) >= 1
    assert [i.value for i in at.info] == [r.answer.verdict]


def test_lens_alone_does_not_make_the_article_readable():
    """A logit-lens gap with no probe above its shuffled control on held-out nouns is inconclusive
    (measured: a shuffled-article model shows a lens gap at layer 25 and none at its output)."""
    from sae.lookahead.depth import depth_answer

    gap = {"value": 1.3, "ci": [0.8, 1.8], "n_an": 48, "n_a": 48}
    chance = {"-1": {"above_chance": False, "accuracy": 0.51, "p_binomial": 0.4, "control_mean": 0.5}}
    r = {"layers": [20, 25], "offsets": [-1], "output": dict(gap, value=0.07, ci=[-0.1, 0.2]),
         "lens": {"20": dict(gap, ci=[-0.2, 0.3]), "25": gap}, "article_probe": {"20": chance, "25": chance}}
    a = depth_answer(r)
    assert a["label"] == "lens_only" and "Inconclusive" in a["verdict"] and "layer 25" in a["verdict"]
    r["article_probe"]["25"] = {"-1": dict(chance["-1"], above_chance=True, accuracy=0.66, ci=[0.55, 0.75],
                                           n_test=96)}
    a = depth_answer(r)
    assert a["label"] == "at_minus1" and "from layer 25" in a["verdict"]
