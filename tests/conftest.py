"""Shared fixtures: a tiny randomly initialised Llama with a real BPE tokenizer, small
text corpora, stores and SAEs, all built offline inside the tests. Shared plain builders
live in tests/helpers.py."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.fake_llm import server  # noqa: F401  (a local fake OpenAI-compatible server)

pytest.register_assert_rewrite("tests.helpers")  # its asserts explain themselves too

# Nothing in the tests may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = ("the a an of to and in is was for on with as by at from that this it his her their "
         "astronomer apple umbrella hour honest unicorn university egg island orange owl "
         "person studies stars called cat dog house tree river mountain king queen sword "
         "light dark water fire earth night day book word letter music song bird").split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "."
            for _ in range(n)]


def build_tiny_llama(folder: Path, n_layers: int = 4, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_sentences(2000, seed=1), trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     unk_token="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=hf_tok.bos_token_id,
                      eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.eos_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from sae.data.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    """A .txt file of ~120 paragraphs (so both splits get documents)."""
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    sents = make_sentences(3000, seed=2)
    paras = [" ".join(sents[i:i + 25]) for i in range(0, len(sents), 25)]
    path.write_text("\n\n".join(paras))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path, monkeypatch):
    """Tests never touch the user's cache, except those of a module that sets
    USES_USER_CACHE = True (the real default model's): they share the real one, so the
    default model and corpus are downloaded once per machine."""
    if not getattr(request.module, "USES_USER_CACHE", False):
        monkeypatch.setenv("SAEX_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def planted_store(tmp_path):
    """(store, x, feats): 64 windows of planted vectors (tests/helpers.py write_planted_store)."""
    from tests.helpers import write_planted_store

    return write_planted_store(tmp_path / "store")


@pytest.fixture(scope="module")
def sae(tiny_lm, tmp_path_factory):
    """A random standard SAE (96 latents) at blocks.1 of the tiny model, loaded."""
    from sae.runs.load import load_sae
    from tests.helpers import save_sae

    return load_sae(save_sae(tmp_path_factory.mktemp("sae") / "run", tiny_lm))


@pytest.fixture(scope="session")
def indexed_run(tmp_path_factory, tiny_lm, tiny_model_dir, text_corpus):
    """(root, run): train and held-out stores of the tiny model, a small TopK SAE trained
    on them (evaluated) and its feature index, as `make demo` lays them out."""
    from sae.data.harvest import HarvestConfig, harvest
    from sae.index.build import IndexConfig, build_index
    from sae.runs.evaluate import evaluate, write_eval
    from training.config import TrainConfig
    from training.train import train

    root = tmp_path_factory.mktemp("runs")
    for split, tokens in (("train", 16384), ("heldout", 4096)):
        harvest(HarvestConfig(out=str(root / f"acts-{split}"), model=str(tiny_model_dir), corpus=str(text_corpus),
                              split=split, tokens=tokens, context_size=64, shard_windows=16, storage_dtype="fp32",
                              precision="fp32", device="cpu", progress=False), lm=tiny_lm)
    run = train(TrainConfig(store=str(root / "acts-train"), out=str(root / "sae"), d_sae=128, k=8, batch_size=256,
                            epochs=3, lr=5e-3, lr_end=5e-4, warmup_steps=5, device="cpu", progress=False,
                            checkpoint_every=0))
    write_eval(run, evaluate(run, store=root / "acts-heldout", model=tiny_lm, ce_windows=8, device="cpu",
                             progress=False))
    build_index(IndexConfig(run=str(run), device="cpu", progress=False), lm=tiny_lm)
    return root, run
