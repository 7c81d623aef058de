import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sae.data.harvest import HarvestConfig, harvest
from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL, ActivationStore
from sae.errors import SaexError


def _cfg(out, model_dir, corpus, **kw):
    base = dict(out=str(out), model=str(model_dir), corpus=str(corpus), tokens=16 * 40, context_size=16,
                shard_windows=8, batch_size=4, device="cpu", progress=False, compile="no")
    base.update(kw)
    return HarvestConfig(**base)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(lm, ids, layer):
    with torch.no_grad():
        return lm.model(input_ids=torch.as_tensor(ids).long(), output_hidden_states=True).hidden_states[layer + 1]


def test_store_equals_transformers_hidden_states(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    cfg = _cfg(tmp_path / "s", tiny_model_dir, text_corpus, layer=1, storage_dtype="fp32", precision="fp32")
    store = ActivationStore(harvest(cfg, lm=tiny_lm))
    m = store.manifest
    assert m["n_windows"] == 40 and m["n_shards"] == 5 and m["n_tokens"] == 640
    assert m["hook"] == {"name": "blocks.1.hook_resid_post", "layer": 1, "module_path": "model.layers.1"}
    assert m["model"]["weights_sha256"] == tiny_lm.weights_sha256 and m["d_model"] == 32
    all_tokens = np.load(store.path / "tokens.npy")
    n_special = n_out = 0
    for k in range(store.n_shards):
        toks = store.tokens(k)
        assert toks.tolist() == all_tokens[8 * k: 8 * k + 8].tolist()
        assert (toks[:, 0] == tiny_lm.bos_id).all()
        ref = _hidden(tiny_lm, toks, 1)
        torch.testing.assert_close(store.acts(k), ref, rtol=1e-5, atol=1e-5)
        flags = store.flags(k)
        assert ((flags & FLAG_SPECIAL) > 0).tolist() == torch.isin(toks, torch.tensor(tiny_lm.special_ids)).tolist()
        assert ((flags & FLAG_OUTLIER) > 0).tolist() == (ref.norm(dim=-1) > m["outlier_threshold"]).tolist()
        usable = store.usable(k)
        torch.testing.assert_close(usable, ref.reshape(-1, 32)[(flags == 0).reshape(-1)], rtol=1e-5, atol=1e-5)
        n_special += int(((flags & FLAG_SPECIAL) > 0).sum())
        n_out += int(((flags & FLAG_OUTLIER) > 0).sum())
    assert (m["n_special"], m["n_outliers"]) == (n_special, n_out)
    assert m["n_usable"] == sum(len(u) for u in store.iter_usable())
    store.verify()


def test_bf16_storage_is_fp32_rounded(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    cfg = _cfg(tmp_path / "s", tiny_model_dir, text_corpus, precision="fp32", storage_dtype="bf16", tokens=16 * 8)
    store = ActivationStore(harvest(cfg, lm=tiny_lm))
    assert store.acts(0).dtype == torch.bfloat16
    ref = _hidden(tiny_lm, store.tokens(0), tiny_lm.default_layer)
    assert torch.equal(store.acts(0), ref.to(torch.bfloat16))


def test_fixed_outlier_threshold(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    probe = _cfg(tmp_path / "a", tiny_model_dir, text_corpus, precision="fp32", storage_dtype="fp32", tokens=16 * 8)
    norms = ActivationStore(harvest(probe, lm=tiny_lm)).acts(0).norm(dim=-1)
    cut = float(norms.quantile(0.9))
    cfg = _cfg(tmp_path / "b", tiny_model_dir, text_corpus, precision="fp32", storage_dtype="fp32",
               tokens=16 * 8, outlier_threshold=cut)
    store = ActivationStore(harvest(cfg, lm=tiny_lm))
    assert store.manifest["outlier_threshold"] == cut
    assert ((store.flags(0) & FLAG_OUTLIER) > 0).tolist() == (norms > cut).tolist()
    positions = store.manifest["outlier_positions"]
    assert sum(positions.values()) == int((norms > cut).sum())


def test_rerun_skips_and_mismatch_is_refused(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    out = tmp_path / "s"
    harvest(_cfg(out, tiny_model_dir, text_corpus), lm=tiny_lm)
    before = _snapshot(out)
    harvest(_cfg(out, tiny_model_dir, text_corpus), lm=tiny_lm)  # complete: nothing to do
    assert _snapshot(out) == before
    with pytest.raises(SaexError, match="other settings"):
        harvest(_cfg(out, tiny_model_dir, text_corpus, layer=0), lm=tiny_lm)
    with pytest.raises(SaexError, match="other settings"):
        harvest(_cfg(out, tiny_model_dir, text_corpus, tokens=16 * 41), lm=tiny_lm)
    # an unfinished store with another plan is refused too
    (out / "manifest.json").unlink()
    partial = _snapshot(out)
    with pytest.raises(SaexError, match="other settings"):
        harvest(_cfg(out, tiny_model_dir, text_corpus, context_size=32), lm=tiny_lm)
    assert _snapshot(out) == partial


def test_foreign_or_unwritable_output_is_refused(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SaexError, match="not an activation store"):
        harvest(_cfg(foreign, tiny_model_dir, text_corpus), lm=tiny_lm)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(SaexError, match="cannot write"):
        harvest(_cfg(blocker / "store", tiny_model_dir, text_corpus), lm=tiny_lm)
    with pytest.raises(SaexError, match="is a file"):
        harvest(_cfg(blocker, tiny_model_dir, text_corpus), lm=tiny_lm)
    assert blocker.read_text() == "x"


def test_empty_corpus_is_refused(tmp_path, tiny_lm, tiny_model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SaexError, match="gave no train text"):
        harvest(_cfg(tmp_path / "s", tiny_model_dir, empty), lm=tiny_lm)
    assert not (tmp_path / "s").exists()


def test_incomplete_and_corrupt_stores_are_named(tmp_path, tiny_lm, tiny_model_dir, text_corpus):
    with pytest.raises(SaexError, match="not a complete activation store"):
        ActivationStore(tmp_path)
    out = harvest(_cfg(tmp_path / "s", tiny_model_dir, text_corpus, tokens=16 * 16), lm=tiny_lm)
    victim = out / "shards" / "00001.acts.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(SaexError, match="shard 1 \\(acts\\)"):
        ActivationStore(out).verify()


def _cli(*args, env_extra=None):
    env = os.environ | (env_extra or {})
    return [sys.executable, "-m", "saex", *args], env


def _harvest_args(out, model_dir, corpus, *extra):
    return ["harvest", "--out", str(out), "--model", str(model_dir), "--corpus", str(corpus),
            "--tokens", str(16 * 240), "--context-size", "16", "--shard-windows", "2", "--batch-size", "2",
            "--device", "cpu", "--progress", "no", "--compile", "no", *extra]


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill9_then_rerun_gives_identical_store(tmp_path, tiny_model_dir, text_corpus, seed):
    import random

    kill_after = random.Random(seed).randint(2, 40)  # shards complete when the kill comes
    ref = tmp_path / "ref"
    cmd, env = _cli(*_harvest_args(ref, tiny_model_dir, text_corpus))
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    for attempt in range(3):  # a fresh store each time, in case a run finished before the kill
        victim = tmp_path / f"victim{attempt}"
        cmd, env = _cli(*_harvest_args(victim, tiny_model_dir, text_corpus))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and len(list((victim / "shards").glob("*.json"))) < kill_after:
            if proc.poll() is not None:
                break
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if not (victim / "manifest.json").exists():
            break
    done = len(list((victim / "shards").glob("*.json")))
    assert not (victim / "manifest.json").exists() and 0 < done < 120, "the kill came too late to test a resume"
    out = subprocess.run(_cli(*_harvest_args(victim, tiny_model_dir, text_corpus))[0], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert _snapshot(victim) == _snapshot(ref)


@pytest.mark.integration
def test_two_processes_fill_one_store(tmp_path, tiny_model_dir, text_corpus):
    ref, split = tmp_path / "ref", tmp_path / "split"
    cmd, env = _cli(*_harvest_args(ref, tiny_model_dir, text_corpus))
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    procs = [subprocess.Popen(_cli(*_harvest_args(split, tiny_model_dir, text_corpus, "--shard", f"{i}/2"))[0],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
    assert _snapshot(split) == _snapshot(ref)


@pytest.mark.integration
@pytest.mark.parametrize("extra,needle", [
    (["--layer", "9"], "layer 9 is out of range: the model has 4 blocks"),
    (["--corpus", "/nonexistent/corpus.txt"], "corpus /nonexistent/corpus.txt does not exist"),
    (["--shard", "2/2"], "bad shard spec"),
    (["--storage-dtype", "int8"], "invalid choice: 'int8'"),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, tiny_model_dir, text_corpus, extra, needle):
    args = _harvest_args(tmp_path / "s", tiny_model_dir, text_corpus)
    i = args.index(extra[0]) if extra[0] in args else None
    if i is not None:
        args[i + 1] = extra[1]
    else:
        args += extra
    cmd, env = _cli(*args)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert needle in out.stderr and "fix:" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.integration
def test_cli_unknown_model_is_one_clear_error(tmp_path, text_corpus):
    cmd, env = _cli("harvest", "--out", str(tmp_path / "s"), "--model", "nobody/nothing-here",
                    "--corpus", str(text_corpus), "--device", "cpu")
    out = subprocess.run(cmd, env=env | {"HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown model spec 'nobody/nothing-here'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "s").exists()


def test_shard_spec_and_torchrun_environment(monkeypatch):
    from sae.data.harvest import parse_shard

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parse_shard(None) == (0, 1)
    assert parse_shard("1/3") == (1, 3)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_shard(None) == (2, 4)
    assert parse_shard("0/1") == (0, 1)  # an explicit spec wins
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(SaexError, match="bad shard spec"):
            parse_shard(bad)
