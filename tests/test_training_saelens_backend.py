"""sae-lens backend: every sae-lens 6 architecture trained by its SAETrainer from our store."""

import copy
import json
import math

import pytest
import torch

from sae.errors import SaexError
from tests.helpers import train_cfg, write_planted_store, write_store
from training.config import TrainConfig, load_config
from training.saelens_backend import (
    fit_with_saelens,
    matryoshka_widths,
    save_saelens_run,
    train_with_saelens,
)
from training.topk_loop import lr_at
from training.train import train

ARCHS = ["standard", "gated", "jumprelu", "matryoshka_batchtopk", "batchtopk", "topk"]
RUN_FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "train_config.json", "run.json",
             "metrics.jsonl")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Planted data, stored raw and times 40 (so that the input scale is far from 1)."""
    tmp = tmp_path_factory.mktemp("stores")
    store, x, feats = write_planted_store(tmp / "store")
    big = write_store(tmp / "big", (x * 40).reshape(64, 128, 16), shard_windows=8)
    return store, big, x, feats


def _cfg(store, out, **kw):
    return train_cfg(store, out, **{"backend": "saelens", "l1_coefficient": 1.0, "log_every": 10, **kw})


def _reference(sae, x_scaled):
    """The training SAE's reconstruction of scaled inputs. BatchTopK picks latents per batch
    while training; its inference form (what sae-lens saves) is a JumpReLU at the learned
    global threshold, so that is the reference for the batchtopk family."""
    if hasattr(sae, "topk_threshold"):
        _, pre = sae.encode_with_hidden_pre(x_scaled)
        acts = pre.relu() * (pre > sae.topk_threshold.to(pre.dtype))
        return sae.decode(acts)
    return sae(x_scaled)


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_trains_and_saves_a_raw_activation_sae(arch, planted, tmp_path):
    """Saved with the input scale folded in: loaded(x) == trained(x * scale) / scale."""
    from sae_lens import SAE
    from safetensors.torch import load_file

    _, big, x, _ = planted
    x = x[:400] * 40
    cfg = _cfg(big, tmp_path / "run", architecture=arch, autocast=arch in ("jumprelu", "topk"))
    fit = fit_with_saelens(cfg, max_steps=40, metrics_path=tmp_path / "metrics.jsonl")
    assert fit.stats["steps"] == 40 and fit.stats["vectors"] == 40 * 256
    assert 0.01 < fit.scale < 0.2  # raw norms ~ 40 x 3, scaled to sqrt(16)
    trained = copy.deepcopy(fit.sae).eval()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes((tmp_path / "metrics.jsonl").read_bytes())
    save_saelens_run(fit, cfg, run)
    assert all((run / f).exists() for f in RUN_FILES)

    loaded = SAE.load_from_disk(str(run), device="cpu")
    saved = json.loads((run / "cfg.json").read_text())
    expected = {"batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}.get(arch, arch)
    assert saved["architecture"] == expected and saved["normalize_activations"] == "none"
    assert saved["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    assert saved["metadata"]["hf_hook_name"] == "model.layers.0" and saved["metadata"]["model_name"] == "synthetic"
    with torch.no_grad():
        want = _reference(trained, x * fit.scale) / fit.scale
        got = loaded(x)
        # fp32 throughout; the folds only rescale weights, so the outputs agree to rounding
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(x.abs().max()))
        assert (got - x).pow(2).sum() < (x - x.mean(0)).pow(2).sum()  # it learned something
        torch.testing.assert_close(loaded.W_dec.norm(dim=1), torch.ones(64), rtol=1e-4, atol=1e-4)

    sparsity = load_file(str(run / "sparsity.safetensors"))["sparsity"]
    assert sparsity.shape == (64,) and float(sparsity.max()) <= 0
    info = json.loads((run / "run.json").read_text())
    for key in ("store", "model", "hook", "corpus", "input_scale", "train_seconds", "vectors", "vectors_per_s",
                "steps"):
        assert key in info
    assert info["input_scale"] == fit.scale and info["backend"] == "sae-lens"
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 10, 20, 30, 39]
    for key in ("step", "vectors", "loss", "mse", "explained_variance", "l0", "dead_fraction", "lr"):
        assert all(math.isfinite(r[key]) for r in log), key


def test_standard_sae_learns_planted_features(planted, tmp_path):
    from sae_lens import SAE

    store, _, x, feats = planted
    run = train_with_saelens(_cfg(store, tmp_path / "run", architecture="standard"))
    sae = SAE.load_from_disk(str(run), device="cpu")
    with torch.no_grad():
        recon = sae(x)
        l0 = (sae.encode(x) > 0).sum(-1).float().mean()
    ev = 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert ev > 0.8, ev
    assert l0 < 16, l0  # sparse: 3 features are planted per vector, the SAE has 64 latents
    cos = feats @ (sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)).t()
    assert (cos.max(dim=1).values > 0.9).float().mean() >= 0.75  # most planted directions are found
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["explained_variance"] > log[0]["explained_variance"]
    assert log[-1]["vectors"] == 8 * 64 * 128 // 256 * 256


def test_learning_rate_schedule_is_ours(planted, tmp_path):
    store, _, _, _ = planted
    cfg = _cfg(store, tmp_path / "run", architecture="jumprelu", log_every=1, epochs=1)  # 32 steps
    fit_with_saelens(cfg, metrics_path=tmp_path / "m.jsonl")
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(lrs) == 32
    assert lrs == pytest.approx([lr_at(s, 32, cfg) for s in range(32)], rel=1e-6)


def test_existing_run_is_not_overwritten(planted, tmp_path):
    store, _, _, _ = planted
    run = train_with_saelens(_cfg(store, tmp_path / "run", architecture="jumprelu"), max_steps=3)
    before = (run / "sae_weights.safetensors").read_bytes()
    with pytest.raises(SaexError, match="already holds a trained SAE"):
        train_with_saelens(_cfg(store, run, architecture="gated"), max_steps=3)
    assert (run / "sae_weights.safetensors").read_bytes() == before


@pytest.mark.parametrize("bad, field", [
    (dict(architecture="relu"), "unknown architecture 'relu'"),
    (dict(backend="fast"), "unknown backend 'fast'"),
    (dict(backend="ours", architecture="gated"), "backend 'ours' does not train gated"),
    (dict(l1_coefficient=-1.0), "l1_coefficient must be >= 0"),
    (dict(l0_coefficient=-0.5, architecture="jumprelu"), "l0_coefficient must be >= 0"),
    (dict(jumprelu_bandwidth=0.0), "jumprelu_bandwidth must be positive"),
    (dict(jumprelu_init_threshold=-1.0), "jumprelu_init_threshold must be >= 0"),
    (dict(jumprelu_sparsity_loss_mode="l0"), "unknown jumprelu_sparsity_loss_mode 'l0'"),
    (dict(matryoshka_widths=[16, 8, 64]), "matryoshka_widths must be strictly increasing"),
    (dict(matryoshka_widths=[8, 16]), "matryoshka_widths .* ending at d_sae \\(64\\)"),
    (dict(matryoshka_widths="8,x,64"), "matryoshka_widths must be integers"),
    (dict(aux_k=8, architecture="standard"), "aux_k \\(8\\) is not adjustable with the sae-lens backend"),
])
def test_config_errors_name_the_field(bad, field, tmp_path):
    with pytest.raises(SaexError, match=field):
        _cfg(tmp_path / "store", tmp_path / "run", **bad)


def test_config_fields_from_toml_and_command_line(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('architecture = "matryoshka_batchtopk"\nd_sae = 64\nk = 4\nmatryoshka_widths = [8, 16, 64]\n')
    cfg = load_config(p, store="s")
    assert cfg.matryoshka_widths == [8, 16, 64] and cfg.trainer() == "saelens"
    assert TrainConfig(d_sae=64, k=4, matryoshka_widths="8, 32,64").matryoshka_widths == [8, 32, 64]  # a CLI string
    assert matryoshka_widths(TrainConfig(d_sae=64, k=4)) == [8, 16, 32, 64]
    assert TrainConfig(architecture="topk").trainer() == "ours"
    assert TrainConfig(architecture="batchtopk").trainer() == "ours"
    assert TrainConfig(architecture="topk", backend="saelens").trainer() == "saelens"
    assert TrainConfig(architecture="jumprelu").trainer() == "saelens"


def test_train_dispatches_to_sae_lens(planted, tmp_path):
    store, _, _, _ = planted
    run = train(_cfg(store, tmp_path / "run", architecture="gated", backend="auto", epochs=0.1))
    assert json.loads((run / "run.json").read_text())["backend"] == "sae-lens"


def test_example_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "training" / "configs"
    for arch in ("standard", "gated", "jumprelu", "matryoshka_batchtopk"):
        cfg = load_config(root / f"{arch}.toml")
        assert cfg.architecture == arch and cfg.trainer() == "saelens"
