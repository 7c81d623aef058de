import pytest
import torch

from sae.data.forward import ResidualReader
from sae.data.models import load_model, parse_hook_point
from sae.errors import SaexError


def test_loads_local_folder(tiny_lm, tiny_model_dir):
    assert tiny_lm.n_layers == 4 and tiny_lm.d_model == 32
    assert tiny_lm.layers_path == "model.layers"
    assert tiny_lm.default_layer == 2
    assert tiny_lm.bos_id == tiny_lm.tokenizer.bos_token_id
    assert len(tiny_lm.weights_sha256) == 64
    # the same folder hashes the same
    assert load_model(str(tiny_model_dir), device="cpu").weights_sha256 == tiny_lm.weights_sha256


@pytest.mark.parametrize("spec,layer", [
    (None, 2), (1, 1), ("3", 3), (-1, 3), ("blocks.1.hook_resid_post", 1),
    ("resid_post.0", 0), ("model.layers.2", 2),
])
def test_hook_point_names(spec, layer):
    hp = parse_hook_point(spec, 4, "model.layers")
    assert hp.layer == layer
    assert hp.module_path == f"model.layers.{layer}"
    assert hp.name == f"blocks.{layer}.hook_resid_post"


@pytest.mark.parametrize("spec", [4, "-5", "blocks.9.hook_resid_post", "attn.2", "model.layers.x"])
def test_bad_hook_points_name_the_range(spec):
    with pytest.raises(SaexError) as e:
        parse_hook_point(spec, 4, "model.layers")
    assert "0" in str(e.value) and "3" in str(e.value)


def _ids(lm, n=3, t=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, lm.tokenizer.vocab_size, (n, t), generator=g)
    ids[:, 0] = lm.bos_id
    return ids


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_fp32_equals_output_hidden_states(tiny_lm, layer):
    ids = _ids(tiny_lm)
    with torch.no_grad():
        ref = tiny_lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    if layer == tiny_lm.n_layers - 1:
        # transformers applies the final norm to the last entry of hidden_states:
        # compare with the last block's raw output instead
        box = {}
        h = tiny_lm.layers[layer].register_forward_hook(
            lambda m, i, o: box.setdefault("h", o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            tiny_lm.model(input_ids=ids)
        h.remove()
        ref = box["h"]
    reader = ResidualReader(tiny_lm, tiny_lm.hook_point(layer), precision="fp32")
    assert reader.path == "truncated"
    got = reader(ids)
    assert got.shape == (3, 24, 32) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_no_block_after_the_hook_runs(tiny_lm):
    calls = []
    handles = [blk.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
               for k, blk in enumerate(tiny_lm.layers)]
    head = tiny_lm.model.lm_head.register_forward_hook(lambda m, i, o: calls.append("lm_head"))
    try:
        reader = ResidualReader(tiny_lm, tiny_lm.hook_point(1), precision="fp32")
        calls.clear()
        reader(_ids(tiny_lm))
    finally:
        for h in handles + [head]:
            h.remove()
    assert calls == [0, 1]


def test_generic_path_matches_fast_path(tiny_lm):
    from sae.data.forward import _stop_at_layer_forward, _truncated_forward

    hp = tiny_lm.hook_point(2)
    ids = _ids(tiny_lm)
    with torch.no_grad():
        torch.testing.assert_close(_stop_at_layer_forward(tiny_lm, hp)(ids), _truncated_forward(tiny_lm, hp)(ids))


def test_bf16_is_close_and_auto_picks_it(tiny_lm, monkeypatch):
    monkeypatch.setenv("SAEX_FAST_BF16", "1")  # the accuracy check decides only where bf16 is fast
    ids = _ids(tiny_lm, n=4, t=32)
    ref = ResidualReader(tiny_lm, tiny_lm.hook_point(2), precision="fp32")(ids)
    auto = ResidualReader(tiny_lm, tiny_lm.hook_point(2), precision="auto", calibration_ids=ids)
    assert auto.precision == "bf16" and 0 < auto.bf16_error < 0.02
    got = auto(ids)
    rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert 0 < rel.median() < 0.02


def test_unknown_model_spec_is_one_clear_error():
    with pytest.raises(SaexError, match="unknown model spec 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model", device="cpu")


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(SaexError, match="does not exist"):
        load_model(str(tmp_path / "nope.gguf"), device="cpu")
    with pytest.raises(SaexError, match="does not exist"):
        load_model(str(tmp_path / "missing-folder") + "/", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SaexError, match="could not load the model folder"):
        load_model(str(empty), device="cpu")


def test_cuda_request_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SaexError, match="no CUDA GPU"):
        load_model("anything", device="cuda")


def test_bf16_weight_copies_match_plain_autocast(tiny_lm):
    from sae.data.forward import _stop_at_layer_forward

    ids = _ids(tiny_lm, n=2, t=16)
    hp = tiny_lm.hook_point(3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _stop_at_layer_forward(tiny_lm, hp)(ids).float()
    reader = ResidualReader(tiny_lm, hp, precision="bf16")
    torch.testing.assert_close(reader(ids), ref, rtol=1e-3, atol=1e-3)
    # the model itself keeps its fp32 weights
    assert all(p.dtype == torch.float32 for p in tiny_lm.model.parameters())


def test_compiled_reader_matches_eager(tiny_lm):
    ids = _ids(tiny_lm, n=2, t=16)
    eager = ResidualReader(tiny_lm, tiny_lm.hook_point(2), precision="fp32")
    compiled = ResidualReader(tiny_lm, tiny_lm.hook_point(2), precision="fp32", compile=True)
    assert compiled.compiled
    torch.testing.assert_close(compiled(ids), eager(ids), rtol=1e-4, atol=1e-4)
