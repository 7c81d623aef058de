"""Multi-layer harvest (`--layer 0,2,3` / `all`): one forward pass, one complete store per
layer whose files equal a single-layer harvest of that layer; readers get a clear error
naming the layers when given the top folder."""

import json

import numpy as np
import pytest
import torch

from sae.data.harvest import HarvestConfig, harvest
from sae.data.models import parse_layers
from sae.data.store import ActivationStore, layer_store_path, store_summary
from sae.errors import SaexError
from saex.cli import main


def _cfg(out, model_dir, corpus, **kw):
    base = dict(out=str(out), model=str(model_dir), corpus=str(corpus), tokens=16 * 20, context_size=16,
                shard_windows=8, batch_size=4, device="cpu", progress=False, compile="no", storage_dtype="fp32",
                precision="fp32")
    base.update(kw)
    return HarvestConfig(**base)


def test_parse_layers():
    assert parse_layers("15", 30, "model.layers") is None and parse_layers(None, 30, "model.layers") is None
    assert [h.layer for h in parse_layers("20, 5,blocks.10.hook_resid_post,5", 30, "model.layers")] == [5, 10, 20]
    assert [h.layer for h in parse_layers("all", 4, "model.layers")] == [0, 1, 2, 3]
    assert [h.layer for h in parse_layers("1,-1", 4, "model.layers")] == [1, 3]
    with pytest.raises(SaexError, match="out of range"):
        parse_layers("1,9", 4, "model.layers")


def test_multi_layer_stores_equal_single_layer_harvests(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    out = harvest(_cfg(tmp_path / "multi", tiny_model_dir, text_corpus, layer="2,0,3"), lm=tiny_lm)
    doc = json.loads((out / "layers.json").read_text())
    assert doc["layers"] == [0, 2, 3] and doc["stores"] == {"0": "layer-00", "2": "layer-02", "3": "layer-03"}
    for layer in (0, 2, 3):
        single = harvest(_cfg(tmp_path / f"single-{layer}", tiny_model_dir, text_corpus, layer=layer), lm=tiny_lm)
        a, b = ActivationStore(out / f"layer-{layer:02d}"), ActivationStore(single)
        assert a.manifest["hook"]["layer"] == layer and a.manifest["config"]["layer"] == layer
        assert a.n_shards == b.n_shards == 3
        for k in range(a.n_shards):
            assert torch.equal(a.acts(k), b.acts(k)) and torch.equal(a.flags(k), b.flags(k))
            assert torch.equal(a.tokens(k), b.tokens(k))
        assert np.array_equal(np.load(a.path / "tokens.npy"), np.load(b.path / "tokens.npy"))
        same = {"config", "hook", "outlier_threshold", "n_usable", "n_outliers", "n_special", "shards", "n_windows"}
        assert {k: a.manifest[k] for k in same} == {k: b.manifest[k] for k in same}
    # the layers really differ (not one layer copied three times)
    assert not torch.equal(ActivationStore(out / "layer-00").acts(0), ActivationStore(out / "layer-03").acts(0))
    # rerun: complete, nothing rewritten; other settings: refused
    before = (out / "layer-02" / "manifest.json").stat().st_mtime_ns
    harvest(_cfg(tmp_path / "multi", tiny_model_dir, text_corpus, layer="0,2,3"), lm=tiny_lm)
    assert (out / "layer-02" / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(SaexError, match="other settings"):
        harvest(_cfg(tmp_path / "multi", tiny_model_dir, text_corpus, layer="0,2,3", tokens=16 * 24), lm=tiny_lm)


def test_readers_name_the_layers_of_a_multi_layer_store(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    out = harvest(_cfg(tmp_path / "m", tiny_model_dir, text_corpus, layer="all", tokens=16 * 8), lm=tiny_lm)
    with pytest.raises(SaexError, match=r"one activation store per layer \(layers 0, 1, 2, 3\)") as e:
        ActivationStore(out)
    assert "layer-00" in e.value.fix
    assert layer_store_path(out, 2) == out / "layer-02"
    with pytest.raises(SaexError, match="no store of layer 7"):
        layer_store_path(out, 7)
    assert store_summary(out).count("\n") == 3 and "blocks.3.hook_resid_post" in store_summary(out)
    # training reads a layer's subfolder like any store
    from training.config import TrainConfig
    from training.train import train

    with pytest.raises(SaexError, match="one activation store per layer"):
        train(TrainConfig(store=str(out), out=str(tmp_path / "run"), d_sae=16, k=2, device="cpu", progress=False))
    run = train(TrainConfig(store=str(out / "layer-01"), out=str(tmp_path / "run"), d_sae=16, k=2, batch_size=32,
                            device="cpu", progress=False, checkpoint_every=0))
    assert json.loads((run / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.1.hook_resid_post"


def test_multi_layer_harvest_refuses_a_single_layer_store_and_vice_versa(tmp_path, tiny_lm, tiny_model_dir,
                                                                          text_corpus):
    single = harvest(_cfg(tmp_path / "s", tiny_model_dir, text_corpus, tokens=16 * 8), lm=tiny_lm)
    with pytest.raises(SaexError, match="holds a single-layer activation store"):
        harvest(_cfg(single, tiny_model_dir, text_corpus, layer="0,1", tokens=16 * 8), lm=tiny_lm)
    multi = harvest(_cfg(tmp_path / "m", tiny_model_dir, text_corpus, layer="0,1", tokens=16 * 8), lm=tiny_lm)
    with pytest.raises(SaexError, match="not an activation store"):
        harvest(_cfg(multi, tiny_model_dir, text_corpus, layer=1, tokens=16 * 8), lm=tiny_lm)


def test_cli_multi_layer_harvest(tmp_path, tiny_model_dir, text_corpus, capsys):
    out = tmp_path / "m"
    rc = main(["harvest", "--out", str(out), "--model", str(tiny_model_dir), "--corpus", str(text_corpus),
               "--layer", "1,3", "--tokens", "128", "--context-size", "16", "--shard-windows", "4",
               "--storage-dtype", "fp32", "--precision", "fp32", "--device", "cpu", "--progress", "no",
               "--compile", "no"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "layer 1" in printed and "layer 3" in printed and "blocks.3.hook_resid_post" in printed
    assert main(["store", str(out)]) == 0 and "layer 1" in capsys.readouterr().out


def test_a_multi_layer_harvest_leaves_the_models_own_hidden_states_alone(tmp_path, tiny_model_dir, text_corpus):
    """transformers records hidden states with hooks installed once per model object; the truncated copy
    must not install a second set on the blocks it shares (which shifted hidden_states by a layer)."""
    from sae.data.models import load_model

    lm, fresh = load_model(str(tiny_model_dir), device="cpu"), load_model(str(tiny_model_dir), device="cpu")
    harvest(_cfg(tmp_path / "m", tiny_model_dir, text_corpus, layer="0,1", tokens=16 * 8), lm=lm)
    ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
        ref = fresh.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
