import json

import pytest
import torch

from sae.errors import SaexError
from tests.helpers import train_cfg, write_store
from training.config import load_config
from training.topk import load_fast_topk
from training.train import train


def test_topk_recovers_planted_features(planted_store, tmp_path):
    store, x, feats = planted_store
    run = train(train_cfg(store, tmp_path / "run"))
    sae = load_fast_topk(run)
    with torch.no_grad():
        recon, _ = sae(x)
    ev = 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert ev > 0.85
    cos = feats @ sae.W_dec.detach().t()
    assert (cos.max(dim=1).values > 0.9).float().mean() >= 0.9  # the planted directions are found
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["explained_variance"] > log[0]["explained_variance"]


def test_saved_run_loads_in_sae_lens_with_identical_outputs(planted_store, tmp_path):
    from sae_lens import SAE

    store, x, _ = planted_store
    run = train(train_cfg(store, tmp_path / "run", epochs=1))
    ours = load_fast_topk(run)
    theirs = SAE.load_from_disk(str(run), device="cpu")
    assert theirs.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    with torch.no_grad():
        ours_acts = ours.encode_dense(x[:500])
        their_acts = theirs.encode(x[:500])
        torch.testing.assert_close(their_acts, ours_acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(their_acts), ours(x[:500])[0], rtol=1e-5, atol=1e-5)
    sparsity = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(run / "sparsity.safetensors"))
    assert sparsity["sparsity"].shape == (64,)
    assert (run / "train_config.json").exists() and (run / "run.json").exists()


def test_input_scale_is_folded_into_the_saved_weights(planted_store, tmp_path):
    store, x, _ = planted_store
    scaled = write_store(tmp_path / "scaled", (x * 40).reshape(64, 128, 16), shard_windows=8)
    run_a = train(train_cfg(store, tmp_path / "a", epochs=1))
    run_b = train(train_cfg(scaled, tmp_path / "b", epochs=1))
    a, b = load_fast_topk(run_a), load_fast_topk(run_b)
    with torch.no_grad():
        # same data up to a factor 40: same latents chosen, activations and output scale by 40
        ra, _ = a(x[:200])
        rb, _ = b(x[:200] * 40)
    torch.testing.assert_close(rb, ra * 40, rtol=2e-2, atol=2e-2 * 40)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('k = 16\nlearning_rate = 0.1\n')
    with pytest.raises(SaexError, match="unknown key\\(s\\) in .*: learning_rate"):
        load_config(p)
    p.write_text('k = 16\nd_sae = 8\n')
    with pytest.raises(SaexError, match="k \\(16\\) is larger than d_sae"):
        load_config(p)
    p.write_text('k = 8\n')
    assert load_config(p, store="s").k == 8
    with pytest.raises(SaexError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_existing_run_is_not_overwritten(planted_store, tmp_path):
    store, _, _ = planted_store
    run = train(train_cfg(store, tmp_path / "run", epochs=1))
    before = (run / "sae_weights.safetensors").read_bytes()
    with pytest.raises(SaexError, match="already holds a trained SAE"):
        train(train_cfg(store, run, epochs=1))
    assert (run / "sae_weights.safetensors").read_bytes() == before
