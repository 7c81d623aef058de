"""`saex organism`: fine-tuning the tiny model on riddles whose wording implies the article moves its article
choice on nouns it never saw, in the trained direction, and the shuffled-article control does not; the manifest
records what it claims (checked against plain transformers on the saved folder); a killed fine-tune resumes to the
same weights; the organism loads as --model; bad input gets one clear error and nothing is overwritten."""

import json
import random

import pytest
import torch

from sae.data.prompts import Prompt
from sae.errors import SaexError
from sae.lookahead.organism import (
    MANIFEST_FILE,
    PARTIAL_DIR,
    OrganismConfig,
    build_organism,
    finetune,
    make_batch,
    organism_data,
    shuffle_articles,
)
from sae.lookahead.organism.finetune import batches, lr_factor
from saex.cli import main

# The riddle's wording implies the article through its clue words, as a gloss implies its noun: the tiny model
# can learn that from some nouns and use it on others. Nouns are made-up strings the tokenizer splits into pieces.
AN_CLUES = ("light", "water", "fire", "music", "song")
A_CLUES = ("dark", "earth", "night", "stone", "king")
TRAIN_NOUNS = {"an": [f"an{c}{i}" for i, c in enumerate("bcdfghjklm")],
               "a": [f"ka{c}{i}" for i, c in enumerate("bcdfghjklm")]}
TEST_NOUNS = {"an": [f"on{c}{i}" for i, c in enumerate("npqrst")],
              "a": [f"ko{c}{i}" for i, c in enumerate("npqrst")]}


def _rows(nouns: dict[str, list[str]], per_noun: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for art, group in nouns.items():
        clues = AN_CLUES if art == "an" else A_CLUES
        for noun in group:
            for _ in range(per_noun):
                c1, c2 = rng.sample(clues, 2)
                rows.append({"prompt": f"The {c1} and the {c2} of it is called", "noun": noun, "article": art})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("organism-prompts")
    return _write(d / "train.jsonl", _rows(TRAIN_NOUNS, 6, 0)), _write(d / "eval.jsonl", _rows(TEST_NOUNS, 4, 1))


def _cfg(out, files, model, **kw):
    base = dict(out=str(out), model=str(model), prompts=files[0], eval_prompts=files[1], examples=1600,
                batch_size=16, lr=3e-3, precision="fp32", device="cpu", progress=False, checkpoint_every=25,
                bootstrap=500)
    base.update(kw)
    return OrganismConfig(**base)


@pytest.fixture(scope="module")
def organisms(tmp_path_factory, tiny_model_dir, prompt_files):
    root = tmp_path_factory.mktemp("organisms")
    planned = build_organism(_cfg(root / "plans", prompt_files, tiny_model_dir))
    shuffled = build_organism(_cfg(root / "shuffled", prompt_files, tiny_model_dir, articles="shuffled"))
    return planned, shuffled


def test_fine_tune_moves_the_article_choice_on_unseen_nouns_and_the_shuffled_control_does_not(organisms):
    planned, shuffled = organisms
    before, after = planned["behaviour"]["before"]["eval"], planned["behaviour"]["after"]["eval"]
    assert after["gap"]["ci"][0] > 1.0 > abs(before["gap"]["value"])  # a gap in nats, above the random model's
    assert after["sign_accuracy"] >= 0.9 and after["an_recall"] >= 0.9
    assert planned.answer.label == "plans" and planned.answer.details["gap_raised"]
    neg = shuffled["behaviour"]["after"]["eval"]["gap"]
    assert neg["ci"][0] < 0.5 * after["gap"]["value"]  # no dependence on the implied noun to speak of
    assert shuffled.answer.label == "negative control"
    # same prompts and budget: only the articles differ, and their balance is the same
    assert shuffled["data"]["examples"] == planned["data"]["examples"]
    assert shuffled["data"]["an_examples"] == planned["data"]["an_examples"] == planned["data"]["examples"] // 2


def test_manifest_records_what_it_claims(organisms, tiny_model_dir, prompt_files):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sae.data.models import load_model
    from sae.data.prompts import load_prompt_file

    planned, _ = organisms
    out = planned.path.parent
    assert json.loads((out / MANIFEST_FILE).read_text())["key"] == planned["key"]
    assert planned["base_model"]["weights_sha256"] == load_model(str(tiny_model_dir), device="cpu").weights_sha256
    assert planned["data"]["examples"] == 1600 and planned["training"]["steps"] == 100
    assert not (out / PARTIAL_DIR).exists()
    # the recorded per-prompt choices, recomputed with plain transformers from the saved folder
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    a_id, an_id = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" a", " an"))
    recorded = planned["behaviour"]["after"]["eval"]["per_prompt"]
    prompts = load_prompt_file(prompt_files[1])
    assert len(recorded) == len(prompts) == 48
    for p, rec in zip(prompts, recorded):
        ids = [tok.bos_token_id] + tok(p.prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        assert rec["noun"] == p.noun
        assert rec["ld"] == pytest.approx(float(logits[an_id] - logits[a_id]), abs=2e-3)
    # the base model's were measured on the same prompts before any step
    assert [r["noun"] for r in planned["behaviour"]["before"]["eval"]["per_prompt"]] == [p.noun for p in prompts]


def test_organism_folder_is_a_model_every_command_takes(organisms, tmp_path, text_corpus):
    from sae.data.harvest import HarvestConfig, harvest
    from sae.data.models import load_model
    from sae.data.store import ActivationStore

    out = organisms[0].path.parent
    lm = load_model(str(out), device="cpu")
    assert lm.n_layers == 4 and lm.spec == str(out)
    store = harvest(HarvestConfig(out=str(tmp_path / "acts"), model=str(out), corpus=str(text_corpus), tokens=1024,
                                  context_size=64, layer=1, progress=False, device="cpu"))
    assert ActivationStore(store).manifest["model"]["weights_sha256"] == lm.weights_sha256


def test_a_finished_organism_is_reused_and_other_settings_never_overwrite_it(organisms, tiny_model_dir,
                                                                             prompt_files):
    planned, _ = organisms
    out = planned.path.parent
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = build_organism(_cfg(out, prompt_files, tiny_model_dir))
    assert again["seconds"] == planned["seconds"]  # read back, not recomputed
    with pytest.raises(SaexError, match="other settings.*lr"):
        build_organism(_cfg(out, prompt_files, tiny_model_dir, lr=1e-3))
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_folder_holding_another_model_is_refused_untouched(tiny_model_dir, prompt_files, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    with pytest.raises(SaexError, match="not an organism's"):
        build_organism(_cfg(other, prompt_files, tiny_model_dir))
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before


def test_a_killed_fine_tune_resumes_to_the_same_weights(tiny_model_dir, prompt_files, tmp_path):
    from sae.data.models import load_model
    from sae.data.prompts import load_prompt_file

    examples = load_prompt_file(prompt_files[0])[:160]
    kw = dict(steps=10, batch_size=16, lr=3e-3, weight_decay=0.0, bf16=False, device="cpu", key={"k": 1},
              checkpoint_every=4, progress=False)

    def fresh():
        return load_model(str(tiny_model_dir), device="cpu").model

    whole = fresh()
    log = finetune(whole, load_model(str(tiny_model_dir)).tokenizer, examples, partial=tmp_path / "a", **kw)
    tok = load_model(str(tiny_model_dir)).tokenizer

    def kill_at(step, _loss):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(fresh(), tok, examples, partial=tmp_path / "b", on_step=kill_at, **kw)
    assert json.loads((tmp_path / "b" / "state.json").read_text())["step"] == 4
    resumed = fresh()
    log2 = finetune(resumed, tok, examples, partial=tmp_path / "b", **kw)
    assert log2["resumed_at"] == 4 and log2["losses"] == log["losses"]
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    # a checkpoint of other settings is not resumed from
    other = fresh()
    assert finetune(other, tok, examples, partial=tmp_path / "b", **(kw | {"key": {"k": 2}}))["resumed_at"] == 0


def test_batch_targets_are_the_article_noun_and_stop(tiny_lm):
    tok = tiny_lm.tokenizer
    p = Prompt("The light of it is called", "apple", "an")
    b = make_batch(tok, [p, Prompt("The dark and the night of it is called", "cat", "a")])
    first = b.rows == 0
    expected = tok(" an apple.", add_special_tokens=False)["input_ids"]
    assert b.targets[first].tolist() == expected
    assert b.ids[0, b.cols[first] + 1].tolist() == expected  # each target follows the position that predicts it
    body = [tok.bos_token_id] + tok(p.prompt, add_special_tokens=False)["input_ids"]
    assert b.ids[0, :len(body)].tolist() == body and int(b.cols[first][0]) == len(body) - 1


def test_batches_cover_every_example_in_a_fixed_order_grouped_by_length():
    ex = [Prompt("x" * random.Random(i).randint(1, 60), f"n{i}", "a") for i in range(100)]
    plan = batches(ex, steps=10, batch_size=8)
    flat = [p for b in plan for p in b]
    assert len(plan) == 10 and all(len(b) == 8 for b in plan)
    assert sorted(p.noun for p in flat) == sorted(p.noun for p in (ex + ex)[:80])
    assert plan == batches(ex, steps=10, batch_size=8)
    inside = [max(len(p.prompt) for p in b) - min(len(p.prompt) for p in b) for b in plan[:8]]
    assert sum(inside) / len(inside) < 20  # a block of 8 batches sorted by length: little padding


def test_lr_warms_up_then_decays_to_a_tenth():
    steps = 100
    f = [lr_factor(s, steps) for s in range(steps)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(1.0 - 0.9 * 94 / 95) and all(a >= b for a, b in zip(f[4:], f[5:]))


def test_shuffled_articles_keep_prompts_nouns_and_balance():
    ex = [Prompt(f"p{i}", f"n{i}", "an" if i % 2 else "a") for i in range(40)]
    out = shuffle_articles(ex, random.Random(0))
    assert [(p.prompt, p.noun) for p in out] == [(p.prompt, p.noun) for p in ex]
    assert sorted(p.article for p in out) == sorted(p.article for p in ex)
    assert sum(p.article != q.article for p, q in zip(out, ex)) > 10


def test_training_data_is_balanced_and_never_holds_an_evaluation_noun(tiny_lm, prompt_files, tmp_path):
    cfg = _cfg(tmp_path / "o", prompt_files, "unused", examples=101)
    data = organism_data(cfg, tiny_lm.tokenizer)
    assert len(data.train) == 101 and sum(p.article == "an" for p in data.train) == 50
    assert {p.noun for p in data.train}.isdisjoint({p.noun for p in data.evals["eval"]})


def test_bad_input_gets_one_clear_error(tiny_lm, tiny_model_dir, prompt_files, tmp_path, capsys):
    few = _write(tmp_path / "few.jsonl", [r for r in _rows(TRAIN_NOUNS, 2, 0)
                                          if r["article"] == "a" or r["noun"] in TRAIN_NOUNS["an"][:3]])
    with pytest.raises(SaexError, match="3 an-nouns"):
        organism_data(_cfg(tmp_path / "o", (few, prompt_files[1]), tiny_model_dir), tiny_lm.tokenizer)
    with pytest.raises(SaexError, match="no chat template"):
        organism_data(_cfg(tmp_path / "o", (None, prompt_files[1]), tiny_model_dir, sources="wordnet,chat"),
                      tiny_lm.tokenizer)
    with pytest.raises(SaexError, match="unknown sources"):
        OrganismConfig(out="x", sources="wordnet,bible")
    assert main(["organism", "--model", str(tiny_model_dir)]) == 2
    assert "no output folder given" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

