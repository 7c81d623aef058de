"""What each feature's decoder direction does to the next-token logits, and which
features point the same way.

Output effect of feature f on token t: the decoder row W_dec[f] is put through the
model's final norm as if it were the residual stream, then through the unembedding,
relative to the vocabulary mean:

    h_f = norm(W_dec[f]) - norm(0)          (norm(0) removes a LayerNorm's bias; 0 for RMSNorm)
    effect[f, t] = h_f . (U[t] - mean_t U[t])

This is the direct path only (the blocks after the hook are skipped) and the norm is
applied to the direction alone, so effects are logits per unit-RMS residual along the
direction: comparable across features and tokens, not the exact change a firing makes.
Centring on the vocabulary mean drops what a direction adds to every logit alike, which
softmax ignores.
"""

from __future__ import annotations

import numpy as np
import torch

from sae.errors import SaexError


def final_norm_and_unembedding(lm) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The final norm module and the unembedding of a loaded model (`LoadedModel`'s accessor)."""
    return lm.final_norm_and_unembedding()


@torch.no_grad()
def unembedding_directions(lm, w_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h "d_sae d_model": decoder rows through the final norm, U "vocab d_model" centred)."""
    norm, unembed = final_norm_and_unembedding(lm)
    dev = unembed.weight.device
    w = w_dec.to(dev, torch.float32)
    if w.shape[1] != unembed.weight.shape[1]:
        raise SaexError(f"the SAE's decoder has width {w.shape[1]}, the model's unembedding {unembed.weight.shape[1]}",
                        "use the model the SAE was trained on (--model)")
    h = norm(w).float() - norm(torch.zeros(1, w.shape[1], device=dev)).float()
    U = unembed.weight.float()
    return h.cpu(), (U - U.mean(0)).cpu()


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
