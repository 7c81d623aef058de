"""SAE loading for every architecture, and `saex eval` checked against sae-lens's own
evaluation and against plain-torch hand computations."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from sae.data.harvest import HarvestConfig, harvest
from sae.data.store import FLAG_OUTLIER, FLAG_SPECIAL, ActivationStore
from sae.errors import SaexError
from sae.runs.evaluate import evaluate
from sae.runs.load import load_sae
from saex.cli import main
from tests.helpers import write_store

HOOK = "blocks.1.hook_resid_post"
D = 32  # d_model of the tiny model


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sharp_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random Llama with its (tied) embeddings scaled up 8x: its predictions are
    no longer near-uniform, so CE_zero - CE_clean and KL_zero are far from 0 and the
    scores are well conditioned."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharp-llama")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sharp_lm(sharp_dir):
    from sae.data.models import load_model

    return load_model(str(sharp_dir), device="cpu")


def _harvest(out, model_dir, corpus, lm, **kw):
    base = dict(out=str(out), model=str(model_dir), corpus=str(corpus), split="heldout", layer=1, tokens=16 * 24,
                context_size=16, shard_windows=8, batch_size=4, device="cpu", progress=False, compile="no",
                storage_dtype="fp32", precision="fp32", outlier_threshold=1e9)
    base.update(kw)
    return harvest(HarvestConfig(**base), lm=lm)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, sharp_dir, sharp_lm, text_corpus):
    """An fp32 held-out store of the sharp model at block 1, no outliers flagged."""
    return _harvest(tmp_path_factory.mktemp("stores") / "acts-heldout", sharp_dir, text_corpus, sharp_lm)


def _save_sae(path, arch="standard", d_in=D, d_sae=2 * D, seed=0, near_identity=False, **meta):
    """An SAE built and saved by sae-lens itself. near_identity: relu(x) - relu(-x) = x,
    with noise in the encoder, so the reconstruction is good but not perfect."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    classes = {"standard": ("StandardSAE", {}), "jumprelu": ("JumpReLUSAE", {}), "gated": ("GatedSAE", {}),
               "topk": ("TopKSAE", {"k": 4})}
    cls_name, extra = classes[arch]
    cfg = getattr(sae_lens, cls_name + "Config")(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(
        hook_name=meta.pop("hook_name", HOOK), **meta), **extra)
    sae = getattr(sae_lens, cls_name)(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.2 * torch.rand(d_sae, generator=g))
        if near_identity:
            eye = torch.eye(d_in)
            sae.W_enc.copy_(torch.cat([eye, -eye], 1) + 0.05 * torch.randn(d_in, d_sae, generator=g))
            sae.W_dec.copy_(torch.cat([eye, -eye], 0))
            sae.b_enc.zero_()
            sae.b_dec.zero_()
    sae.save_model(path)
    return path


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, sharp_lm):
    return _save_sae(tmp_path_factory.mktemp("runs") / "near-identity", near_identity=True,
                     model_weights_sha256=sharp_lm.weights_sha256)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("arch", ["standard", "jumprelu", "gated", "topk", "batchtopk"])
def test_load_sae_matches_sae_lens(arch, tmp_path):
    from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    path = tmp_path / arch
    if arch == "batchtopk":  # saved for inference as jumprelu, with the learnt global threshold
        trainer = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=16, d_sae=48, k=4))
        with torch.no_grad():
            trainer.W_enc.normal_()
            trainer.topk_threshold.fill_(0.5)
        trainer.save_inference_model(path)
    else:
        _save_sae(path, arch, d_in=16, d_sae=48)
    ours = load_sae(path)
    theirs = SAE.load_from_disk(str(path))
    assert ours.architecture == ("jumprelu" if arch == "batchtopk" else arch)
    assert (ours.d_in, ours.d_sae) == (16, 48)
    import hashlib
    assert ours.content_hash == hashlib.sha256((path / "sae_weights.safetensors").read_bytes()).hexdigest()
    x = torch.randn(100, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acts = theirs.encode(x)
        assert (acts != 0).any() and (acts == 0).any()
        torch.testing.assert_close(ours.encode(x), acts, rtol=0, atol=0)
        torch.testing.assert_close(ours.decode(acts), theirs.decode(acts), rtol=0, atol=0)


def test_load_sae_reads_hook_and_model_from_cfg_and_run_json(tmp_path):
    path = _save_sae(tmp_path / "r", "topk", model_name="my-model", model_weights_sha256="abc")
    sae = load_sae(path)
    assert (sae.hook_name, sae.model_spec, sae.model_weights_sha256) == (HOOK, "my-model", "abc")
    (path / "run.json").write_text(json.dumps({"store": "x", "model": {"spec": "other", "weights_sha256": "def"}}))
    sae = load_sae(path)
    assert (sae.model_spec, sae.model_weights_sha256, sae.run["store"]) == ("other", "def", "x")


def test_load_sae_refuses_bad_folders(tmp_path):
    with pytest.raises(SaexError, match="does not exist"):
        load_sae(tmp_path / "nowhere")
    good = _save_sae(tmp_path / "good")
    weights = (good / "sae_weights.safetensors").read_bytes()
    cfg = json.loads((good / "cfg.json").read_text())

    def variant(name, cfg_doc=cfg, data=weights):
        p = tmp_path / name
        p.mkdir()
        if cfg_doc is not None:
            (p / "cfg.json").write_text(json.dumps(cfg_doc))
        if data is not None:
            (p / "sae_weights.safetensors").write_bytes(data)
        return p

    cases = [
        (variant("no-weights", data=None), "sae_weights.safetensors missing"),
        (variant("no-cfg", cfg_doc=None), "cfg.json missing"),
        (variant("truncated", data=weights[:len(weights) - 100]), "truncated or not a safetensors file"),
        (variant("not-safetensors", data=b"\x00" * 64), "truncated or not a safetensors file"),
        (variant("arch", cfg_doc=cfg | {"architecture": "mystery"}), "unknown architecture 'mystery'"),
        (variant("training", cfg_doc=cfg | {"architecture": "batchtopk"}), "save_inference_model"),
        (variant("shape", cfg_doc=cfg | {"d_in": 16}), "has shape .*, but cfg.json \\(d_in 16, d_sae 64\\)"),
    ]
    for path, needle in cases:
        with pytest.raises(SaexError, match=needle):
            load_sae(path)
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "cfg.json").write_text("{not json")
    (tmp_path / "bad-json" / "sae_weights.safetensors").write_bytes(weights)
    with pytest.raises(SaexError, match="not readable JSON"):
        load_sae(tmp_path / "bad-json")


# --------------------------------------------------------------------------- against sae-lens


class _TokenSource:
    """The part of sae-lens's ActivationsStore that run_evals uses: the store's windows in order."""

    def __init__(self, tokens: torch.Tensor, batch: int):
        self.tokens, self.store_batch_size_prompts, self.context_size = tokens, batch, tokens.shape[1]
        self.i = 0

    def get_batch_tokens(self, n):
        out = self.tokens[self.i:self.i + n]
        self.i += n
        return out

    def reset_input_dataset(self):
        self.i = 0


def test_eval_matches_sae_lens_run_evals(good_run, heldout, sharp_lm):
    """Same windows, same special-token exclusion, same SAE: sae-lens's run_evals (through
    HookedProxyLM on the HF model) and ours agree. sae-lens zero-ablates BOS too, so we
    compare with ablate_special=True (our default too); sparing BOS is checked by hand below."""
    from sae_lens import SAE
    from sae_lens.evals import get_eval_everything_config, run_evals
    from sae_lens.load_model import HookedProxyLM
    from sae_lens.training.activation_scaler import ActivationScaler

    ours = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows="all", device="cpu", batch_size=4,
                    ablate_special=True, progress=False)
    tokens = torch.from_numpy(np.load(heldout / "tokens.npy")).long()
    proxy = HookedProxyLM(copy.deepcopy(sharp_lm.model), sharp_lm.tokenizer, hook_names=["model.layers.1"])
    sae = SAE.load_from_disk(str(good_run))
    sae.cfg.metadata.hook_name = "model.layers.1"  # HookedProxyLM names hooks by module path
    cfg = get_eval_everything_config(batch_size_prompts=4, n_eval_reconstruction_batches=len(tokens) // 4,
                                     n_eval_sparsity_variance_batches=len(tokens) // 4)
    cfg.compute_featurewise_weight_based_metrics = False
    theirs, per_latent = run_evals(sae, _TokenSource(tokens, 4), proxy, ActivationScaler(), cfg,
                                   exclude_special_tokens=sharp_lm.special_ids)
    ce, kl = theirs["model_performance_preservation"], theirs["model_behavior_preservation"]
    rec, spars = theirs["reconstruction_quality"], theirs["sparsity"]

    # The forwards are the same fp32 computation; only the order of the final sums differs
    # (measured: relative differences of 1e-7 to 1e-8, scores 1e-6).
    assert ours["ce_clean"] == pytest.approx(ce["ce_loss_without_sae"], rel=1e-5)
    assert ours["ce_spliced"] == pytest.approx(ce["ce_loss_with_sae"], rel=1e-5)
    assert ours["ce_zero_ablated"] == pytest.approx(ce["ce_loss_with_ablation"], rel=1e-5)
    assert ours["kl_spliced"] == pytest.approx(kl["kl_div_with_sae"], rel=1e-5)
    assert ours["kl_zero_ablated"] == pytest.approx(kl["kl_div_with_ablation"], rel=1e-5)
    assert ours["ce_loss_score"] == pytest.approx(ce["ce_loss_score"], rel=1e-4)
    assert ours["kl_score"] == pytest.approx(kl["kl_div_score"], rel=1e-4)
    assert 0.5 < ours["kl_score"] < 1 and abs(ce["ce_loss_with_ablation"] - ce["ce_loss_without_sae"]) > 0.1
    # Pass 1 reads the stored (fp32) activations; sae-lens recomputes them live.
    assert ours["tokens"]["outliers"] == 0  # so "with outliers" and the main figures coincide
    assert ours["explained_variance"] == pytest.approx(rec["explained_variance"], rel=1e-5)
    assert ours["mse"] == pytest.approx(rec["mse"], rel=1e-5)
    assert ours["l0"] == pytest.approx(spars["l0"], rel=1e-6)
    density = torch.tensor(per_latent["feature_density"])
    assert ours["dead_latents"] == int((density == 0).sum())
    assert ours["dense_latents"] == int((density > 0.1).sum())
    sp = ours["splice"]
    assert sp["windows"] == 24 and sp["ce_tokens"] == 24 * 14 and sp["kl_tokens"] == 24 * 15
    assert sp["forward"] == "upper blocks from the residual"


def _hand_splice(lm, sae, ids, patch_mask, zero: bool):
    """Plain torch: a hook on block 1 swaps in the reconstruction (or zeros) where patch_mask."""
    block = lm.model.get_submodule("model.layers.1")

    def swap(_m, _i, out):
        new = torch.zeros_like(out) if zero else sae.decode(sae.encode(out))
        return torch.where(patch_mask.unsqueeze(-1), new, out)

    with torch.no_grad():
        clean = lm.model(input_ids=ids).logits.log_softmax(-1)
        handle = block.register_forward_hook(swap)
        try:
            patched = lm.model(input_ids=ids).logits.log_softmax(-1)
        finally:
            handle.remove()
    keep = ~torch.isin(ids, torch.tensor(lm.special_ids))
    ce = -patched[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)[keep[:, :-1]].mean()
    kl = (clean.exp() * (clean - patched)).sum(-1)[keep].mean()
    return float(ce), float(kl)


def test_outliers_stay_clean_and_bos_is_spared(tmp_path, good_run, heldout, sharp_dir, sharp_lm, text_corpus):
    """Checked by hand: outlier positions keep their clean activation in the splice (the
    default), and ablate_special=False leaves BOS alone in the zero-ablation."""
    from sae_lens import SAE

    norms = ActivationStore(heldout).acts(0).norm(dim=-1)
    flagged = _harvest(tmp_path / "acts-heldout", sharp_dir, text_corpus, sharp_lm,
                       outlier_threshold=float(norms[:, 1:].quantile(0.9)))
    store = ActivationStore(flagged)
    assert 0 < store.manifest["n_outliers"] < 100
    ids = torch.cat([store.tokens(k) for k in range(store.n_shards)]).long()
    flags = torch.cat([store.flags(k) for k in range(store.n_shards)])
    special, outlier = (flags & FLAG_SPECIAL) > 0, (flags & FLAG_OUTLIER) > 0
    sae = SAE.load_from_disk(str(good_run))

    default = evaluate(good_run, store=flagged, model=sharp_lm, ce_windows="all", device="cpu",
                       ablate_special=False, progress=False)
    ce, kl = _hand_splice(sharp_lm, sae, ids, ~special & ~outlier, zero=False)
    assert default["ce_spliced"] == pytest.approx(ce, rel=1e-5)
    assert default["kl_spliced"] == pytest.approx(kl, rel=1e-4)
    ce, kl = _hand_splice(sharp_lm, sae, ids, ~special, zero=True)
    assert default["ce_zero_ablated"] == pytest.approx(ce, rel=1e-5)
    assert default["kl_zero_ablated"] == pytest.approx(kl, rel=1e-4)
    assert default["splice"]["outlier_positions_left_clean"] == int(outlier.sum())
    assert default["splice"]["positions_spliced"] == int((~special & ~outlier).sum())

    every = evaluate(good_run, store=flagged, model=sharp_lm, ce_windows=10, device="cpu", splice_outliers=True,
                     progress=False)
    ce, kl = _hand_splice(sharp_lm, sae, ids[:10], ~special[:10], zero=False)
    assert every["ce_spliced"] == pytest.approx(ce, rel=1e-5)
    assert every["splice"]["windows"] == 10 and every["splice"]["outlier_positions_left_clean"] == 0


def test_generic_hooked_forward_gives_the_same_figures(monkeypatch, good_run, heldout, sharp_lm):
    """Models the fast path does not fit run whole, with a hook swapping the block's output."""
    from sae.data.forward import UpperForward

    fast = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows=8, device="cpu", progress=False)

    def unfit(*_a, **_k):
        raise TypeError("unfamiliar forward signature")

    monkeypatch.setattr(UpperForward, "_upper_logits", unfit)
    slow = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows=8, device="cpu", progress=False)
    assert slow["splice"]["forward"] == "whole model with a replacing hook"
    for key in ("ce_clean", "ce_spliced", "ce_zero_ablated", "kl_spliced", "kl_zero_ablated"):
        assert slow[key] == pytest.approx(fast[key], rel=1e-5), key


def test_ev_mse_l0_equal_a_hand_computation(good_run, heldout):
    from sae_lens import SAE

    r = evaluate(good_run, store=heldout, ce_windows=0, device="cpu", progress=False)
    store = ActivationStore(heldout)
    x = torch.cat([store.acts(k) for k in range(store.n_shards)]).reshape(-1, D)
    f = torch.cat([store.flags(k) for k in range(store.n_shards)]).reshape(-1)
    x = x[f == 0]
    sae = SAE.load_from_disk(str(good_run))
    with torch.no_grad():
        acts = sae.encode(x)
        recon = sae.decode(acts)
    sse = (x - recon).pow(2).sum()
    assert r["mse"] == pytest.approx(float(sse / len(x)), rel=1e-5)
    assert r["explained_variance"] == pytest.approx(float(1 - sse / (x - x.mean(0)).pow(2).sum()), rel=1e-5)
    assert r["l0"] == pytest.approx(float((acts != 0).sum(-1).float().mean()), rel=1e-6)
    assert r["dead_latents"] == int(((acts != 0).sum(0) == 0).sum())
    assert r["tokens"] == {"total": 384, "evaluated": len(x), "outliers": 0, "special_excluded": 24}
    assert r["splice"] is None and r["ce_loss_score"] is None and 0.8 < r["explained_variance"] < 1


def test_ev_with_and_without_outliers_on_a_synthetic_store(tmp_path):
    """An SAE whose reconstruction is relu(x): exact on the ordinary (non-negative)
    vectors, wrong on outliers (negative entries); special vectors are garbage and must
    never count. Latent 7 never fires on ordinary tokens; it is dead."""
    from safetensors.torch import save_file

    d = 8
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 16, d, generator=g) + 0.1
    x[..., 7] = 0
    flags = torch.zeros(40, 16, dtype=torch.uint8)
    flags[:, 0] = FLAG_SPECIAL
    x[:, 0] = -1e6
    flags[::5, 1] = FLAG_OUTLIER
    x[::5, 1] = -50 * torch.rand(8, d, generator=g)
    store = write_store(tmp_path / "store", x, shard_windows=16, flags=flags)
    run = _save_sae(tmp_path / "relu", "standard", d_in=d, d_sae=d, hook_name="blocks.0.hook_resid_post")
    save_file({"W_enc": torch.eye(d), "W_dec": torch.eye(d), "b_enc": torch.zeros(d), "b_dec": torch.zeros(d)},
              str(run / "sae_weights.safetensors"))

    r = evaluate(run, store=store, ce_windows=0, device="cpu", progress=False)
    ordinary = x[flags == 0]
    with_out = x[(flags & FLAG_SPECIAL) == 0]
    sse = (with_out - with_out.relu()).pow(2).sum()
    assert r["mse"] == 0 and r["explained_variance"] == 1
    assert r["mse_with_outliers"] == pytest.approx(float(sse / len(with_out)), rel=1e-6)
    expected_ev = 1 - sse / (with_out - with_out.mean(0)).pow(2).sum()
    assert r["explained_variance_with_outliers"] == pytest.approx(float(expected_ev), rel=1e-6)
    assert r["explained_variance_with_outliers"] < 0.9
    assert r["l0"] == pytest.approx(7.0)
    assert r["l0_with_outliers"] == pytest.approx(float((with_out > 0).sum(-1).float().mean()), rel=1e-6)
    assert r["dead_latents"] == 1 and r["dead_fraction"] == 1 / 8 and r["dense_latents"] == 7
    assert r["tokens"] == {"total": 640, "evaluated": len(ordinary), "outliers": 8, "special_excluded": 40}
    assert r["density_histogram"]["never_fired"] == 1 and sum(r["density_histogram"]["counts"]) == 7


# --------------------------------------------------------------------------- refusals and the CLI


def test_mismatched_store_or_model_is_refused(tmp_path, heldout, tiny_lm, sharp_lm):
    cases = [
        (dict(hook_name="blocks.2.hook_resid_post"), "trained at blocks.2.hook_resid_post, the store .* is at "
                                                     "blocks.1.hook_resid_post"),
        (dict(model_weights_sha256="f" * 64), "trained on model weights ffffffffffff"),
        (dict(d_in=16, d_sae=32), "holds 32-dimensional activations, the SAE reads 16"),
    ]
    for i, (kw, needle) in enumerate(cases):
        run = _save_sae(tmp_path / f"run{i}", **kw)
        with pytest.raises(SaexError, match=needle):
            evaluate(run, store=heldout, ce_windows=0, device="cpu", progress=False)
    for name in ("model.layers.1", "resid_post.1"):  # other names of the store's hook are accepted
        evaluate(_save_sae(tmp_path / name, hook_name=name), store=heldout, ce_windows=0, device="cpu",
                 progress=False)
    run = _save_sae(tmp_path / "ok")
    with pytest.raises(SaexError, match="is not the one the store .* was harvested from"):
        evaluate(run, store=heldout, model=tiny_lm, ce_windows=1, device="cpu", progress=False)


def _cli(capsys, *args):
    code = main(["eval", *map(str, args), "--device", "cpu", "--progress", "no"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_eval_finds_the_heldout_store_and_writes_eval_json(tmp_path, capsys, good_run, heldout):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "run.json").write_text(json.dumps({"store": str(heldout.parent / "acts-train")}))
    code, out, err = _cli(capsys, run, "--ce-windows", "6", "--batch-size", "4")
    assert code == 0, err
    doc = json.loads((run / "eval.json").read_text())
    assert doc["store"]["path"] == str(heldout)
    for key in ("explained_variance", "explained_variance_with_outliers", "mse", "mse_with_outliers", "l0",
                "dead_fraction", "dense_fraction", "ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_score",
                "kl_spliced", "kl_zero_ablated", "kl_score", "tokens", "splice", "sae", "store", "config"):
        assert key in doc
    assert doc["splice"]["windows"] == 6 and doc["sae"]["content_hash"] == load_sae(run).content_hash
    assert "CE-loss score" in out and "explained variance" in out


def test_cli_eval_bad_input_is_one_clear_error(tmp_path, capsys, good_run, heldout, sharp_dir, sharp_lm,
                                               text_corpus):
    code, _, err = _cli(capsys, tmp_path / "missing")
    assert code == 2 and err.startswith("error: the SAE folder") and "fix:" in err and len(err.splitlines()) == 2

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    code, _, err = _cli(capsys, run, "--ce-windows", "0")
    assert code == 2 and "no run.json naming the store" in err and "--store" in err

    (run / "eval.json").write_text("{}")
    weights = run / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    code, _, err = _cli(capsys, run, "--store", heldout, "--ce-windows", "0")
    assert code == 2 and "truncated" in err and len(err.splitlines()) == 2
    assert (run / "eval.json").read_text() == "{}"  # an old report is left alone

    layer0 = _harvest(tmp_path / "acts-l0", sharp_dir, text_corpus, sharp_lm, layer=0, tokens=16 * 8)
    code, _, err = _cli(capsys, good_run, "--store", layer0, "--ce-windows", "0")
    assert code == 2 and "the store" in err and "blocks.0.hook_resid_post" in err

    code, _, err = _cli(capsys, good_run, "--store", heldout, "--ce-windows", "-3")
    assert code == 2 and "--ce-windows must be >= 0" in err


def test_bf16_splice_is_close_to_fp32_and_says_so(good_run, heldout, sharp_lm):
    fp32 = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows=8, device="cpu", progress=False)
    bf16 = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows=8, device="cpu", progress=False,
                    precision="bf16")
    assert (fp32["splice"]["precision"], bf16["splice"]["precision"]) == ("fp32", "bf16")
    for key in ("ce_clean", "ce_spliced", "ce_zero_ablated"):
        assert bf16[key] == pytest.approx(fp32[key], rel=0.02), key
    assert bf16["ce_loss_score"] == pytest.approx(fp32["ce_loss_score"], abs=0.02)
    assert bf16["explained_variance"] == fp32["explained_variance"]  # pass 1 reads the store either way


def test_score_intervals_resample_windows(good_run, heldout, sharp_lm):
    from sae.runs.evaluate import _score_intervals, _Sums

    r = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows="all", device="cpu", progress=False,
                 bootstrap=400)
    for key in ("ce_loss_score", "kl_score"):
        lo, hi = r["intervals"][key]
        assert lo <= r[key] <= hi and lo < hi, key
    assert r["answer"]["verdict"].startswith(f"On {r['tokens']['evaluated']:,} held-out tokens")

    # by hand: per-window sums, the same resampled windows, the scores of each resample in a plain loop
    g = torch.Generator().manual_seed(5)
    n_win = 12
    counts = torch.randint(5, 15, (n_win,))
    ce = {k: _Sums() for k in ("clean", "spliced", "zero")}
    kl = {k: _Sums() for k in ("spliced", "zero")}
    rows = {}
    for k, scale in (("ce_clean", 1.0), ("ce_spliced", 1.2), ("ce_zero", 3.0), ("kl_spliced", 0.1), ("kl_zero", 2.0)):
        per_tok = torch.rand(n_win, 15, generator=g) * scale
        mask = torch.arange(15)[None] < counts[:, None]
        (ce if k.startswith("ce") else kl)[k[3:]].add(per_tok, mask)
        rows[k] = (per_tok.double() * mask).sum(1)
    got = _score_intervals(ce, kl, n_boot=300, seed=3)
    idx = torch.randint(n_win, (300, n_win), generator=torch.Generator().manual_seed(3))
    ce_scores, kl_scores = [], []
    for i in idx:
        s = {k: float(v[i].sum()) for k, v in rows.items()}
        ce_scores.append((s["ce_zero"] - s["ce_spliced"]) / (s["ce_zero"] - s["ce_clean"]))
        kl_scores.append(1 - s["kl_spliced"] / s["kl_zero"])
    for key, scores in (("ce_loss_score", ce_scores), ("kl_score", kl_scores)):
        q = torch.tensor(scores, dtype=torch.float64).quantile(torch.tensor([0.025, 0.975], dtype=torch.float64))
        assert got[key] == pytest.approx(q.tolist(), rel=1e-9), key
    # identical windows: nothing to resample, the interval is the estimate
    same = {k: _Sums() for k in ("clean", "spliced", "zero")}
    same_kl = {k: _Sums() for k in ("spliced", "zero")}
    ones = torch.ones(4, 3, dtype=torch.bool)
    for k, v in (("clean", 1.0), ("spliced", 2.0), ("zero", 5.0)):
        same[k].add(torch.full((4, 3), v), ones)
    for k, v in (("spliced", 0.5), ("zero", 2.0)):
        same_kl[k].add(torch.full((4, 3), v), ones)
    flat = _score_intervals(same, same_kl, n_boot=50)
    assert flat["ce_loss_score"] == pytest.approx([0.75, 0.75]) and flat["kl_score"] == pytest.approx([0.75, 0.75])


def test_evaluate_takes_its_config(good_run, heldout, sharp_lm):
    from sae.runs.evaluate import EvalConfig

    by_config = evaluate(EvalConfig(run=str(good_run), store=str(heldout), ce_windows=4, device="cpu",
                                    progress=False), model=sharp_lm)
    by_names = evaluate(good_run, store=heldout, model=sharp_lm, ce_windows=4, device="cpu", progress=False)
    for key in ("explained_variance", "ce_spliced", "kl_score", "intervals"):
        assert by_config[key] == by_names[key], key
    assert by_config.kind == "eval" and by_config.answer.verdict == by_names.answer.verdict


def test_evaluate_settings_are_evalconfig_fields(good_run, heldout):
    from sae.runs.evaluate import EvalConfig

    with pytest.raises(TypeError, match="ce_window"):  # a misspelt setting is not silently ignored
        evaluate(good_run, store=heldout, ce_window=0)
    with pytest.raises(TypeError, match="not both"):
        evaluate(EvalConfig(run=str(good_run), ce_windows=0), store=heldout, ce_windows=0)
    with pytest.raises(SaexError, match="batch_size"):  # the config's own checks apply to keyword settings too
        evaluate(good_run, store=heldout, ce_windows=0, batch_size=0)
