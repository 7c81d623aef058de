"""Scoring a label's testable claim ("fires d tokens before token(s) X") on held-out text:
the feature's activation at every ordinary position of the held-out store, then
sae.labels.store.score_claim's precision and recall. One streaming pass with the fast
exact encoder, a few seconds for the demo SAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.index.encoder import sparse_encoder
from sae.labels.store import ClaimScore, score_claim, validate_claim
from sae.runs.evaluate import default_heldout_store
from sae.runs.load import LoadedSAE


def feature_activations(sae: LoadedSAE, feature: int, store: ActivationStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
