"""A label's claim scored on held-out text equals a brute-force count over sae-lens's encode."""

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.labels.claims import score_feature_claim
from sae.runs.load import load_sae


def test_claim_score_equals_brute_force(indexed_run):
    root, run = indexed_run
    sae = load_sae(run)
    store = ActivationStore(root / "acts-heldout")
    acts, toks, flags = [], [], []
    for k in range(store.n_shards):
        with torch.no_grad():
            acts.append(sae.encode(store.acts(k).float()).numpy())
        toks.append(store.tokens(k).numpy())
        flags.append(store.flags(k).numpy())
    acts, toks, flags = np.concatenate(acts), np.concatenate(toks), np.concatenate(flags)
    feature = int((acts[flags == 0] > 0).sum(0).argmax())  # the busiest feature: many firings to count
    d = 1
    fired_next = toks[:, d:][(acts[:, :-d, feature] > 0) & (flags[:, :-d] == 0)]
    targets = [int(t) for t in np.unique(fired_next)[:2]]
    hits = fired = n_targets = 0
    for w in range(acts.shape[0]):
        for p in range(acts.shape[1] - d):
            if flags[w, p] != 0:
                continue
            f = acts[w, p, feature] > 0
            t = int(toks[w, p + d]) in targets
            hits += f and t
            fired += f
            n_targets += t
    got = score_feature_claim(sae, feature, {"kind": "fires_before", "offset": d, "tokens": targets},
                              store=root / "acts-heldout")
    assert (got.hits, got.fired, got.targets) == (hits, fired, n_targets)
    assert got.precision == hits / fired and got.recall == hits / n_targets
