"""The one definition of a direction's direct effect on the vocabulary (sae/index/output_effects.py)
against the logit change it stands for, computed through the real final norm and unembedding: on
the tiny Llama (RMSNorm), on a LayerNorm head and on a Gemma-style norm whose gain is 1 + weight."""

import copy

import torch

from sae.index.output_effects import frozen_norm, token_directions, unembedding_directions


def _logit_change(norm, unembed, x, d, eps=1e-3):
    """(logits(x + eps d) - logits(x)) / eps, less its vocabulary mean: by plain torch, in float64."""
    norm, unembed = copy.deepcopy(norm).double(), copy.deepcopy(unembed).double()  # never the shared model
    with torch.no_grad():
        change = (unembed(norm(x + eps * d)) - unembed(norm(x))) / eps
    return (change - change.mean(-1, keepdim=True)).float()


def _orthogonal(d, x):
    """d with its component along x (and, for a centring norm, along the constant vector) removed: the
    direction the frozen-scale effect is exact for, to first order."""
    for u in x:
        u = u / u.norm()
        d = d - (d @ u)[:, None] * u
    return d


def _check(lm, norm, unembed, centres: bool, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = unembed.weight.shape[1]
    x = torch.randn(1, n, generator=g, dtype=torch.float64) * 3
    basis = [x[0] - x[0].mean(), torch.ones(n, dtype=torch.float64)] if centres else [x[0]]
    d = _orthogonal(torch.randn(4, n, generator=g, dtype=torch.float64) + 0.5, basis)
    scale = (x - x.mean()).pow(2).mean().sqrt() if centres else x.pow(2).mean().sqrt()
    want = _logit_change(norm, unembed, x, d) * float(scale)  # the definition is per residual of RMS 1
    h, U = unembedding_directions(lm, d.float())
    torch.testing.assert_close(h @ U.T, want, rtol=2e-3, atol=2e-3)
    ids = [0, 5, n // 2]
    torch.testing.assert_close(d.float() @ token_directions(lm, ids).T, want[:, ids], rtol=2e-3, atol=2e-3)


class _Head:
    def __init__(self, norm, unembed):
        self.pair = (norm, unembed)

    def final_norm_and_unembedding(self):
        return self.pair


def test_direct_effect_is_the_logit_change_through_the_tiny_models_rmsnorm(tiny_lm):
    norm, unembed = tiny_lm.final_norm_and_unembedding()
    gain, centres = frozen_norm(tiny_lm)
    torch.testing.assert_close(gain, norm.weight.detach().float(), rtol=1e-4, atol=1e-5)
    assert not centres
    _check(tiny_lm, norm, unembed, centres=False)


def test_direct_effect_through_a_layernorm_centres_the_direction():
    torch.manual_seed(0)
    norm, unembed = torch.nn.LayerNorm(33), torch.nn.Linear(33, 50, bias=False)  # odd width: both probes used
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    head = _Head(norm, unembed)
    gain, centres = frozen_norm(head)
    assert centres
    torch.testing.assert_close(gain, norm.weight.detach(), rtol=1e-4, atol=1e-5)
    _check(head, norm, unembed, centres=True)


class _GemmaNorm(torch.nn.Module):
    """x / rms(x) * (1 + weight), as Gemma's RMSNorm scales."""

    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n) * 0.3)

    def forward(self, x):
        return x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * (1 + self.weight)


def test_direct_effect_reads_the_gain_off_the_module_not_its_weight():
    torch.manual_seed(1)
    norm, unembed = _GemmaNorm(24), torch.nn.Linear(24, 40, bias=False)
    head = _Head(norm, unembed)
    gain, centres = frozen_norm(head)
    torch.testing.assert_close(gain, 1 + norm.weight.detach(), rtol=1e-4, atol=1e-5)
    assert not centres
    _check(head, norm, unembed, centres=False)
