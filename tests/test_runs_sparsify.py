"""sparsify SAEs (sae/runs/sparsify.py): a folder laid out exactly as sparsify's trainer
writes it loads through load_sae as a TopK SAE whose codes equal a hand computation of
sparsify's encoder; what cannot be converted is refused with one clear error; the
user's folder is never written to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae.errors import SaexError
from sae.index.encoder import sparse_encoder
from sae.runs.load import load_sae

D_IN, LATENTS, K = 16, 64, 4


def write_sparsify_run(root: Path, hookpoint: str = "layers.3", model: str | None = "EleutherAI/pythia-70m",
                       seed: int = 0, weights: dict | None = None, **cfg) -> Path:
    """root/config.json (the run's TrainConfig + model, as sparsify's trainer saves it) and
    root/<hookpoint>/{cfg.json, sae.safetensors} (SparseCoder.save_to_disk); returns the
    hookpoint folder."""
    g = torch.Generator().manual_seed(seed)
    sae_cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True, "num_latents": LATENTS,
               "k": K, "multi_topk": False, "skip_connection": False, "transcode": False} | cfg
    folder = root / hookpoint
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(sae_cfg | {"d_in": D_IN}))
    tensors = {"encoder.weight": torch.randn(LATENTS, D_IN, generator=g) / D_IN ** 0.5,
               "encoder.bias": 0.2 * torch.randn(LATENTS, generator=g),
               "W_dec": torch.randn(LATENTS, D_IN, generator=g) / D_IN ** 0.5,
               "b_dec": 0.5 * torch.randn(D_IN, generator=g)}
    save_file(tensors | (weights or {}), str(folder / "sae.safetensors"))
    if model is not None:
        run_cfg = {"sae": sae_cfg, "batch_size": 32, "hookpoints": [hookpoint.split("/")[0]], "save_dir": "checkpoints",
                   "model": model, "dataset": "EleutherAI/SmolLM2-135M-10B", "ctx_len": 2048}
        (root / "config.json").write_text(json.dumps(run_cfg))
    return folder


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ckpt(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "ckpt"
    monkeypatch.setenv("SAEX_CHECKPOINTS", str(root))
    return root


def _hand_codes(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """sparsify's encoder: top-k of relu(encoder(x - b_dec)), as a dense "n latents" tensor."""
    w = load_file(str(folder / "sae.safetensors"))
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    vals, idx = pre.topk(K, dim=1)
    return torch.zeros_like(pre).scatter_(1, idx, vals)


def test_sparsify_folder_loads_with_the_codes_sparsify_computes(tmp_path, ckpt):
    src = tmp_path / "sparsify-run"
    folder = write_sparsify_run(src)
    before = _tree(src)
    sae = load_sae(folder)
    assert _tree(src) == before  # the user's folder is left alone
    assert sae.path.is_relative_to(ckpt / "sparsify") and (sae.path / "cfg.json").is_file()
    assert (sae.architecture, sae.d_in, sae.d_sae, sae.cfg["k"]) == ("topk", D_IN, LATENTS, K)
    assert (sae.hook_name, sae.model_spec) == ("blocks.3.hook_resid_post", "EleutherAI/pythia-70m")
    assert sae.run["sparsify"]["hookpoint"] == "layers.3"

    x = 2 * torch.randn(200, D_IN, generator=torch.Generator().manual_seed(1))
    expected = _hand_codes(folder, x)
    assert ((expected > 0).sum(1) == K).float().mean() > 0.9  # top-k actually cuts
    torch.testing.assert_close(sae.encode(x), expected, rtol=1e-5, atol=1e-5)
    codes = sparse_encoder(sae, precision="fp32")(x)
    torch.testing.assert_close(torch.from_numpy(codes.dense(len(x), LATENTS)), expected, rtol=1e-5, atol=1e-5)
    w = load_file(str(folder / "sae.safetensors"))
    torch.testing.assert_close(sae.decode(expected), expected @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)

    # sae-lens itself reads our folder as the same TopK SAE
    from sae_lens import SAE

    theirs = SAE.load_from_disk(str(sae.path))
    torch.testing.assert_close(theirs.encode(x), expected, rtol=1e-5, atol=1e-5)


def test_sparsify_run_folder_needs_a_hookpoint_and_conversions_are_reused(tmp_path, ckpt):
    src = tmp_path / "run"
    folder = write_sparsify_run(src)
    with pytest.raises(SaexError, match=r"sparsify run with 1 sparse coders \(layers.3\)") as e:
        load_sae(src)
    assert "hookpoint='layers.3'" in e.value.fix
    sae = load_sae(src, hookpoint="layers.3")
    assert sae.content_hash == load_sae(folder).content_hash
    stamp = (sae.path / "sae_weights.safetensors").stat().st_mtime_ns
    assert (load_sae(folder).path / "sae_weights.safetensors").stat().st_mtime_ns == stamp  # reused
    with pytest.raises(SaexError, match="not a sparsify hookpoint folder"):
        load_sae(src, hookpoint="layers.9")

    # retrained in place (new weights): converted again, into the same run folder
    (folder / "sae.safetensors").unlink()
    (folder / "cfg.json").unlink()
    folder.rmdir()
    write_sparsify_run(src / "again", seed=5)
    (src / "again" / "layers.3").rename(folder)
    again = load_sae(folder)
    assert again.path == sae.path and again.content_hash != sae.content_hash
    x = torch.randn(20, D_IN, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(again.encode(x), _hand_codes(folder, x), rtol=1e-5, atol=1e-5)


def test_sparsify_seed_folders_bf16_weights_and_no_model(tmp_path, ckpt):
    src = tmp_path / "seeds"
    folder = write_sparsify_run(src, hookpoint="layers.2/seed1", model=None, num_latents=0, expansion_factor=4)
    w = {k: v.bfloat16() for k, v in load_file(str(folder / "sae.safetensors")).items()}
    save_file(w, str(folder / "sae.safetensors"))
    sae = load_sae(folder)
    assert (sae.hook_name, sae.d_sae, sae.model_spec) == ("blocks.2.hook_resid_post", 4 * D_IN, None)
    assert "pass --model" in sae.run["model"]["note"]
    x = torch.randn(50, D_IN, generator=torch.Generator().manual_seed(3))
    w32 = {k: v.float() for k, v in w.items()}
    pre = torch.relu((x - w32["b_dec"]) @ w32["encoder.weight"].T + w32["encoder.bias"])
    vals, idx = pre.topk(K, dim=1)
    torch.testing.assert_close(sae.encode(x), torch.zeros_like(pre).scatter_(1, idx, vals), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case, kwargs, needle", [
    ("transcoder", dict(transcode=True), "is a transcoder"),
    ("skip", dict(skip_connection=True, weights={"W_skip": torch.zeros(D_IN, D_IN)}), "skip connection"),
    ("skip-weights-only", dict(weights={"W_skip": torch.zeros(D_IN, D_IN)}), "skip connection .*W_skip"),
    ("groupmax", dict(activation="groupmax"), "'groupmax' activation"),
    ("mlp", dict(hookpoint="layers.3.mlp"), "reads 'layers.3.mlp', not a block's output"),
    ("embed", dict(hookpoint="embed_tokens"), "reads 'embed_tokens', not a block's output"),
])
def test_sparsify_refusals_are_one_clear_error(tmp_path, ckpt, case, kwargs, needle):
    folder = write_sparsify_run(tmp_path / case, **kwargs)
    with pytest.raises(SaexError, match=needle) as e:
        load_sae(folder)
    assert e.value.fix
    assert not list(ckpt.rglob("cfg.json"))  # nothing half-converted is left to be listed as a run


def test_damaged_sparsify_folders(tmp_path, ckpt):
    folder = write_sparsify_run(tmp_path / "shape")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps(cfg | {"d_in": D_IN + 1}))
    with pytest.raises(SaexError, match="has shape"):
        load_sae(folder)
    folder = write_sparsify_run(tmp_path / "truncated")
    data = (folder / "sae.safetensors").read_bytes()
    (folder / "sae.safetensors").write_bytes(data[:-50])
    with pytest.raises(SaexError, match="truncated"):
        load_sae(folder)
