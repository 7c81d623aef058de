"""Where an SAE loses the article signal (depth/coverage.py), on the planted direction of
test_lookahead_depth.py: SAEs whose latents hold everything, nothing, the planted direction
or only directions orthogonal to it, each with its hand-known answer; and the split's
arithmetic against hand-made numbers."""

import pytest
import torch

from sae.lookahead.depth import DepthConfig, layer_table, run_depth
from sae.lookahead.depth.coverage import _latent_counts, probe_split
from sae.lookahead.interventions import decoder_directions
from tests.test_lookahead_depth import PLANT_LAYER, planted  # noqa: F401  (the fixture)


def _sae(path, lm, w_enc: torch.Tensor, w_dec: torch.Tensor, layer: int = PLANT_LAYER):
    """A sae-lens StandardSAE (ReLU) with the given weights, zero biases, saved to `path`."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    cfg = sae_lens.StandardSAEConfig(
        d_in=lm.d_model, d_sae=w_dec.shape[0],
        metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post", hf_hook_name=f"model.layers.{layer}",
                             model_name=lm.spec, model_weights_sha256=lm.weights_sha256))
    sae = sae_lens.StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.save_model(path)
    return path


def _plus_minus(dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents +dir and -dir for each row of dirs "m d": with ReLU, their decoded sum is the
    exact projection of the input onto those (orthonormal) directions."""
    dec = torch.cat([dirs, -dirs])
    return dec.T.clone(), dec


def _planted_vector(lm) -> torch.Tensor:
    tok = lm.tokenizer
    w = lm.model.get_output_embeddings().weight.detach()
    a_id, an_id = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" a", " an"))
    v = w[an_id] - w[a_id]
    return v / v.norm()


def _run(planted_file, lm, run, out):
    cfg = DepthConfig(model="tiny", run=str(run), layers=str(PLANT_LAYER), prompts=str(planted_file), out=str(out),
                      random_directions=20, sae_features=2, device="cpu", progress=False)
    r = run_depth(cfg, lm=lm)
    return r, r["sae_coverage"][str(PLANT_LAYER)]


@pytest.mark.integration
def test_coverage_of_sae_that_hold_all_none_or_part_of_the_signal(planted, tiny_lm, tmp_path):  # noqa: F811
    d = tiny_lm.d_model
    eye = torch.eye(d)
    # everything: latents +e_i and -e_i reconstruct every input exactly, the error term is 0
    r, c = _run(planted, tiny_lm, _sae(tmp_path / "all", tiny_lm, *_plus_minus(eye)), tmp_path / "o1")
    p = c["probe_direction"]
    assert p["latents_share"] == pytest.approx(1, abs=1e-4) and p["error_share"] == pytest.approx(0, abs=1e-4)
    assert c["relative_error"] < 1e-5
    err_abl, lat_abl = c["causal"]["error_mean_ablated"], c["causal"]["latents_mean_ablated"]
    assert abs(err_abl["fraction_removed"]) < 1e-3  # the error term is 0: its mean is 0, nothing changes
    # every test prompt gets the same residual at -1; earlier positions hold filler words only
    assert lat_abl["fraction_removed"] > 0.9
    assert c["retrained_probe"]["reconstruction"]["above_chance"]
    assert not c["retrained_probe"]["error"]["above_chance"]
    head = f"SAE at layer {PLANT_LAYER}, where the article signal sits"
    assert any(line.startswith(head) and "so most of it is in its latents" in line for line in r.answer.lines)
    row = layer_table(r)[0]
    assert row["probe separation in latents"] == pytest.approx(1, abs=1e-4)

    # nothing: a zero decoder reconstructs the bias only, the error term is the whole residual
    w_enc, _ = _plus_minus(eye[:4])
    _, c = _run(planted, tiny_lm, _sae(tmp_path / "none", tiny_lm, w_enc, torch.zeros(8, d)), tmp_path / "o2")
    p = c["probe_direction"]
    assert p["latents_share"] == pytest.approx(0, abs=1e-6) and p["error_share"] == pytest.approx(1, abs=1e-6)
    assert p["latents_for_half"] is None
    assert abs(c["causal"]["latents_mean_ablated"]["fraction_removed"]) < 1e-3
    assert c["causal"]["error_mean_ablated"]["fraction_removed"] > 0.9

    # the planted direction itself: the latents hold the probe's signal and the causal gap
    v = _planted_vector(tiny_lm)
    _, c = _run(planted, tiny_lm, _sae(tmp_path / "v", tiny_lm, *_plus_minus(v[None])), tmp_path / "o3")
    p = c["probe_direction"]
    # the probe reads (almost) only the planted direction, which these latents reconstruct exactly
    assert 0.9 < p["latents_share"] < 1.1 and p["latents_share_ci"][0] > 0.8
    assert p["latents_for_half"] == 1  # one of the two latents (+v) carries it
    lat, err = (c["causal"][k]["fraction_removed"] for k in ("latents_mean_ablated", "error_mean_ablated"))
    assert lat > 0.8 and err < 0.4

    # directions orthogonal to it: the error term holds the signal, ablating the latents does little
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, d, generator=g)
    w = w - (w @ v)[:, None] * v
    q, _ = torch.linalg.qr(w.T)
    _, c = _run(planted, tiny_lm, _sae(tmp_path / "perp", tiny_lm, *_plus_minus(q.T)), tmp_path / "o4")
    p = c["probe_direction"]
    assert p["error_share"] > 0.9 and abs(p["latents_share"]) < 0.1
    assert c["retrained_probe"]["error"]["above_chance"] and not c["retrained_probe"]["reconstruction"]["above_chance"]
    lat, err = (c["causal"][k]["fraction_removed"] for k in ("latents_mean_ablated", "error_mean_ablated"))
    assert err > 0.8 and abs(lat) < 0.2


class _LinearSAE:
    """encode: x @ E (no nonlinearity), decode: a @ D + b: the split is then hand-computable."""

    device = torch.device("cpu")

    def __init__(self, e, dec, b):
        self.e, self.dec, self.b, self.d_sae = e, dec, b, dec.shape[0]

    def encode(self, x):
        return x @ self.e

    def decode(self, a):
        return a @ self.dec + self.b


def test_probe_split_by_hand():
    # two latents on axes 0 and 1; the probe direction reads axes 0 and 2
    e = torch.tensor([[1.0, 0], [0, 1], [0, 0]])
    sae = _LinearSAE(e, e.T.clone(), torch.tensor([0.0, 0, 5]))
    h = torch.tensor([[2.0, 1, 9], [4, 0, 7], [0, 1, 1], [0, 3, 3]])
    is_an = torch.tensor([True, True, False, False])
    u = torch.tensor([1.0, 0, 1]) / 2 ** 0.5
    out = probe_split(sae, h, is_an, u, chosen=[1], n_boot=200, seed=0)
    # u.h: an 11, 11 -> 11; a 1, 3 -> 2: separation 9 / sqrt 2. Latents: x_hat.u = (h0 + 5) / sqrt 2: an 8, a 5
    # -> 3 / sqrt 2; error (h2 - 5) / sqrt 2: an 3, a -3 -> 6 / sqrt 2
    assert out["separation"] == pytest.approx(9 / 2 ** 0.5)
    assert out["latents"] == pytest.approx(3 / 2 ** 0.5) and out["error"] == pytest.approx(6 / 2 ** 0.5)
    assert out["latents_share"] == pytest.approx(1 / 3) and out["error_share"] == pytest.approx(2 / 3)
    assert out["chosen_share"] == pytest.approx(0)  # latent 1 writes axis 1, which u does not read
    assert out["latents_for_half"] == 1 and out["n_latents_contributing"] == 1
    torch.testing.assert_close(decoder_directions(sae), e.T)
    # contributions 3, 1, 1, -1 of a total 4: half takes 1 latent, 90% (3.6) takes 3
    assert _latent_counts(torch.tensor([1.0, -1, 3, 1]), 4.0) == {"half": 1, "most": 2}
    assert _latent_counts(torch.tensor([1.0, 2]), 0.0) == {"half": None, "most": None}
