"""Build the feature index of an SAE run: `saex index RUN` -> RUN/index/.

One streaming pass over a held-out activation store (shard by shard, in chunks of whole
windows, so memory does not grow with the store) encodes every ordinary token (special
tokens and norm outliers are never encoded, so they never appear as examples) and feeds
`sae.index.stats.FeatureStats`. Then, from the weights alone: output-token effects
(`sae.index.output_effects`) and decoder-cosine neighbours. The result is laid out for lazy
reading by `sae.index.reader.FeatureIndex` (see docs/formats.md).

Resume and atomicity: after a shard, when `checkpoint_seconds` have passed since the last
save, the running statistics are saved atomically to RUN/index/partial/; a rerun of the
same command with the same settings continues after the last saved shard and ends with
the same index as an uninterrupted build. The index files are written by rename and the
manifest last; a rebuild deletes the old manifest first, so an interrupted build never
leaves an index that loads as complete.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, remove_stale_temps, sha256_file, write_json_atomic
from sae.index.encoder import NonFiniteInput, bit_width, sparse_encoder, value_key
from sae.index.reader import FEATURES_FILE, INDEX_FORMAT, MANIFEST_FILE, SEARCH_FILE, VOCAB_FILE, index_dir
from sae.index.stats import FeatureStats, group_rank, hist_edges
from sae.runs.load import LoadedSAE, load_sae

PARTIAL_DIR = "partial"
STATE_FILE = "state.safetensors"


@dataclass
class IndexConfig:
    """Build the feature index of an SAE run from a held-out activation store."""

    run: str = ""
    """Run folder of the SAE; the index goes to RUN/index/."""
    store: str | None = None
    """Held-out activation store; default: the run's training store with -train in its name replaced by -heldout."""
    model: str | None = None
    """Model for token strings and output effects; default: the model the store was harvested from."""
    top_k: int = 20
    """Top activating examples kept per feature (one per window, at the window's peak)."""
    context_before: int = 10
    """Tokens of context kept before an example's peak token."""
    context_after: int = 5
    """Tokens of context kept after an example's peak token."""
    bands: int = 5
    """Activation-quantile bands of the sampled examples (5 = quintiles)."""
    per_band: int = 4
    """Examples shown per quantile band."""
    reservoir: int = 40
    """Firings sampled per feature (uniformly, seeded) from which the bands are formed."""
    lookahead: int = 3
    """Next-token profiles at offsets 1..lookahead (offset 0, the current token, is always kept)."""
    top_tokens: int = 20
    """Tokens listed per feature and offset (next-token profiles), and boosted/suppressed tokens."""
    profile_min_count: int = 3
    """A token needs this many co-occurrences to enter a feature's lift-ranked profile."""
    token_features: int = 32
    """Features kept per vocabulary token for search by output token."""
    neighbours: int = 10
    """Decoder-cosine nearest neighbours kept per feature."""
    min_pair_count: int = 2
    """(feature, token, offset) pairs seen fewer times are left out of the search table."""
    chunk_tokens: int = 32768
    """Tokens encoded at once (whole windows); bounds memory."""
    seed: int = 0
    """Seed of the example sampling."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N (the exact TopK fast path runs on CPU; other cases encode densely)."""
    checkpoint_seconds: float = 60.0
    """Save the running statistics after a shard when this long has passed since the last save."""
    force: bool = False
    """Rebuild even if a complete index with the same settings exists."""
    progress: bool = True
    """Show a progress bar."""

    # Settings that change the index's content (a complete index with others is rebuilt).
    CONTENT_FIELDS = ("top_k", "context_before", "context_after", "bands", "per_band", "reservoir", "lookahead",
                      "top_tokens", "profile_min_count", "token_features", "neighbours", "min_pair_count", "seed")

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex index RUN")
        for name in ("top_k", "bands", "per_band", "reservoir", "top_tokens", "token_features", "neighbours",
                     "min_pair_count", "chunk_tokens", "profile_min_count"):
            if int(getattr(self, name)) < 1:
                raise SaexError(f"{name} must be at least 1, got {getattr(self, name)}",
                                f"pass a positive --{name.replace('_', '-')}")
        for name in ("context_before", "context_after", "lookahead"):
            if int(getattr(self, name)) < 0:
                raise SaexError(f"{name} must be >= 0, got {getattr(self, name)}",
                                f"pass --{name.replace('_', '-')} 0 or more")
        if self.reservoir < self.bands * self.per_band:
            raise SaexError(f"reservoir ({self.reservoir}) is smaller than bands x per_band "
                            f"({self.bands} x {self.per_band})", "raise --reservoir or lower --bands / --per-band")

    def content(self) -> dict:
        return {k: getattr(self, k) for k in self.CONTENT_FIELDS}


# --------------------------------------------------------------------------- inputs


def _store_for(cfg: IndexConfig, sae: LoadedSAE) -> ActivationStore:
    from sae.runs.evaluate import check_store, default_heldout_store

    store = ActivationStore(cfg.store or default_heldout_store(sae))
    for w in check_store(sae, store):
        print(f"warning: {w}", file=sys.stderr)
    return store


def _model_for(cfg: IndexConfig, store: ActivationStore):
    from sae.data.models import load_model

    return load_model(cfg.model or store.manifest["model"]["spec"], device="cpu")


def _check_model(lm, store: ActivationStore) -> None:
    known = {None, "", "none", "unknown"}
    store_sha = store.manifest["model"].get("weights_sha256")
    if store_sha not in known and lm.weights_sha256 not in known and lm.weights_sha256 != store_sha:
        raise SaexError(f"the model {lm.spec} is not the one the store {store.path} was harvested from "
                        f"({store.manifest['model']['spec']})", "pass --model with the store's model, or leave it out")


def _vocab_size(lm, store: ActivationStore) -> int:
    v = int(lm.model.get_output_embeddings().weight.shape[0])
    top = int(np.load(store.path / "tokens.npy", mmap_mode="r").max(initial=0))
    if top >= v:
        raise SaexError(f"the store {store.path} holds token id {top}, beyond the vocabulary ({v}) of {lm.spec}",
                        "pass --model with the model the store was harvested from")
    return v


def _key(cfg: IndexConfig, sae: LoadedSAE, store: ActivationStore, lm) -> str:
    """What the index depends on: a complete index with the same key is reused."""
    doc = {"format": INDEX_FORMAT, "sae": sae.content_hash, "store": sha256_file(store.path / "manifest.json"),
           "model": lm.weights_sha256, "settings": cfg.content()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- state checkpoints


def _save_state(path: Path, stats: FeatureStats, key: str, shards_done: int) -> None:
    from safetensors.numpy import save_file

    stats.flush()
    with atomic_path(path) as tmp:
        save_file(stats.state, str(tmp), metadata={"key": key, "shards_done": str(shards_done)})


def _load_state(path: Path, stats: FeatureStats, key: str) -> int:
    """Shards already folded into the saved state (0 if there is none for this key)."""
    from safetensors import safe_open

    if not path.exists():
        return 0
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return 0
            state = {name: f.get_tensor(name) for name in f.keys()}
    except Exception:  # a damaged checkpoint only costs the work it held
        return 0
    if set(state) != set(stats.state) or any(state[k].shape[1:] != stats.state[k].shape[1:] for k in state):
        return 0
    stats.state = state
    return int(meta["shards_done"])


# --------------------------------------------------------------------------- the pass


def _chunks(store: ActivationStore, first_shard: int, windows: int):
    """(shard, first window in shard, token ids, flat ordinary positions, their vectors, last chunk
    of the shard?) for chunks of whole windows. The first chunks are smaller (1/8, 1/4, 1/2 of
    `windows`), and so are the last ones of the store (half of what is left), so that neither
    thread waits long for the other at the start or at the end."""
    d = store.d_model
    smallest = max(1, windows // 8)
    size = smallest
    for k in range(first_shard, store.n_shards):
        acts, toks, flags = store.acts(k), store.tokens(k).numpy(), store.flags(k).numpy()
        w0 = 0
        while w0 < len(acts):
            left = len(acts) - w0
            if k == store.n_shards - 1:
                size = min(size, max(smallest, (left + 1) // 2))
            w1 = w0 + min(size, left)
            ordinary = np.flatnonzero(flags[w0:w1].reshape(-1) == 0)
            yield k, w0, toks[w0:w1], ordinary, acts[w0:w1].reshape(-1, d)[torch.from_numpy(ordinary)], w1 == len(acts)
            w0, size = w1, min(2 * size, windows)


class _EncodeJob:
    """One chunk's encoding, `block` rows at a time. The worker thread starts it; the
    statistics thread, once it has folded in the previous chunk, helps with the blocks that
    are left, so neither core waits for the other whichever side is slower."""

    def __init__(self, encoder, x: torch.Tensor):
        self.encoder, self.x = encoder, x
        self.starts = range(0, len(x), encoder.block)
        self.results: list = [None] * len(self.starts)
        self.taken = self.finished = 0
        self.lock = threading.Lock()
        self.all_done = threading.Event()
        if not self.starts:
            self.all_done.set()

    def work(self) -> None:
        while True:
            with self.lock:
                if self.taken == len(self.starts):
                    return
                i = self.taken
                self.taken += 1
            start = self.starts[i]
            try:
                res = self.encoder.encode_block(self.x[start:start + self.encoder.block], start)
            except BaseException as e:  # handed to the thread that collects the result
                res = e
            with self.lock:
                self.results[i] = res
                self.finished += 1
                if self.finished == len(self.starts):
                    self.all_done.set()

    def cancel(self) -> None:
        with self.lock:
            self.taken = len(self.starts)

    def result(self):
        self.work()
        self.all_done.wait()
        for r in self.results:
            if isinstance(r, BaseException):
                raise r
        return self.encoder.finish(self.x, self.results)


def _stream(cfg: IndexConfig, store: ActivationStore, stats: FeatureStats, encoder, first_shard: int,
            save) -> None:
    """Encode the next chunks in a worker thread while this thread folds in the current one,
    then helps to encode what is left of the next (`_EncodeJob`). Torch and NumPy release
    the GIL, so the cores share the work; each thread's torch ops get half of torch's threads."""
    from tqdm.auto import tqdm

    T = store.context_size
    shard_windows = int(store.manifest["shard_windows"])
    total = sum(s["n_windows"] for s in store.manifest["shards"][first_shard:]) * T
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="index", disable=not cfg.progress, smoothing=0.1)
    last_save = time.monotonic()
    chunks = _chunks(store, first_shard, max(1, cfg.chunk_tokens // T))
    pending: deque = deque()
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=1)

    def start_next() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            job = _EncodeJob(encoder, chunk[4])
            pool.submit(job.work)
            pending.append((chunk, job))

    torch.set_num_threads(max(1, threads // 2))
    try:
        start_next()
        start_next()  # two chunks ahead: the worker never waits for this thread to hand it work
        while pending:
            (k, w0, toks, ordinary, _, shard_done), job = pending.popleft()
            try:
                codes = job.result()
            except NonFiniteInput:
                raise SaexError(f"NaN/inf activations in shard {k} of {store.path}",
                                "harvest the store again (with --precision fp32 if it persists)") from None
            start_next()
            stats.add((k * shard_windows + w0) * T, toks, ordinary, codes.cols, ordinary[codes.rows], codes.vals)
            bar.update(toks.size)
            if shard_done and k + 1 < store.n_shards and time.monotonic() - last_save >= cfg.checkpoint_seconds:
                save(k + 1)  # merges the pending pair runs first
                last_save = time.monotonic()
    finally:
        for _, job in pending:
            job.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(threads)
    bar.close()


# --------------------------------------------------------------------------- finishing


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


def _vocab(lm, V: int) -> list[str]:
    tok = lm.tokenizer
    n = min(V, len(tok))
    strings = tok.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    return list(strings) + [""] * (V - n)


def _finish(cfg: IndexConfig, sae: LoadedSAE, store: ActivationStore, lm, stats: FeatureStats) -> tuple[dict, dict]:
    from sae.index.output_effects import decoder_neighbours, output_effects, unembedding_directions

    s = stats.state
    tokens = np.load(store.path / "tokens.npy", mmap_mode="r")
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


def _write(out: Path, feats: dict, search: dict, vocab: list[str], manifest: dict) -> None:
    from safetensors.numpy import save_file

    files = {}
    for name, arrays in ((FEATURES_FILE, feats), (SEARCH_FILE, search)):
        with atomic_path(out / name) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        files[name] = {"bytes": (out / name).stat().st_size, "arrays": sorted(arrays)}
    write_json_atomic(out / VOCAB_FILE, {"tokens": vocab})
    files[VOCAB_FILE] = {"bytes": (out / VOCAB_FILE).stat().st_size}
    write_json_atomic(out / MANIFEST_FILE, manifest | {"files": files})  # last: marks the index complete


# --------------------------------------------------------------------------- entry point


def build_index(cfg: IndexConfig, sae: LoadedSAE | None = None, lm=None) -> Path:
    """Build (or finish, or reuse) RUN/index; return its path."""
    from sae.data.models import resolve_device

    t0 = time.perf_counter()
    dev = resolve_device(cfg.device)
    sae = sae or load_sae(cfg.run, device=dev)
    store = _store_for(cfg, sae)
    lm = lm or _model_for(cfg, store)
    _check_model(lm, store)
    out = index_dir(cfg.run)
    key = _key(cfg, sae, store, lm)
    mpath = out / MANIFEST_FILE
    if mpath.exists() and not cfg.force:
        try:
            if json.loads(mpath.read_text()).get("key") == key:
                print(f"index {out} is already complete", file=sys.stderr)
                return out
        except (OSError, json.JSONDecodeError):
            pass
    V = _vocab_size(lm, store)
    ensure_writable_dir(out, "feature index")
    partial = ensure_writable_dir(out / PARTIAL_DIR, "feature index")
    remove_stale_temps(out)
    remove_stale_temps(partial)
    mpath.unlink(missing_ok=True)  # from here on the folder holds no complete index
    stats = FeatureStats(sae.d_sae, V, store.context_size, top_k=cfg.top_k, reservoir=cfg.reservoir,
                         before=cfg.context_before, after=cfg.context_after, lookahead=cfg.lookahead, seed=cfg.seed,
                         edges=hist_edges())
    state_path = partial / STATE_FILE
    done = 0 if cfg.force else _load_state(state_path, stats, key)
    if done:
        print(f"resuming the index after shard {done} of {store.n_shards}", file=sys.stderr)
    encoder = sparse_encoder(sae)
    t1 = time.perf_counter()
    try:
        _stream(cfg, store, stats, encoder, done, lambda k: _save_state(state_path, stats, key, k))
        t2 = time.perf_counter()
        feats, search = _finish(cfg, sae, store, lm, stats)
        vocab = _vocab(lm, V)
        t3 = time.perf_counter()
        n_streamed = sum(s["n_windows"] for s in store.manifest["shards"][done:]) * store.context_size
        manifest = {
            "format": INDEX_FORMAT, "key": key, "sae": sae.describe(),
            "store": {"path": str(store.path), "manifest_sha256": sha256_file(store.path / "manifest.json"),
                      "hook": store.hook_name, "split": store.manifest["corpus"].get("split"),
                      "context_size": store.context_size, "n_windows": store.n_windows},
            "model": {"spec": lm.spec, "weights_sha256": lm.weights_sha256, "vocab_size": V},
            "settings": cfg.content(), "offsets": stats.offsets.tolist(), "d_sae": sae.d_sae,
            "tokens_indexed": int(stats.state["n_tokens"][0]),
            "encoder": {"kind": type(encoder).__name__,
                        "dense_fallback_rows": getattr(encoder, "dense_rows", None)},
            "seconds": {"setup": t1 - t0, "stream": t2 - t1, "finish": t3 - t2},
            "stream_tokens_per_s": n_streamed / max(t2 - t1, 1e-9),
            "resumed_after_shard": done or None,
            "config": asdict(cfg),
        }
        _write(out, feats, search, vocab, manifest)
    except OSError as e:
        raise SaexError(f"could not write the feature index {out}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun the same command: it resumes "
                        "from the last saved shard") from None
    state_path.unlink(missing_ok=True)
    if not any(partial.iterdir()):
        partial.rmdir()
    return out
