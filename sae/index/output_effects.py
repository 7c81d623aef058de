"""What each feature's decoder direction does to the next-token logits, and which
features point the same way. The one definition of a direction's direct effect on the
vocabulary: the index, the labels, the lookahead and the word finder all read it from here.

Direct effect of a residual direction d on token t, with the final norm's scale frozen (the
usual direct logit attribution for a pre-norm model):

    effect[t] = (g * c(d)) . (U[t] - mean_t U[t])

g is the final norm's gain (read from the module itself, so Gemma's 1 + weight is right too),
c(d) centres d where the norm centres its input (LayerNorm) and is d itself for RMSNorm. This is
the first-order change of logit t, relative to the vocabulary mean, when d is added to a residual
of RMS 1 whose own direction d does not move (for a residual of RMS s, divide by s). It keeps the
decoder row's norm, so a feature whose decoder row is twice as long has twice the effect. The
blocks after the hook are skipped: this is the direct path only. Centring on the vocabulary mean
drops what a direction adds to every logit alike, which softmax ignores.
"""

from __future__ import annotations

import numpy as np
import torch

from sae.errors import SaexError


def final_norm_and_unembedding(lm) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The final norm module and the unembedding of a loaded model (`LoadedModel`'s accessor)."""
    return lm.final_norm_and_unembedding()


@torch.no_grad()
def frozen_norm(lm) -> tuple[torch.Tensor, bool]:
    """The final norm with its scale frozen, as (gain "d_model", centres): read off the module by
    putting probe vectors of mean 0 and RMS 1 through it (norm(v) - norm(0) = gain * v for them), and
    a constant vector, which a centring norm (LayerNorm) maps to its bias alone."""
    norm, unembed = final_norm_and_unembedding(lm)
    n, dev = unembed.weight.shape[1], unembed.weight.device
    zero = norm(torch.zeros(1, n, device=dev)).float()[0]
    gain = torch.zeros(n)
    for shift in (0, 1):  # with an odd width one coordinate of each probe is 0: the other probe covers it
        v = torch.ones(n)
        v[1 - shift::2] = -1.0
        if n % 2:
            v[(n - 1 + shift) % n] = 0.0
        v = v / v.pow(2).mean().sqrt()
        out = (norm(v[None].to(dev)).float()[0] - zero).cpu()
        gain = torch.where(v != 0, out / torch.where(v != 0, v, torch.ones(())), gain)
    const = (norm(torch.ones(1, n, device=dev)).float()[0] - zero).cpu()
    return gain, bool(const.abs().max() <= 1e-3 * gain.abs().max())


@torch.no_grad()
def unembedding_directions(lm, w_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h "d_sae d_model", U "vocab d_model"): h @ U.T is each decoder row's direct effect on each
    token (the module's definition): h = gain * c(W_dec), U the unembedding less its vocabulary mean."""
    _, unembed = final_norm_and_unembedding(lm)
    w = w_dec.detach().float().cpu()
    if w.shape[1] != unembed.weight.shape[1]:
        raise SaexError(f"the SAE's decoder has width {w.shape[1]}, the model's unembedding {unembed.weight.shape[1]}",
                        "use the model the SAE was trained on (--model)")
    gain, centres = frozen_norm(lm)
    if centres:
        w = w - w.mean(1, keepdim=True)
    U = unembed.weight.detach().float().cpu()
    return w * gain, U - U.mean(0)


@torch.no_grad()
def token_directions(lm, token_ids) -> torch.Tensor:
    """ "k d_model": for each token, the vector whose dot product with a residual direction is that
    direction's direct effect on the token's logit (the module's definition), so that
    directions @ token_directions(lm, ids).T is the effect of each direction on each token."""
    _, unembed = final_norm_and_unembedding(lm)
    gain, centres = frozen_norm(lm)
    U = unembed.weight.detach().float().cpu()
    w = (U[torch.as_tensor(list(token_ids), dtype=torch.long)] - U.mean(0)) * gain
    return w - w.mean(1, keepdim=True) if centres else w


@torch.no_grad()
def output_effects(h: torch.Tensor, U: torch.Tensor, n_tokens: int = 20, n_features: int = 32,
                   block: int = 4096) -> dict[str, np.ndarray]:
    """Per feature, the n_tokens most boosted and most suppressed tokens; per token, the
    n_features features that boost it most. The d_sae x vocab matrix is made in blocks."""
    F, V = h.shape[0], U.shape[0]
    n_tokens, n_features = min(n_tokens, V), min(n_features, F)
    tok_val = torch.empty(V, n_features)
    tok_feat = torch.empty(V, n_features, dtype=torch.long)
    cands = {True: [], False: []}  # per block: each feature's best (largest) / worst tokens
    for s in range(0, V, block):
        e = h @ U[s:s + block].T  # "d_sae block"
        for largest in (True, False):
            v, i = e.topk(min(n_tokens, e.shape[1]), dim=1, largest=largest)
            cands[largest].append((v, i + s))
        # top-k along contiguous rows: a transposed copy is cheaper than a strided top-k
        tok_val[s:s + e.shape[1]], tok_feat[s:s + e.shape[1]] = e.T.contiguous().topk(n_features, dim=1)
    out = {}
    for largest, name in ((True, "boost"), (False, "suppress")):
        v, i = (torch.cat([c[j] for c in cands[largest]], 1) for j in (0, 1))
        v, j = v.topk(n_tokens, dim=1, largest=largest)
        out[f"{name}_token"], out[f"{name}_value"] = i.gather(1, j).int().numpy(), v.numpy()
    return out | {"token_feature": tok_feat.int().numpy(), "token_feature_value": tok_val.numpy()}


@torch.no_grad()
def decoder_neighbours(w_dec: torch.Tensor, n: int = 10, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the n other features with the highest decoder cosine similarity."""
    w = w_dec.float().cpu()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    F = len(w)
    n = min(n, F - 1)
    ids, cos = np.zeros((F, n), np.int32), np.zeros((F, n), np.float32)
    for s in range(0, F, block):
        sim = w[s:s + block] @ w.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + s] = -torch.inf
        v, i = sim.topk(n, dim=1)
        ids[s:s + block], cos[s:s + block] = i.numpy(), v.numpy()
    return ids, cos
