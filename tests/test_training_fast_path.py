"""Our fast TopK/BatchTopK path: sparse backward, BatchTopK saved as sae-lens saves it,
resume after kill -9, and torchrun data parallelism."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import train_cfg
from training.topk import FastTopKSAE, auxk_loss
from training.train import train

ROOT = Path(__file__).resolve().parents[1]


def _dense_reference_loss(sae, x, codes, dead, aux_k):
    """The same loss through plain dense autograd: mask the pre-activations to the chosen
    latents, decode with a matmul, AuxK from a masked top-k."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    mask = torch.zeros_like(pre, dtype=torch.bool)
    mask[codes.rows, codes.cols] = True
    residual = x - ((pre * mask).relu() @ sae.W_dec + sae.b_dec)
    v, i = pre.masked_fill(~dead, -math.inf).topk(aux_k, dim=-1)
    aux_recon = torch.zeros_like(pre).scatter(-1, i, v.relu()) @ sae.W_dec
    r = residual.detach()
    aux = (aux_recon - r).pow(2).sum(-1).mean() / (r - r.mean(0)).pow(2).sum(-1).mean()
    return residual.pow(2).sum(-1).mean() + aux


@pytest.mark.parametrize("batch_topk", [False, True])
def test_sparse_backward_equals_dense_autograd(batch_topk):
    torch.manual_seed(0)
    sae = FastTopKSAE(16, 64, 4, batch_topk=batch_topk).double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(32, 16, dtype=torch.float64)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    codes, pre, xc = sae.encode(x)
    residual = x - sae.decode(codes)
    (residual.pow(2).sum(-1).mean() + auxk_loss(sae, xc, pre, residual.detach(), dead, 5)).backward()
    ours = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    _dense_reference_loss(sae, x, codes, dead, 5).backward()
    for n, p in sae.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-10, atol=1e-10, msg=n)
    if batch_topk:
        assert len(codes.vals) == 4 * 32  # k per vector on average over the batch
    else:
        assert (torch.bincount(codes.rows, minlength=32) == 4).all()


def test_batch_topk_entries_equal_a_full_topk():
    from training.topk import batch_topk_entries

    g = torch.Generator().manual_seed(1)
    skewed = torch.randn(64, 256, generator=g)
    skewed[:3] += 10  # three rows hold most of the batch's top values: the "full rows" path
    for pre in (torch.randn(64, 256, generator=g), skewed):
        full = torch.zeros(pre.numel(), dtype=torch.bool)
        full[pre.relu().flatten().topk(8 * 64).indices] = True
        cut = float(pre.flatten().topk(8 * 64).values.min())
        for hint in (0.0, cut, cut * 0.9, cut * 2):  # none, good, loose, too high (falls back)
            rows, cols = batch_topk_entries(pre, 8, hint)
            assert torch.equal(torch.stack([rows, cols]), torch.stack(full.view_as(pre).nonzero(as_tuple=True))), hint


def test_batchtopk_trains_and_sae_lens_loads_it_as_jumprelu(planted_store, tmp_path):
    from sae_lens import SAE

    store, x, _ = planted_store
    run = train(train_cfg(store, tmp_path / "run", architecture="batchtopk", epochs=4, shards_in_memory=4))
    theirs = SAE.load_from_disk(str(run), device="cpu")
    assert theirs.cfg.architecture() == "jumprelu"
    w = load_file(str(run / "sae_weights.safetensors"))
    assert (w["threshold"] > 0).all() and torch.unique(w["threshold"]).numel() == 1
    with torch.no_grad():
        acts = theirs.encode(x)
        recon = theirs.decode(acts)
    ev = 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    l0 = (acts > 0).sum(-1).float().mean()
    assert ev > 0.8
    assert 2 <= l0 <= 8, l0  # the learnt threshold keeps about k = 4 latents per vector
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _weights(run):
    return load_file(str(Path(run) / "sae_weights.safetensors"))


def _train_cmd(store, out, **flags):
    cmd = [sys.executable, "-m", "saex", "train", "--store", str(store), "--out", str(out)]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


FLAGS = dict(d_sae=512, k=8, batch_size=512, epochs=40, lr=3e-3, lr_end=3e-4, warmup_steps=10, dead_after=5000,
             device="cpu", progress="false", shards_in_memory=4, checkpoint_every=10)


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_then_rerun_equals_uninterrupted_run(planted_store, tmp_path, seed):
    """A run killed at a random point after some checkpoint and rerun ends with exactly the
    weights of a run that was never interrupted (same seed, same data order)."""
    store, _, _ = planted_store
    flags = dict(FLAGS, seed=seed)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train_cmd(store, tmp_path / "whole", **flags), check=True, cwd=ROOT, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(store, out, **flags), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_after = 0.05 + 0.3 * seed
    deadline = time.time() + 120
    while not (out / "checkpoint.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(wait_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "cfg.json").exists(), "the run finished before it could be killed: make it longer"
    done = subprocess.run(_train_cmd(store, out, **flags), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    a, b = _weights(tmp_path / "whole"), _weights(out)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not (out / "checkpoint.safetensors").exists()
    steps = [__import__("json").loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


@pytest.mark.integration
def test_torchrun_two_processes_match_one(planted_store, tmp_path):
    """Data-parallel training over 2 gloo processes, each reading half of every batch, ends
    within float round-off of single-process training on the same batches."""
    store, _, _ = planted_store
    flags = dict(FLAGS, epochs=4, checkpoint_every=0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train_cmd(store, tmp_path / "one", **flags), check=True, cwd=ROOT, env=env, capture_output=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           *_train_cmd(store, tmp_path / "two", **flags)[2:]]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-4, msg=name)
