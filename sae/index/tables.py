"""The index's finishing step: from the streamed statistics to the per-feature tables
(top and activation-band examples with their contexts, next-token profiles by count and
by lift, the search table) and, from the weights, output effects and decoder neighbours.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sae.data.store import TOKENS_FILE, ActivationStore
from sae.index.config import IndexConfig
from sae.index.encoder import bit_width, value_key
from sae.index.output_effects import decoder_neighbours, output_effects, unembedding_directions
from sae.index.stats import FeatureStats, group_rank
from sae.runs.load import LoadedSAE


def _top_per_group(group: np.ndarray, order_keys: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first n entries of each group under lexsort order `order_keys`
    (last = primary after the group), and their rank within the group."""
    order = np.lexsort(order_keys + [group])
    rank = group_rank(group[order])
    keep = rank < n
    return order[keep], rank[keep]


def _contexts(tokens: np.ndarray, pos: np.ndarray, before: int, after: int) -> np.ndarray:
    """Token ids around global positions `pos` ("..." shaped; -1 = no example), -1 outside the window."""
    T = tokens.shape[1]
    offs = np.arange(-before, after + 1)
    win, t = np.divmod(np.maximum(pos, 0), T)
    q = t[..., None] + offs
    ok = (q >= 0) & (q < T) & (pos[..., None] >= 0)
    out = np.full(q.shape, -1, np.int32)
    out[ok] = tokens[np.broadcast_to(win[..., None], q.shape)[ok], q[ok]]
    return out


def _examples(stats: FeatureStats, tokens: np.ndarray, cfg: IndexConfig) -> dict[str, np.ndarray]:
    s, T = stats.state, stats.T
    pos = s["top_pos"]
    ok = pos >= 0
    tok = _contexts(tokens, pos, stats.before, stats.after)
    out = {"top_value": np.where(ok, s["top_val"], np.nan).astype(np.float32),
           "top_window": np.where(ok, pos // T, -1), "top_position": np.where(ok, pos % T, -1).astype(np.int32),
           "top_tokens": tok, "top_acts": np.where(tok >= 0, s["top_ctx"], np.nan).astype(np.float32)}
    out.update(_bands(stats, tokens, cfg))
    return out


def _bands(stats: FeatureStats, tokens: np.ndarray, cfg: IndexConfig) -> dict[str, np.ndarray]:
    """Split each feature's sampled firings into `bands` equal-count bands by activation
    (np.array_split of the values sorted high to low) and keep the `per_band` of each band
    with the smallest sample hash (a uniform pick within the band)."""
    s, T = stats.state, stats.T
    F, R = s["smp_pos"].shape
    B, S, C = cfg.bands, cfg.per_band, stats.before + 1 + stats.after
    f = np.repeat(np.arange(F), R)
    pos, val, h = s["smp_pos"].reshape(-1), s["smp_val"].reshape(-1), s["smp_key"].reshape(-1)
    ok = pos >= 0
    f, pos, val, h = f[ok], pos[ok], val[ok], h[ok]
    src = np.flatnonzero(ok)
    order = np.lexsort((pos, -val, f))
    f, pos, val, h, src = f[order], pos[order], val[order], h[order], src[order]
    n = np.bincount(f, minlength=F)[f]
    rank = group_rank(f)
    q, rem = np.divmod(n, B)
    big = rem * (q + 1)  # the first `rem` bands hold q + 1 (np.array_split)
    band = np.where(rank < big, rank // np.maximum(q + 1, 1), rem + (rank - big) // np.maximum(q, 1))
    lo = np.full((F, B), np.nan, np.float32)
    hi = np.full((F, B), np.nan, np.float32)
    np.fmin.at(lo, (f, band), val)
    np.fmax.at(hi, (f, band), val)
    keep, _ = _top_per_group(f * B + band, [pos, h], S)
    fk, bk, pk, vk, sk = f[keep], band[keep], pos[keep], val[keep], src[keep]
    o = np.lexsort((pk, -vk, fk * B + bk))  # within a band: highest activation first
    fk, bk, pk, vk, sk = fk[o], bk[o], pk[o], vk[o], sk[o]
    slot = group_rank(fk * B + bk)
    b_pos = np.full((F, B, S), -1, np.int64)
    b_val = np.full((F, B, S), np.nan, np.float32)
    b_acts = np.full((F, B, S, C), np.nan, np.float32)
    b_pos[fk, bk, slot], b_val[fk, bk, slot] = pk, vk
    b_acts[fk, bk, slot] = s["smp_ctx"].reshape(F * R, C)[sk]
    okb = b_pos >= 0
    b_tok = _contexts(tokens, b_pos, stats.before, stats.after)
    return {"band_value": b_val, "band_window": np.where(okb, b_pos // T, -1),
            "band_position": np.where(okb, b_pos % T, -1).astype(np.int32),
            "band_tokens": b_tok, "band_acts": np.where(b_tok >= 0, b_acts, np.nan).astype(np.float32),
            "band_low": lo, "band_high": hi}


def _profiles(stats: FeatureStats, cfg: IndexConfig) -> tuple[dict, dict]:
    """Per feature and offset: the following tokens by count and by lift; and the search table."""
    tables = stats.pair_tables()
    F, V, L = stats.d_sae, stats.vocab, len(stats.offsets)
    key, count = tables["pair_key"], tables["pair_count"]  # key = (offset * V + token) * F + feature, ascending
    N = cfg.top_tokens
    dt = key // F  # offset * V + token
    feat = key - dt * F
    group = feat * L + dt // V
    gb, tb = bit_width(F * L), bit_width(V)
    pb = 63 - gb - tb  # bits left for the score in a packed sort key
    feats = {}
    # By count. A pair seen once cannot make a group's top N when N pairs of the group were
    # seen twice or more: dropping those first leaves far less to sort.
    repeated = np.bincount(group[count >= 2], minlength=F * L)
    i = np.flatnonzero((count >= 2) | (repeated[group] < N))
    g, c, tok = group[i], count[i], dt[i] % V
    if int(c.max(initial=0)) < 1 << pb:  # (group, count descending, token) packed: a plain sort, decoded after
        packed = np.sort((g << (pb + tb)) | (((1 << pb) - 1 - c) << tb) | tok)
        g = packed >> (pb + tb)
        c = (1 << pb) - 1 - ((packed >> tb) & ((1 << pb) - 1))
        tok = packed & ((1 << tb) - 1)
    else:
        order = np.lexsort((tok, -c, g))
        g, c, tok = g[order], c[order], tok[order]
    rank = group_rank(g)
    top = rank < N
    g, c, tok, rank = g[top], c[top], tok[top], rank[top]
    f_, d_ = g // L, g % L
    feats.update(_profile_arrays("follow", F, L, N, f_, d_, rank, tok, c, _lift(tables, c, d_, tok, f_)))
    # By lift, over pairs seen at least profile_min_count times.
    i = np.flatnonzero(count >= cfg.profile_min_count)
    g, c, tok = group[i], count[i], dt[i] % V
    lift = _lift(tables, c, g % L, tok, g // L)
    if pb >= 32:
        order = np.argsort((g << (pb + tb)) | (value_key(lift) << tb) | tok)
    else:
        order = np.lexsort((tok, -lift, g))
    rank = group_rank(g[order])
    top = order[rank < N]
    rank = rank[rank < N]
    feats.update(_profile_arrays("follow_by_lift", F, L, N, g[top] // L, g[top] % L, rank, tok[top], c[top], lift[top]))
    kept = count >= cfg.min_pair_count
    ptr = np.searchsorted(dt[kept], np.arange(L * V + 1))
    search = {"pair_ptr": ptr.astype(np.int64), "pair_feature": feat[kept].astype(np.int32),
              "pair_count": count[kept].astype(np.int64), "token_count": tables["token_count"],
              "fires_at": tables["fires_at"], "positions_at": tables["positions_at"]}
    return feats, search


def _profile_arrays(name: str, F: int, L: int, N: int, f, d, rank, tok, c, lift) -> dict[str, np.ndarray]:
    """"F L N" arrays of the chosen (feature f, offset d, rank) entries; -1 / 0 / NaN elsewhere."""
    t_out = np.full((F, L, N), -1, np.int32)
    c_out = np.zeros((F, L, N), np.int64)
    l_out = np.full((F, L, N), np.nan, np.float32)
    t_out[f, d, rank], c_out[f, d, rank], l_out[f, d, rank] = tok, c, lift
    return {f"{name}_token": t_out, f"{name}_count": c_out, f"{name}_lift": l_out}


def _lift(tables: dict, count: np.ndarray, d: np.ndarray, tok: np.ndarray, feat: np.ndarray) -> np.ndarray:
    """P(token at +d | feature fires) / P(token at +d), as float32."""
    precision = count / np.maximum(tables["fires_at"][d, feat], 1)
    base = tables["token_count"][d, tok] / np.maximum(tables["positions_at"][d], 1)
    return (precision / np.maximum(base, 1e-300)).astype(np.float32)


def vocab_strings(lm, V: int) -> list[str]:
    tok = lm.tokenizer
    n = min(V, len(tok))
    strings = tok.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    return list(strings) + [""] * (V - n)


def finish_tables(cfg: IndexConfig, sae: LoadedSAE, store: ActivationStore, lm,
                  stats: FeatureStats) -> tuple[dict, dict]:
    s = stats.state
    tokens = np.load(store.path / TOKENS_FILE, mmap_mode="r")
    fires = s["fires"]
    n_tok = max(int(s["n_tokens"][0]), 1)
    feats = {"fires": fires, "density": (fires / n_tok).astype(np.float32),
             "mean_activation": (s["act_sum"] / np.maximum(fires, 1)).astype(np.float32),
             "max_activation": np.where(fires > 0, s["top_val"][:, 0], np.nan).astype(np.float32),
             "hist": s["hist"], "hist_edges": stats.edges}
    # The last pair runs merge in a second thread while the weights' effects are computed.
    with ThreadPoolExecutor(max_workers=1) as pool:
        merged = pool.submit(stats.flush)
        w_dec = sae.sae.W_dec.detach().float().cpu()
        h, U = unembedding_directions(lm, w_dec)
        eff = output_effects(h, U, cfg.top_tokens, cfg.token_features)
        feats["neighbour"], feats["neighbour_cos"] = decoder_neighbours(w_dec, cfg.neighbours)
        feats.update(_examples(stats, tokens, cfg))
        merged.result()
    prof, search = _profiles(stats, cfg)
    feats.update(prof)
    search["token_feature"], search["token_feature_value"] = eff.pop("token_feature"), eff.pop("token_feature_value")
    feats.update(eff)
    return feats, search
