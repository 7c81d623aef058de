"""Harvest residual-stream activations of a model over a corpus into an activation store
(`sae.data.store` describes the folder).

Shards are planned up front, so a rerun skips complete shards and recomputes the rest
bit for bit, and several processes (`--shard i/n`, or torchrun) can fill one store.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sae.data.corpus import DEFAULT_CORPUS, open_corpus, token_windows
from sae.data.forward import ResidualReader
from sae.data.models import DEFAULT_MODEL, HookPoint, LoadedModel, load_model, parse_layers
from sae.data.store import (
    FLAG_OUTLIER,
    FLAG_SPECIAL,
    LAYERS_FILE,
    MANIFEST_FILE,
    NUMPY_DTYPES,
    PLAN_FILE,
    STORAGE_DTYPES,
    STORE_FORMAT,
    TOKENS_FILE,
    TORCH_DTYPES,
    layer_folder,
    npy_bytes,
    shard_complete,
    write_bytes_atomic,
    write_manifest,
    write_shard,
)
from sae.errors import SaexError
from sae.fsutil import ensure_writable_dir, remove_stale_temps, write_json_atomic
from sae.options import at_least, check_fields, key_settings, outside_key
from sae.precision import resolve

# Compile the forward when one process harvests at least this many tokens: 10-40 s of
# compilation buys about 1.3-1.5x throughput on CPU. An fp32 forward is about 4x slower
# per token than a native bf16 one, so it pays off from a quarter of the tokens.
COMPILE_MIN_TOKENS = {"bf16": 1_000_000, "fp32": 250_000}


OUTLIER_FACTOR = 6.0
"""A position whose residual norm is above this many times the median is an outlier (an attention sink)."""

@dataclass
class HarvestConfig:
    """What to harvest and how. Fields marked (plan) must match when a store is resumed."""

    out: str = outside_key("")
    """Folder of the activation store."""
    model: str = DEFAULT_MODEL
    """(plan) Model spec: smollm2-135m, a .gguf file, an HF folder or an HF hub id."""
    layer: int | str | None = None
    """(plan) Residual stream after this block; None = the middle block. Several (5,10,15 or all): one forward
    pass that stops after the deepest fills one complete store per layer, OUT/layer-LL/, listed in OUT/layers.json."""
    corpus: str = DEFAULT_CORPUS
    """(plan) Corpus spec: builtin[:sources], a .txt file/folder, a .jsonl file, hf:NAME; +riddles after any of them
    mixes answered a/an riddles in."""
    text_field: str = "text"
    """(plan) The text field of JSONL records and HF datasets."""
    split: Literal["train", "heldout"] = "train"
    """(plan) train or heldout: held-out documents never reach a train store."""
    tokens: int = at_least(1, 2_000_000)
    """(plan) Tokens to harvest (rounded up to whole windows; BOS included)."""
    context_size: int = at_least(2, 128)
    """(plan) Tokens per window, BOS included."""
    prepend_bos: bool = True
    """(plan) Start every window with the tokenizer's BOS token (when it has one)."""
    storage_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    """(plan) bf16, fp16 or fp32 on disk."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """(plan) Forward precision: auto (bf16 autocast if within tolerance of fp32), bf16 or fp32."""
    outlier_factor: float = OUTLIER_FACTOR
    """(plan) Positions with norm above this many times the median norm are outliers."""
    outlier_threshold: float | None = None
    """(plan) A fixed outlier norm threshold instead of outlier_factor x median."""
    shard_windows: int = at_least(1, 1024)
    """(plan) Windows per shard (the unit of resume and of work split)."""
    batch_size: int = at_least(1, 32, in_key=False)
    """Windows per forward pass."""
    compile: Literal["auto", "yes", "no"] = outside_key("auto")
    """torch.compile the forward: auto (when harvesting >= 1M tokens in bf16, >= 250k in fp32), yes or no."""
    device: str = outside_key("auto")
    """auto, cpu, cuda or cuda:N."""
    shard: str | None = outside_key(None)
    """This process's part, i/n (0-based); default: torchrun's RANK/WORLD_SIZE, else 0/1."""
    progress: bool = outside_key(True)
    """Show a progress bar."""

    def __post_init__(self):
        if not self.out:
            raise SaexError("no output folder given", "pass --out FOLDER for the activation store")
        check_fields(self)
        if self.outlier_factor <= 1:
            raise SaexError("outlier_factor must be above 1", "use e.g. 6 (the default)")

    @property
    def n_windows(self) -> int:
        return math.ceil(self.tokens / self.context_size)

    def plan_dict(self) -> dict:
        """The settings a store's content depends on (a store planned with others is refused)."""
        return key_settings(self)


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        return (int(rank), int(world)) if rank is not None and world is not None else (0, 1)
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise SaexError(f"bad shard spec {spec!r}",
                        "write i/n, e.g. --shard 0/2 for the first of two processes") from None
    if not (n >= 1 and 0 <= i < n):
        raise SaexError(f"bad shard spec {spec!r}: need 0 <= i < n", "e.g. --shard 1/2 for the second of two")
    return i, n


# --------------------------------------------------------------------------- writing


def _norm_threshold(cfg: HarvestConfig, norms: torch.Tensor, special: torch.Tensor) -> float:
    if cfg.outlier_threshold is not None:
        return float(cfg.outlier_threshold)
    ordinary = norms[~special]
    if ordinary.numel() == 0:
        raise SaexError("the calibration windows hold only special tokens", "use a corpus with real text")
    return float(cfg.outlier_factor * ordinary.median())


class _Plan:
    """The deterministic part of a harvest: windows, hook, threshold, shard layout."""

    def __init__(self, cfg: HarvestConfig, lm: LoadedModel):
        self.cfg = cfg
        self.lm = lm
        self.hook = lm.hook_point(cfg.layer)
        if cfg.progress:
            print(f"reading the corpus {cfg.corpus} ({cfg.split} split)", file=sys.stderr, flush=True)
        corpus = open_corpus(cfg.corpus, cfg.text_field)
        windows = token_windows(corpus.documents(cfg.split), lm.tokenizer, cfg.context_size,
                                cfg.n_windows, prepend_bos=cfg.prepend_bos, progress=cfg.progress)
        if len(windows) == 0:
            raise SaexError(f"the corpus {cfg.corpus!r} gave no {cfg.split} text to harvest",
                            f"give a corpus with text (at least {cfg.context_size} tokens in the {cfg.split} split)")
        self.windows = windows
        self.special_ids = torch.tensor(lm.special_ids or [-1])
        calib = torch.from_numpy(windows[: min(len(windows), 64)]).long()
        self.calibration = calib

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self.windows) / self.cfg.shard_windows)

    def shard_rows(self, k: int) -> slice:
        w = self.cfg.shard_windows
        return slice(k * w, min((k + 1) * w, len(self.windows)))


def _describe(cfg: HarvestConfig, plan: _Plan, reader: ResidualReader, threshold: float) -> dict:
    lm = plan.lm
    return {
        "format": STORE_FORMAT,
        "config": cfg.plan_dict() | {"layer": plan.hook.layer},
        "model": lm.describe() | {"hf_dir": None},
        "hook": plan.hook.to_dict(),
        "corpus": {"spec": cfg.corpus, "split": cfg.split, "text_field": cfg.text_field},
        "context_size": cfg.context_size,
        "prepend_bos": bool(cfg.prepend_bos and lm.bos_id is not None),
        "d_model": lm.d_model,
        "dtype": STORAGE_DTYPES[cfg.storage_dtype],
        "compute_precision": reader.precision,
        "bf16_median_relative_error": reader.bf16_error,
        "precision_reason": reader.precision_reason,
        "special_token_ids": lm.special_ids,
        "outlier_threshold": threshold,
        "outlier_rule": (f"norm > {cfg.outlier_factor} x median norm of non-special positions "
                         "in the first 64 windows" if cfg.outlier_threshold is None else "fixed threshold"),
        "flags": {"0": "usable", str(FLAG_SPECIAL): "special token (BOS ...)", str(FLAG_OUTLIER): "norm outlier"},
        "n_windows": int(len(plan.windows)),
        "shard_windows": cfg.shard_windows,
        "n_shards": plan.n_shards,
    }


def _read_plan(out: Path) -> dict | None:
    try:
        return json.loads((out / PLAN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


_STORE_ENTRIES = {PLAN_FILE, TOKENS_FILE, "shards", MANIFEST_FILE}


def _check_existing(out: Path, plan_doc: dict) -> None:
    """Refuse to mix a new harvest into a store planned differently."""
    plan_path = out / PLAN_FILE
    if plan_path.exists():
        try:
            old = json.loads(plan_path.read_text())
        except json.JSONDecodeError:
            raise SaexError(f"{plan_path} is corrupt", f"delete the store folder {out} and harvest again") from None
        keys = ("format", "config", "model", "hook", "context_size", "dtype", "outlier_threshold",
                "n_windows", "special_token_ids", "compute_precision", "compiled")
        diff = [k for k in keys if old.get(k) != plan_doc.get(k)]
        if diff:
            detail = "; ".join(
                f"{k}: store has {json.dumps(old.get(k))[:120]}, asked {json.dumps(plan_doc.get(k))[:120]}"
                for k in diff)
            raise SaexError(f"the store {out} was harvested with other settings ({detail})",
                            "use another --out folder, or delete this store to start over")
    elif out.exists() and any(p for p in out.iterdir()
                              if not p.name.startswith(".") and p.name not in _STORE_ENTRIES):
        raise SaexError(f"{out} exists and is not an activation store",
                        "give --out a new or empty folder (nothing in an existing folder is overwritten)")


def _note_short_corpus(cfg: HarvestConfig, plan: _Plan) -> None:
    if len(plan.windows) < cfg.n_windows:
        print(f"note: the corpus gave only {len(plan.windows):,} windows ({len(plan.windows) * cfg.context_size:,} "
              f"tokens) of the {cfg.n_windows:,} asked", file=sys.stderr)


def _compile_choice(cfg: HarvestConfig, lm: LoadedModel, plan: _Plan, earlier: dict | None) -> bool:
    """Compiled and eager forwards differ in the last bits, so the choice belongs to the
    plan: every process and every resume of one store makes the same one."""
    if cfg.compile != "auto":
        return cfg.compile == "yes"
    if earlier and "compiled" in earlier:
        return bool(earlier["compiled"])
    expected = resolve(cfg.precision, lm.device)[0]
    return lm.device.type == "cpu" and len(plan.windows) * cfg.context_size >= COMPILE_MIN_TOKENS[expected]


def harvest(cfg: HarvestConfig, lm: LoadedModel | None = None) -> Path:
    """Fill (or finish) the store `cfg.out`; return its path. Safe to rerun and to kill."""
    out = Path(cfg.out).expanduser()
    rank, world = parse_shard(cfg.shard)
    if out.exists() and not out.is_dir():
        raise SaexError(f"{out} is a file, not a folder", "give --out a folder path")
    if _several_layers(cfg.layer):
        if (out / LAYERS_FILE).exists():
            _check_layers_match(out, cfg)
            print(f"multi-layer store {out} is already complete", file=sys.stderr)
            return out
        lm = lm or load_model(cfg.model, device=cfg.device)
        hooks = parse_layers(cfg.layer, lm.n_layers, lm.layers_path)
        if hooks is not None:
            return _harvest_layers(cfg, lm, hooks, out, rank, world)
        cfg = replace(cfg, layer=str(cfg.layer).strip().strip(","))
    if (out / MANIFEST_FILE).exists() and (out / PLAN_FILE).exists():
        _check_manifest_matches(out, cfg)
        print(f"store {out} is already complete", file=sys.stderr)
        return out
    lm = lm or load_model(cfg.model, device=cfg.device)
    plan = _Plan(cfg, lm)
    _note_short_corpus(cfg, plan)
    use_compile = _compile_choice(cfg, lm, plan, _read_plan(out))
    reader = ResidualReader(lm, plan.hook, precision=cfg.precision, compile=use_compile,
                            calibration_ids=plan.calibration)
    _fill(cfg, plan, reader, [(plan.hook, out)], out, rank, world)
    return out


def _fill(cfg: HarvestConfig, plan: _Plan, reader: ResidualReader, stores: list[tuple[HookPoint, Path]], out: Path,
          rank: int, world: int) -> bool:
    """The one harvest loop: calibrate each layer's outlier threshold, refuse a store planned
    otherwise, write each store's plan, fill this process's missing shards (every layer's
    from one forward pass per batch) and write the manifest of each store that is complete.
    `stores`: (hook, store folder) for each layer the reader returns, in its order (a
    single-layer harvest is one). True when every store is complete."""
    calib = torch.cat([_read_batch(reader, plan.calibration[i:i + cfg.batch_size], cfg.batch_size)
                       for i in range(0, len(plan.calibration), cfg.batch_size)])
    per_layer = [calib] if calib.dim() == 3 else list(calib.unbind(2))
    special = torch.isin(plan.calibration, plan.special_ids)
    hooks = [hook for hook, _ in stores]
    thresholds, docs = [], []
    for h, (hook, store) in zip(per_layer, stores):
        threshold = _norm_threshold(cfg, h.norm(dim=-1), special)
        layer_cfg = replace(cfg, out=str(store), layer=hook.layer) if store != out else cfg
        layer_plan = copy.copy(plan)
        layer_plan.cfg, layer_plan.hook = layer_cfg, hook
        doc = _describe(layer_cfg, layer_plan, reader, threshold) | {"compiled": reader.compiled}
        _check_existing(store, doc)
        thresholds.append(threshold)
        docs.append(doc)
    ensure_writable_dir(out, "activation store")
    try:
        dirs = []
        for (_, store), doc in zip(stores, docs):
            ensure_writable_dir(store, "activation store")
            dirs.append(ensure_writable_dir(store / "shards", "activation store"))
            remove_stale_temps(store)
            remove_stale_temps(dirs[-1])
            if not (store / PLAN_FILE).exists():
                write_bytes_atomic(store / TOKENS_FILE, npy_bytes(plan.windows))
                write_json_atomic(store / PLAN_FILE, doc)
        mine = [k for k in range(plan.n_shards) if k % world == rank]
        todo = [k for k in mine if not all(shard_complete(d, k) for d in dirs)]
        n_tok = sum(plan.shard_rows(k).stop - plan.shard_rows(k).start for k in todo) * cfg.context_size
        several = len(stores) > 1
        what = f"layers {','.join(str(h.layer) for h in hooks)}" if several else plan.hook.name
        bar = _progress(n_tok, cfg.progress, f"harvest {what}")
        started = time.perf_counter()
        for k in todo:
            _harvest_shard(k, plan, reader, thresholds, dirs, bar)
        bar.close()
        if n_tok:
            elapsed = time.perf_counter() - started
            print(f"harvested {n_tok:,} tokens{f' at {len(hooks)} layers' if several else ''} in {elapsed:.0f} s "
                  f"({n_tok / elapsed:,.0f} tok/s, {reader.precision}{', compiled' if reader.compiled else ''})",
                  file=sys.stderr)
        complete = True
        for doc, d in zip(docs, dirs):
            if all(shard_complete(d, k) for k in range(plan.n_shards)):
                if not (d.parent / MANIFEST_FILE).exists():
                    write_manifest(d.parent, doc)
            else:
                complete = False
    except OSError as e:
        raise SaexError(f"could not write the activation store {out}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun the same command: it resumes "
                        "from the last complete shard") from None
    return complete


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, desc=desc, disable=not enabled, smoothing=0.1)


def _read_batch(reader: ResidualReader, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    real = batch.shape[0]
    if real < batch_size and reader.compiled:
        # keep one batch shape so the compiled graph is reused, not recompiled
        batch = torch.cat([batch, batch[-1:].expand(batch_size - real, -1)])
    return reader(batch)[:real]


def _harvest_shard(k: int, plan: _Plan, reader: ResidualReader, thresholds: list[float],
                   shard_dirs: list[Path], bar) -> None:
    """Shard k of every store in `shard_dirs` (one per layer the reader returns, in its order)."""
    cfg = plan.cfg
    rows = plan.shard_rows(k)
    ids = torch.from_numpy(plan.windows[rows]).long()
    n, t, d = ids.shape[0], cfg.context_size, plan.lm.d_model
    np_dtype = NUMPY_DTYPES[STORAGE_DTYPES[cfg.storage_dtype]]
    torch_dtype = TORCH_DTYPES[STORAGE_DTYPES[cfg.storage_dtype]]
    acts = [np.empty((n, t, d), dtype=np_dtype) for _ in shard_dirs]
    flags = [np.zeros((n, t), dtype=np.uint8) for _ in shard_dirs]
    b = cfg.batch_size
    for i in range(0, n, b):
        batch = ids[i:i + b]
        real = batch.shape[0]
        out = _read_batch(reader, batch, b)
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).flatten(2).any(-1).any(-1).nonzero()[0]) + rows.start + i
            raise SaexError(f"the model produced NaN/inf activations in shard {k} (window {bad})",
                            "try --precision fp32, or check the model weights")
        special = torch.isin(batch[:real], plan.special_ids).numpy()
        for j, h in enumerate([out] if out.dim() == 3 else out.unbind(2)):
            norms = h.norm(dim=-1)
            f = np.zeros((real, t), dtype=np.uint8)
            f[special] |= FLAG_SPECIAL
            f[(norms > thresholds[j]).numpy()] |= FLAG_OUTLIER
            flags[j][i:i + real] = f
            acts[j][i:i + real] = h.to(torch_dtype).view(torch.uint16).numpy() if torch_dtype == torch.bfloat16 \
                else h.to(torch_dtype).numpy()
        bar.update(real * t)
    for j, shard_dir in enumerate(shard_dirs):
        write_shard(shard_dir, k, rows.start, acts[j], plan.windows[rows], flags[j])


def _check_manifest_matches(out: Path, cfg: HarvestConfig) -> None:
    from sae.data.models import parse_hook_point

    m = json.loads((out / MANIFEST_FILE).read_text())
    asked = cfg.plan_dict()
    asked["layer"] = parse_hook_point(cfg.layer, m["model"]["n_layers"],
                                      m["hook"]["module_path"].rsplit(".", 1)[0]).layer
    if m.get("config") != asked:
        diff = [k for k in asked if m.get("config", {}).get(k) != asked[k]]
        raise SaexError(f"the store {out} was harvested with other settings ({', '.join(diff)} differ)",
                        "use another --out folder, or delete this store to start over")


# --------------------------------------------------------------------------- several layers


def _several_layers(spec) -> bool:
    return isinstance(spec, str) and ("," in spec or spec.strip().lower() == "all")


def _layers_doc(cfg: HarvestConfig, lm: LoadedModel, hooks: list[HookPoint], width: int) -> dict:
    return {"format": STORE_FORMAT, "kind": "one activation store per layer, from one forward pass",
            "config": cfg.plan_dict() | {"layer": [h.layer for h in hooks]},
            "model": {"spec": lm.spec, "weights_sha256": lm.weights_sha256, "n_layers": lm.n_layers},
            "layers": [h.layer for h in hooks],
            "stores": {str(h.layer): layer_folder(h.layer, width) for h in hooks},
            "hooks": {str(h.layer): h.name for h in hooks}}


def _check_layers_match(out: Path, cfg: HarvestConfig) -> None:
    try:
        doc = json.loads((out / LAYERS_FILE).read_text())
    except json.JSONDecodeError:
        raise SaexError(f"{out / LAYERS_FILE} is corrupt", f"delete {out} and harvest again") from None
    n_layers = doc["model"]["n_layers"]
    hooks = parse_layers(cfg.layer, n_layers, "model.layers")
    asked = cfg.plan_dict() | {"layer": [h.layer for h in hooks] if hooks else cfg.layer}
    if doc.get("config") != asked:
        diff = [k for k in asked if doc.get("config", {}).get(k) != asked[k]]
        raise SaexError(f"the multi-layer store {out} was harvested with other settings ({', '.join(diff)} differ)",
                        "use another --out folder, or delete this store to start over")


def _harvest_layers(cfg: HarvestConfig, lm: LoadedModel, hooks: list[HookPoint], out: Path,
                    rank: int, world: int) -> Path:
    """One forward pass per batch that stops after the deepest of `hooks`; each layer's
    residual goes to its own complete store OUT/layer-LL/ (the same files, thresholds and
    checks as a single-layer harvest of that layer); OUT/layers.json lists them once all
    are complete."""
    if (out / PLAN_FILE).exists() or (out / MANIFEST_FILE).exists():
        raise SaexError(f"{out} holds a single-layer activation store",
                        "give a multi-layer harvest (--layer 5,10,15 or all) a new or empty --out folder")
    width = max(2, len(str(lm.n_layers - 1)))
    subs = {h.layer: layer_folder(h.layer, width) for h in hooks}
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")
                            and p.name not in set(subs.values()) | {LAYERS_FILE}):
        raise SaexError(f"{out} exists and is not a multi-layer activation store of these layers",
                        "give --out a new or empty folder (nothing in an existing folder is overwritten)")
    deepest = hooks[-1]
    plan = _Plan(replace(cfg, layer=deepest.layer), lm)
    _note_short_corpus(cfg, plan)
    use_compile = _compile_choice(cfg, lm, plan, _read_plan(out / subs[deepest.layer]))
    reader = ResidualReader(lm, deepest, precision=cfg.precision, compile=use_compile,
                            calibration_ids=plan.calibration, layers=[h.layer for h in hooks])
    if _fill(cfg, plan, reader, [(h, out / subs[h.layer]) for h in hooks], out, rank, world):
        try:
            write_json_atomic(out / LAYERS_FILE, _layers_doc(cfg, lm, hooks, width))
        except OSError as e:
            raise SaexError(f"could not write the activation store {out}: {e.strerror or e}",
                            "free disk space or fix permissions, then rerun the same command") from None
    return out
