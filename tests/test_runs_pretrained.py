"""Pretrained SAEs by sae-lens release/sae_id (sae/runs/pretrained.py): resolved by sae-lens's
own from_pretrained from an offline HF cache laid out as huggingface_hub lays it out, written
into a run folder of ours whose codes equal the original folder's; hooks and TransformerLens
weight processing sae-explorer cannot read are refused before the weights are fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sae.errors import SaexError
from sae.runs import pretrained
from tests.helpers import save_sae

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a fake commit hash (40 hex digits)
D_IN = 16


# --------------------------------------------------------------------------- the pure parts


def test_model_names_map_to_hf_ids():
    assert pretrained.hf_model_id("gpt2-small") == "gpt2"
    assert pretrained.hf_model_id("pythia-70m-deduped") == "EleutherAI/pythia-70m-deduped"
    assert pretrained.hf_model_id("gemma-2-2b") == "google/gemma-2-2b"
    assert pretrained.hf_model_id("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"  # an HF id already
    assert pretrained.hf_model_id("some-tl-only-name") is None
    assert pretrained.hf_model_id(None) is None


def test_hook_points_read_or_refused():
    assert pretrained.resid_hook("blocks.4.hook_resid_post", "x") == ("blocks.4.hook_resid_post", 4, None)
    name, layer, note = pretrained.resid_hook("blocks.6.hook_resid_pre", "x")
    assert (name, layer) == ("blocks.5.hook_resid_post", 5) and "same vector" in note
    with pytest.raises(SaexError, match="token embeddings"):
        pretrained.resid_hook("blocks.0.hook_resid_pre", "x")
    for hook in ("blocks.3.hook_attn_out", "blocks.3.hook_mlp_out", "blocks.3.attn.hook_z", "blocks.3.hook_resid_mid"):
        with pytest.raises(SaexError, match="not the residual stream after a block") as e:
            pretrained.resid_hook(hook, "x")
        assert e.value.fix


def test_configs_expecting_transformerlens_processing_are_refused():
    base = {"architecture": "topk", "d_in": 8, "d_sae": 16, "normalize_activations": "none",
            "metadata": {"hook_name": "blocks.2.hook_resid_post"}}
    assert pretrained.check_config(base, "x")[0] == "blocks.2.hook_resid_post"
    ok = base | {"metadata": base["metadata"] | {"model_from_pretrained_kwargs": {"fold_ln": True,
                                                                                   "center_writing_weights": False}}}
    assert pretrained.check_config(ok, "x")[1] == 2  # fold_ln leaves the residual stream as it is
    centered = {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
    for cfg in (base | centered, base | {"metadata": base["metadata"] | centered}):  # a release override, the cfg
        with pytest.raises(SaexError, match="center_writing_weights=True"):
            pretrained.check_config(cfg, "x")
    with pytest.raises(SaexError, match="expected_average_only_in"):
        pretrained.check_config(base | {"normalize_activations": "expected_average_only_in"}, "x")
    assert pretrained.check_config(base | {"normalize_activations": "expected_average_only_in"}, "x",
                                   scaling_known=True)
    with pytest.raises(SaexError, match="transcoder"):
        pretrained.check_config(base | {"architecture": "jumprelu_transcoder"}, "x")
    with pytest.raises(SaexError, match="single attention head"):
        pretrained.check_config(base | {"metadata": base["metadata"] | {"hook_head_index": 3}}, "x")


def test_specs_are_told_apart_from_paths(tmp_path, monkeypatch):
    assert pretrained.parse_spec("pythia-70m-deduped-res-sm/blocks.1.hook_resid_post") == (
        "pythia-70m-deduped-res-sm", "blocks.1.hook_resid_post")
    assert pretrained.parse_spec("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82") == (
        "gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82")  # ids may hold '/'
    assert pretrained.parse_spec("checkpoints/demo/sae") is None  # not a release
    assert pretrained.parse_spec(str(tmp_path)) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pythia-70m-deduped-res-sm" / "blocks.1.hook_resid_post").mkdir(parents=True)
    assert pretrained.parse_spec("pythia-70m-deduped-res-sm/blocks.1.hook_resid_post") is None  # a folder wins
    monkeypatch.setenv("SAEX_CHECKPOINTS", str(tmp_path / "ck"))
    assert pretrained.run_dir("gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82") == (
        tmp_path / "ck" / "pretrained" / "gemma-scope-2b-pt-res" / "layer_12__width_16k__average_l0_82")


# --------------------------------------------------------------------------- offline, end to end

_SCRIPT = r"""
import json, os, shutil, sys
import torch
from sae.errors import SaexError
from sae.index.encoder import sparse_encoder
from sae.runs.load import load_sae

args = json.loads(sys.argv[1])
x = torch.randn(300, args["d_in"], generator=torch.Generator().manual_seed(0))
out = {}

def codes(sae):
    return sparse_encoder(sae, precision="fp32")(x).dense(len(x), sae.d_sae).tolist()

def describe(sae):
    return {"path": str(sae.path), "hook": sae.hook_name, "model": sae.model_spec, "run": sae.run,
            "arch": sae.architecture, "encode": sae.encode(x).tolist(), "codes": codes(sae),
            "W": [getattr(sae.sae, k).tolist() for k in ("W_enc", "b_enc", "W_dec", "b_dec")]}

for name, (spec, folder) in args["same"].items():
    out[name] = {"spec": describe(load_sae(spec)), "folder": describe(load_sae(folder))}
for name, spec in args["refused"].items():
    try:
        load_sae(spec)
        out[name] = None
    except SaexError as e:
        out[name] = [e.problem, e.fix]
first = load_sae(args["same"]["topk"][0]).path / "sae_weights.safetensors"
stamp = first.stat().st_mtime_ns
shutil.rmtree(os.path.join(os.environ["HF_HOME"], "hub"))  # a written run folder needs no HF cache
again = load_sae(args["same"]["topk"][0]).path / "sae_weights.safetensors"
out["reused"] = again == first and first.stat().st_mtime_ns == stamp
print("RESULT " + json.dumps(out))
"""


def _lay_out(hub: Path, release: str, sae_id: str, src: Path | None, files=("cfg.json", "sae_weights.safetensors")):
    """The HF cache layout huggingface_hub reads offline (file_download._hf_hub_download_to_cache_dir):
    hub/models--ORG--NAME/refs/main holding the commit hash (read with no strip: no newline) and
    snapshots/COMMIT/PATH/<file>; returns the folder the files went to."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()[release]
    repo = hub / ("models--" + lookup.repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    dest = repo / "snapshots" / COMMIT / lookup.saes_map[sae_id]
    dest.mkdir(parents=True)
    for name in files:
        if src is not None and (src / name).exists():
            (dest / name).write_bytes((src / name).read_bytes())
    return dest


def _old_style_sae(path: Path, hook: str, model: str) -> Path:
    """A standard SAE saved with a pre-6.0 sae-lens config (hook_point, activation_fn_str, no
    metadata): sae-lens's own defaulting must turn it into a 6.x config."""
    save_sae(path, SimpleNamespace(d_model=D_IN, spec=model, weights_sha256=None), seed=3, d_sae=40)
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": 40, "dtype": "float32", "device": "cpu",
           "model_name": model, "hook_point": hook, "hook_point_layer": int(hook.split(".")[1]),
           "hook_point_head_index": None, "activation_fn_str": "relu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "context_size": 128, "prepend_bos": True,
           "sae_lens_version": "3.0.0"}
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.integration
def test_release_and_id_load_offline_like_the_folder(tmp_path):
    lm = SimpleNamespace(d_model=D_IN, spec="pythia-70m-deduped", weights_sha256=None)
    topk = save_sae(tmp_path / "src-topk", lm, seed=1, arch="topk", d_sae=48, layer=1)
    pre = _old_style_sae(tmp_path / "src-pre", "blocks.6.hook_resid_pre", "gpt2-small")
    attn, embed = tmp_path / "src-attn", tmp_path / "src-embed"
    for folder, hook in ((attn, "blocks.1.hook_attn_out"), (embed, "blocks.0.hook_resid_pre")):
        save_sae(folder, lm, seed=2, d_sae=48, layer=1)
        cfg = json.loads((folder / "cfg.json").read_text())
        cfg["metadata"]["hook_name"] = hook
        (folder / "cfg.json").write_text(json.dumps(cfg))

    hub = tmp_path / "hf" / "hub"
    _lay_out(hub, "pythia-70m-deduped-res-sm", "blocks.1.hook_resid_post", topk)
    _lay_out(hub, "gpt2-small-res_sll-ajt", "blocks.6.hook_resid_pre", pre)
    # refused on the config alone: no weights in the cache, so a refusal after fetching them would fail differently
    _lay_out(hub, "pythia-70m-deduped-att-sm", "blocks.1.hook_attn_out", attn, files=("cfg.json",))
    _lay_out(hub, "gpt2-small-res-jb", "blocks.3.hook_resid_pre", pre, files=("cfg.json",))  # yaml: centered
    _lay_out(hub, "pythia-70m-deduped-res-sm", "blocks.0.hook_resid_pre", embed, files=("cfg.json",))

    args = {"d_in": D_IN,
            "same": {"topk": ["pythia-70m-deduped-res-sm/blocks.1.hook_resid_post", str(topk)],
                     "pre": ["gpt2-small-res_sll-ajt/blocks.6.hook_resid_pre", str(pre)]},
            "refused": {"attn": "pythia-70m-deduped-att-sm/blocks.1.hook_attn_out",
                        "centered": "gpt2-small-res-jb/blocks.3.hook_resid_pre",
                        "embed": "pythia-70m-deduped-res-sm/blocks.0.hook_resid_pre",
                        "unknown_id": "pythia-70m-deduped-res-sm/blocks.9.hook_resid_post",
                        "not_cached": "pythia-70m-deduped-res-sm/blocks.2.hook_resid_post"}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SAEX_CHECKPOINTS"))}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "SAEX_CHECKPOINTS": str(tmp_path / "ck"),
            "SAEX_FAST_BF16": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(args)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])

    run = tmp_path / "ck" / "pretrained" / "pythia-70m-deduped-res-sm" / "blocks.1.hook_resid_post"
    a, b = out["topk"]["spec"], out["topk"]["folder"]
    assert a["path"] == str(run) and b["path"] == str(topk)
    assert a["W"] == b["W"] and a["encode"] == b["encode"] and a["codes"] == b["codes"]
    assert any(v != 0 for row in a["codes"] for v in row)
    assert (a["arch"], a["hook"], a["model"]) == ("topk", "blocks.1.hook_resid_post", "EleutherAI/pythia-70m-deduped")
    p = a["run"]["pretrained"]
    assert (p["release"], p["sae_id"], p["repo_id"], p["neuronpedia_id"]) == (
        "pythia-70m-deduped-res-sm", "blocks.1.hook_resid_post", "ctigges/pythia-70m-deduped__res-sm_processed",
        "pythia-70m-deduped/1-res-sm")
    assert {"cfg.json", "sae_weights.safetensors", "run.json"} <= {f.name for f in run.iterdir()}
    assert not list((tmp_path / "hf").rglob("run.json"))  # nothing of ours in the HF cache
    assert out["reused"]

    a, b = out["pre"]["spec"], out["pre"]["folder"]  # an old config, resid_pre of block 6
    assert a["encode"] == b["encode"] and a["codes"] == b["codes"]
    assert (a["hook"], a["model"]) == ("blocks.5.hook_resid_post", "gpt2")
    assert a["run"]["hook"]["saelens_name"] == "blocks.6.hook_resid_pre" and "same vector" in a["run"]["hook"]["note"]

    assert "blocks.1.hook_attn_out, which is not the residual stream" in out["attn"][0]
    assert "center_writing_weights=True" in out["centered"][0]
    assert "token embeddings" in out["embed"][0]
    assert "has no SAE 'blocks.9.hook_resid_post'" in out["unknown_id"][0]
    assert "pythia-70m-deduped-res-sm/blocks.5.hook_resid_post" in out["unknown_id"][1]  # suggests real ids
    assert "not in the local HF cache" in out["not_cached"][1]
    assert all(out[k][1] for k in args["refused"])
    written = {p.parent.name for p in (tmp_path / "ck").rglob("cfg.json")}
    assert written == {"blocks.1.hook_resid_post", "blocks.6.hook_resid_pre"}  # refused SAEs leave no run folder
