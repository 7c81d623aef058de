import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # `saex demo` end to end, in a subprocess


def test_demo_runs_end_to_end_and_skips_done_work(tmp_path, tiny_model_dir, text_corpus):
    cfg = tmp_path / "train.toml"
    cfg.write_text("d_sae = 64\nk = 4\nbatch_size = 128\nepochs = 1.0\nwarmup_steps = 2\nprogress = false\n")
    cmd = [sys.executable, "-m", "saex", "demo", "--out-dir", str(tmp_path / "run"), "--model",
           str(tiny_model_dir), "--corpus", str(text_corpus), "--tokens", "4096", "--heldout-tokens", "512",
           "--device", "cpu", "--train-config", str(cfg), "--lookahead", "no"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    for step in ("[1/8]", "[2/8]", "[3/8]", "[4/8]", "[5/8]", "[6/8]", "[7/8]", "[8/8]"):
        assert step in first.stdout
    run = tmp_path / "run"
    train_m = json.loads((run / "acts-train" / "manifest.json").read_text())
    held_m = json.loads((run / "acts-heldout" / "manifest.json").read_text())
    assert (train_m["n_tokens"], held_m["n_tokens"]) == (4096, 512)
    assert (train_m["corpus"]["split"], held_m["corpus"]["split"]) == ("train", "heldout")
    sae_cfg = json.loads((run / "sae" / "cfg.json").read_text())
    assert (sae_cfg["d_sae"], sae_cfg["k"], sae_cfg["d_in"]) == (64, 4, 32)
    weights = (run / "sae" / "sae_weights.safetensors").read_bytes()
    result = json.loads((run / "sae" / "eval.json").read_text())
    assert result["tokens"]["evaluated"] > 0 and result["ce_clean"] > 0
    assert f"EV {result['explained_variance']:.3f}" in first.stdout
    evaluated = (run / "sae" / "eval.json").read_bytes()
    index = json.loads((run / "sae" / "index" / "manifest.json").read_text())
    assert index["d_sae"] == 64 and index["tokens_indexed"] > 0
    assert f"feature index of 64 features over {index['tokens_indexed']:,} held-out tokens" in first.stdout
    labels = [json.loads(line) for line in (run / "sae" / "labels.jsonl").read_text().splitlines()]
    assert [r["feature"] for r in labels] == list(range(64))
    summary = json.loads((run / "sae" / "labels_summary.json").read_text())
    assert set(summary["variants"]) == {"real", "random", "shuffled"}
    assert summary["labelled"] == sum(1 for r in labels if r["label"])
    assert summary["variants"]["real"]["f1"]["n"] == sum(1 for r in labels if r["n_fired"] > 0)
    assert f"automatic labels: labelled {summary['labelled']:,} of 64 features" in first.stdout
    plan = json.loads((run / "demo.json").read_text())
    steps = {"harvest_train", "harvest_heldout", "training", "evaluation", "index", "labels"}
    assert steps <= set(plan["seconds"]) and steps <= set(plan["estimate_s"])  # each step timed beside its estimate
    assert plan["reason"] in first.stdout and "estimated" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "already complete" in second.stderr
    assert (run / "sae" / "sae_weights.safetensors").read_bytes() == weights  # not retrained
    assert (run / "sae" / "eval.json").read_bytes() == evaluated  # not re-evaluated
