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
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sae.data.store import MANIFEST_FILE as STORE_MANIFEST
from sae.data.store import TOKENS_FILE, ActivationStore
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, remove_stale_temps, sha256_file, write_json_atomic
from sae.index.aligned import FILE as ALIGNED_FILE
from sae.index.aligned import ArticleProfile, article_forms
from sae.index.config import IndexConfig
from sae.index.encoder import sparse_encoder
from sae.index.reader import FEATURES_FILE, INDEX_FORMAT, MANIFEST_FILE, SEARCH_FILE, VOCAB_FILE, index_dir
from sae.index.stats import FeatureStats, hist_edges
from sae.index.stream import stream
from sae.index.tables import finish_tables, vocab_strings
from sae.runs.load import LoadedSAE, load_sae, resolve_run

PARTIAL_DIR = "partial"
STATE_FILE = "state.safetensors"


# --------------------------------------------------------------------------- inputs


def _store_for(cfg: IndexConfig, sae: LoadedSAE) -> ActivationStore:
    from sae.runs.stores import check_store, default_heldout_store

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
    top = int(np.load(store.path / TOKENS_FILE, mmap_mode="r").max(initial=0))
    if top >= v:
        raise SaexError(f"the store {store.path} holds token id {top}, beyond the vocabulary ({v}) of {lm.spec}",
                        "pass --model with the model the store was harvested from")
    return v


def _key(cfg: IndexConfig, sae: LoadedSAE, store: ActivationStore, lm) -> str:
    """What the index depends on: a complete index with the same key is reused."""
    doc = {"format": INDEX_FORMAT, "sae": sae.content_hash, "store": sha256_file(store.path / STORE_MANIFEST),
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


def _write(out: Path, feats: dict, search: dict, vocab: list[str], manifest: dict,
           aligned: dict | None = None) -> None:
    from safetensors.numpy import save_file

    files = {}
    (out / ALIGNED_FILE).unlink(missing_ok=True)  # an older build's, for other article ids or offsets
    for name, arrays in ((FEATURES_FILE, feats), (SEARCH_FILE, search), (ALIGNED_FILE, aligned)):
        if arrays is None:
            continue
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
    run = resolve_run(cfg.run)  # a release/sae_id or sparsify folder: our run folder
    sae = sae or load_sae(run, device=dev)
    store = _store_for(cfg, sae)
    lm = lm or _model_for(cfg, store)
    _check_model(lm, store)
    out = Path(cfg.out).expanduser() if cfg.out else index_dir(run)
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
    forms, left_out = article_forms(lm.tokenizer)
    profile = ArticleProfile(sae.d_sae, store.context_size, forms, cfg.aligned_before, cfg.aligned_after) \
        if forms else None
    stats = FeatureStats(sae.d_sae, V, store.context_size, top_k=cfg.top_k, reservoir=cfg.reservoir,
                         before=cfg.context_before, after=cfg.context_after, lookahead=cfg.lookahead, seed=cfg.seed,
                         edges=hist_edges(), aligned=profile, max_pair_entries=cfg.max_pair_entries)
    state_path = partial / STATE_FILE
    done = 0 if cfg.force else _load_state(state_path, stats, key)
    if done:
        print(f"resuming the index after shard {done} of {store.n_shards}", file=sys.stderr)
    encoder = sparse_encoder(sae)
    t1 = time.perf_counter()
    try:
        stream(store, stats, encoder, done, lambda k: _save_state(state_path, stats, key, k),
               chunk_tokens=cfg.chunk_tokens, checkpoint_seconds=cfg.checkpoint_seconds, progress=cfg.progress)
        t2 = time.perf_counter()
        feats, search = finish_tables(cfg, sae, store, lm, stats)
        vocab = vocab_strings(lm, V)
        t3 = time.perf_counter()
        n_streamed = sum(s["n_windows"] for s in store.manifest["shards"][done:]) * store.context_size
        manifest = {
            "format": INDEX_FORMAT, "key": key, "sae": sae.describe(),
            "store": {"path": str(store.path), "manifest_sha256": sha256_file(store.path / STORE_MANIFEST),
                      "hook": store.hook_name, "split": store.manifest["corpus"].get("split"),
                      "context_size": store.context_size, "n_windows": store.n_windows},
            "model": {"spec": lm.spec, "weights_sha256": lm.weights_sha256, "vocab_size": V},
            "settings": cfg.content(), "offsets": stats.offsets.tolist(), "d_sae": sae.d_sae,
            "tokens_indexed": int(stats.state["n_tokens"][0]), "pair_entries": len(stats.state["pair_key"]),
            "encoder": {"kind": type(encoder).__name__, "precision": getattr(encoder, "precision", "fp32"),
                        "precision_reason": getattr(encoder, "precision_reason", None),
                        "dense_fallback_rows": getattr(encoder, "dense_rows", None)},
            "seconds": {"setup": t1 - t0, "stream": t2 - t1, "finish": t3 - t2},
            "stream_tokens_per_s": n_streamed / max(t2 - t1, 1e-9),
            "resumed_after_shard": done or None,
            "config": asdict(cfg),
            "aligned": profile.describe(left_out) if profile else
            {"file": None, "left_out": left_out,
             "note": "no article-aligned profiles: ' a' and ' an' are not both single tokens of this model"},
        }
        _write(out, feats, search, vocab, manifest, profile.arrays(stats.state) if profile else None)
    except OSError as e:
        raise SaexError(f"could not write the feature index {out}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun the same command: it resumes "
                        "from the last saved shard") from None
    state_path.unlink(missing_ok=True)
    if not any(partial.iterdir()):
        partial.rmdir()
    return out
