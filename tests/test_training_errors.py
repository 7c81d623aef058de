"""Training's bad-input table: each case gives one clear error (CLI exit 2) and leaves
what existed untouched."""

import errno
import os

import pytest
from safetensors.torch import load_file

from saex import cli
from tests.helpers import planted_data, write_planted_store, write_store

FLAGS = ["--d-sae", "64", "--k", "4", "--batch-size", "256", "--epochs", "4", "--lr", "1e-2", "--lr-end", "1e-3",
         "--warmup-steps", "5", "--device", "cpu", "--progress", "false", "--shards-in-memory", "2",
         "--checkpoint-every", "5"]


@pytest.fixture
def store(tmp_path):
    return write_planted_store(tmp_path / "store", n_windows=32)[0]


def _train(store, out, *extra):
    return cli.main(["train", "--store", str(store), "--out", str(out), *FLAGS, *extra])


def test_nan_in_a_shard_names_the_shard_and_writes_no_sae(tmp_path, capsys):
    x, _ = planted_data(32 * 128, d_in=16, n_features=32, k=3)
    x = x.reshape(32, 128, 16)
    x[20, 5, 3] = float("nan")  # window 20 lies in shard 2 (8 windows a shard)
    bad = write_store(tmp_path / "bad", x, shard_windows=8)
    assert _train(bad, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "NaN/inf activations in shard 2" in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "cfg.json").exists()
    assert not (tmp_path / "run" / "sae_weights.safetensors").exists()


def _interrupted_run(store, out, monkeypatch, at_step=12):
    """A run stopped (as by a crash) after its checkpoints at steps 5 and 10."""
    from training import data

    original = data.batches

    def stop(*a, **k):
        for step, x in original(*a, **k):
            if step == at_step:
                raise KeyboardInterrupt
            yield step, x

    monkeypatch.setattr(data, "batches", stop)
    assert _train(store, out) == 130
    monkeypatch.setattr(data, "batches", original)
    assert (out / "checkpoint.safetensors").exists() and not (out / "cfg.json").exists()


def test_truncated_checkpoint_is_named_and_kept(store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(store, out, monkeypatch)
    ckpt = out / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = ckpt.read_bytes()
    assert _train(store, out) == 2
    err = capsys.readouterr().err
    assert f"the checkpoint {ckpt} is unreadable" in err and f"delete {ckpt}" in err
    assert ckpt.read_bytes() == before


def test_checkpoint_of_other_settings_or_another_store_is_refused(store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(store, out, monkeypatch)
    before = (out / "checkpoint.safetensors").read_bytes()
    assert _train(store, out, "--k", "8") == 2
    assert "holds an interrupted run with other settings (k: 4 -> 8)" in capsys.readouterr().err
    x, _ = planted_data(32 * 128, d_in=16, n_features=32, k=3, seed=5)
    other = write_store(tmp_path / "other", x[: 24 * 128].reshape(24, 128, 16), shard_windows=8)
    assert _train(other, out) == 2
    assert "while training on another activation store" in capsys.readouterr().err
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert _train(store, out) == 0  # the right settings resume it
    assert "resuming" in capsys.readouterr().err


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(store, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    out = tmp_path / "run"
    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def save_file(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: write half, then the disk is full
            with open(path, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    assert _train(store, out) == 2
    err = capsys.readouterr().err
    assert "error: no space left on the device" in err and "Traceback" not in err
    ckpt = load_file(str(out / "checkpoint.safetensors"))  # the first checkpoint, whole
    assert ckpt["counter.fired"].sum() > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert _train(store, out) == 0
    assert "resuming" in capsys.readouterr().err and (out / "cfg.json").exists()


def test_finished_run_is_never_overwritten(store, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(store, out) == 0
    weights = (out / "sae_weights.safetensors").read_bytes()
    assert _train(store, out, "--k", "8") == 2
    assert "already holds a trained SAE" in capsys.readouterr().err
    assert (out / "sae_weights.safetensors").read_bytes() == weights
