"""Scoring a label's testable claim ("fires d tokens before token(s) X") on text:
`score_claim` gives precision and recall from one feature's activations and the tokens;
`score_feature_claim` computes those activations at every ordinary position of the
held-out store. One streaming pass with the fast
exact encoder, a few seconds for the demo SAE."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.index.encoder import sparse_encoder
from sae.labels.records import require, validate_claim
from sae.runs.load import LoadedSAE
from sae.runs.stores import default_heldout_store


@dataclass(frozen=True)
class ClaimScore:
    precision: float | None  # hits / fired; None when the feature never fired
    recall: float | None  # hits / targets; None when no target token occurred
    hits: int  # positions that fired and have a claimed token at +offset
    fired: int  # positions that fired (and have a token at +offset to check)
    targets: int  # positions with a claimed token at +offset


def _numpy(x: Any) -> np.ndarray | None:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x) if x is not None else None


def score_claim(claim: dict, acts: Any, token_ids: Any, *, threshold: float = 0.0, mask: Any = None) -> ClaimScore:
    """Precision and recall of a "fires_before" claim on held-out text.

    `acts` ("batch pos" or "pos") is one feature's activation per position, `token_ids`
    the tokens at those positions (numpy or torch). The feature fires at p when
    acts[p] > threshold. Position p counts only when p + offset is inside its window
    (windows never run into each other) and, with `mask` (bool, same shape), when
    mask[p] is True (e.g. to leave out BOS)."""
    claim = validate_claim(claim)
    require(claim is not None, "there is no claim to score", "pass the label's claim")
    acts, tokens, mask = _numpy(acts), _numpy(token_ids), _numpy(mask)
    require(acts.shape == tokens.shape and acts.ndim in (1, 2) and (mask is None or mask.shape == acts.shape),
          f"acts {acts.shape}, token_ids {tokens.shape} and mask {None if mask is None else mask.shape} "
          "must have one shape, (pos) or (batch, pos)", "pass one feature's activations and the matching tokens")
    require(np.issubdtype(tokens.dtype, np.integer), f"token_ids must be integers, got {tokens.dtype}",
          "pass token ids")
    require(bool(np.isfinite(acts).all()), "acts contain NaN or inf", "recompute the activations")
    require(isinstance(threshold, (int, float)) and math.isfinite(threshold), f"bad threshold {threshold!r}",
          "pass a finite number")
    acts, tokens = np.atleast_2d(acts), np.atleast_2d(tokens)
    keep = np.ones(acts.shape, bool) if mask is None else np.atleast_2d(mask).astype(bool)
    width = acts.shape[1] - claim["offset"]  # positions p with p + offset inside the window
    if width <= 0:
        return ClaimScore(None, None, 0, 0, 0)
    fired = (acts[:, :width] > threshold) & keep[:, :width]
    target = np.isin(tokens[:, claim["offset"]:], claim["tokens"]) & keep[:, :width]
    hits, n_fired, n_target = int((fired & target).sum()), int(fired.sum()), int(target.sum())
    return ClaimScore(hits / n_fired if n_fired else None, hits / n_target if n_target else None,
                      hits, n_fired, n_target)


def feature_activations(sae: LoadedSAE, feature: int,
                        store: ActivationStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(acts, token ids, ordinary mask), each "window pos", for one feature over the store.
    Special and outlier positions are not encoded (activation 0, mask False)."""
    encode = sparse_encoder(sae)
    acts, toks, mask = [], [], []
    for k in range(store.n_shards):
        a = store.acts(k)
        flags = store.flags(k).numpy()
        w, p = flags.shape
        ordinary = flags == 0
        out = np.zeros(w * p, dtype=np.float32)
        x = a.reshape(-1, store.d_model)[torch.from_numpy(ordinary.reshape(-1))].float()
        rows = np.flatnonzero(ordinary.reshape(-1))
        for i in range(0, len(x), 32768):
            codes = encode(x[i:i + 32768])
            hit = codes.cols == feature
            out[rows[i + codes.rows[hit]]] = codes.vals[hit]
        acts.append(out.reshape(w, p))
        toks.append(store.tokens(k).numpy())
        mask.append(ordinary)
    return np.concatenate(acts), np.concatenate(toks), np.concatenate(mask)


def score_feature_claim(sae: LoadedSAE, feature: int, claim: dict, store: str | Path | None = None) -> ClaimScore:
    """Precision and recall of `claim` for `feature` on the held-out store (default: the run's)."""
    claim = validate_claim(claim)
    st = ActivationStore(store or default_heldout_store(sae))
    acts, toks, mask = feature_activations(sae, feature, st)
    return score_claim(claim, acts, toks, mask=mask)
