import json

import pytest
import torch

from sae.errors import SaexError
from tests.synthetic import planted_data, write_store
from training.config import TrainConfig, load_config
from training.train import load_sae, train


@pytest.fixture
def planted_store(tmp_path):
    x, feats = planted_data(64 * 128, d_in=16, n_features=32, k=3)
    store = write_store(tmp_path / "store", x.reshape(64, 128, 16), shard_windows=8)
    return store, x, feats


def _cfg(store, out, **kw):
    base = dict(store=str(store), out=str(out), d_sae=64, k=4, batch_size=256, epochs=8, lr=1e-2, lr_end=1e-3,
                warmup_steps=10, dead_after=2000, device="cpu", progress=False, shards_in_memory=8)
    base.update(kw)
    return TrainConfig(**base)


def test_topk_recovers_planted_features(planted_store, tmp_path):
    store, x, feats = planted_store
    run = train(_cfg(store, tmp_path / "run"))
    sae = load_sae(run)
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
    run = train(_cfg(store, tmp_path / "run", epochs=1))
    ours = load_sae(run)
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
    run_a = train(_cfg(store, tmp_path / "a", epochs=1))
    run_b = train(_cfg(scaled, tmp_path / "b", epochs=1))
    a, b = load_sae(run_a), load_sae(run_b)
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
    run = train(_cfg(store, tmp_path / "run", epochs=1))
    before = (run / "sae_weights.safetensors").read_bytes()
    with pytest.raises(SaexError, match="already holds a trained SAE"):
        train(_cfg(store, run, epochs=1))
    assert (run / "sae_weights.safetensors").read_bytes() == before
