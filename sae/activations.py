"""Harvest residual-stream activations into an on-disk store, and read it back.

A store is a folder:

    plan.json                what is being harvested (model, hook, corpus, windows, threshold)
    tokens.npy               every window's token ids, "window pos" int32
    shards/NNNNN.acts.npy    "window pos d_model" activations (bf16 kept as uint16 bits)
    shards/NNNNN.tokens.npy  "window pos" int32, the token ids of those windows
    shards/NNNNN.flags.npy   "window pos" uint8: 0 = usable for training,
                             FLAG_SPECIAL = BOS/special token, FLAG_OUTLIER = norm above threshold
    shards/NNNNN.json        the shard's sizes and sha256 checksums (written last: the
                             shard counts as complete only once this exists)
    manifest.json            written when every shard is complete

Every position is stored, excluded ones included, so the index and evaluation know
where BOS and the massive-activation positions were; training reads only flag 0.
Shards are planned up front, so a rerun skips complete shards and recomputes the rest
bit for bit, and several processes (`--shard i/n`, or torchrun) can fill one store.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sae.corpus import DEFAULT_CORPUS, SPLITS, open_corpus, token_windows
from sae.errors import SaexError
from sae.fsutil import atomic_path, ensure_writable_dir, remove_stale_temps, write_json_atomic
from sae.models import DEFAULT_MODEL, LoadedModel, ResidualReader, load_model

STORE_FORMAT = 1
FLAG_SPECIAL = 1
FLAG_OUTLIER = 2
STORAGE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_NUMPY_DTYPES = {"bfloat16": np.uint16, "float16": np.float16, "float32": np.float32}

# Compile the forward when one process harvests at least this many tokens: about 30 s
# of compilation buys about 1.5x throughput on CPU.
COMPILE_MIN_TOKENS = 1_000_000


@dataclass
class HarvestConfig:
    """What to harvest and how. Fields marked (plan) must match when a store is resumed."""

    out: str = ""
    """Folder of the activation store."""
    model: str = DEFAULT_MODEL
    """(plan) Model spec: smollm2-135m, a .gguf file, an HF folder or an HF hub id."""
    layer: int | str | None = None
    """(plan) Residual stream after this block; None = the middle block."""
    corpus: str = DEFAULT_CORPUS
    """(plan) Corpus spec: builtin[:sources], a .txt file/folder, a .jsonl file, hf:NAME."""
    text_field: str = "text"
    """(plan) The text field of JSONL records and HF datasets."""
    split: str = "train"
    """(plan) train or heldout: held-out documents never reach a train store."""
    tokens: int = 2_000_000
    """(plan) Tokens to harvest (rounded up to whole windows; BOS included)."""
    context_size: int = 128
    """(plan) Tokens per window, BOS included."""
    prepend_bos: bool = True
    """(plan) Start every window with the tokenizer's BOS token (when it has one)."""
    storage_dtype: str = "bf16"
    """(plan) bf16, fp16 or fp32 on disk."""
    precision: str = "auto"
    """(plan) Forward precision: auto (bf16 autocast if within tolerance of fp32), bf16 or fp32."""
    outlier_factor: float = 6.0
    """(plan) Positions with norm above this many times the median norm are outliers."""
    outlier_threshold: float | None = None
    """(plan) A fixed outlier norm threshold instead of outlier_factor x median."""
    shard_windows: int = 1024
    """(plan) Windows per shard (the unit of resume and of work split)."""
    batch_size: int = 32
    """Windows per forward pass."""
    compile: str = "auto"
    """torch.compile the forward: auto (when harvesting >= 1M tokens), yes or no."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    shard: str | None = None
    """This process's part, i/n (0-based); default: torchrun's RANK/WORLD_SIZE, else 0/1."""
    progress: bool = True
    """Show a progress bar."""

    PLAN_FIELDS = ("model", "layer", "corpus", "text_field", "split", "tokens", "context_size",
                   "prepend_bos", "storage_dtype", "precision", "outlier_factor", "outlier_threshold",
                   "shard_windows")

    def __post_init__(self):
        if not self.out:
            raise SaexError("no output folder given", "pass --out FOLDER for the activation store")
        if self.split not in SPLITS:
            raise SaexError(f"unknown split {self.split!r}", f"use one of {', '.join(SPLITS)}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise SaexError(f"unknown storage dtype {self.storage_dtype!r}", "use bf16, fp16 or fp32")
        if self.compile not in {"auto", "yes", "no"}:
            raise SaexError(f"unknown compile setting {self.compile!r}", "use auto, yes or no")
        for name in ("tokens", "context_size", "shard_windows", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise SaexError(f"{name} must be at least 1, got {getattr(self, name)}", f"pass a positive --{name.replace('_', '-')}")
        if self.context_size < 2:
            raise SaexError("context_size must be at least 2", "pass --context-size 128 (the default) or similar")
        if self.outlier_factor <= 1:
            raise SaexError("outlier_factor must be above 1", "use e.g. 6 (the default)")

    @property
    def n_windows(self) -> int:
        return math.ceil(self.tokens / self.context_size)

    def plan_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.PLAN_FIELDS}


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        return (int(rank), int(world)) if rank is not None and world is not None else (0, 1)
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise SaexError(f"bad shard spec {spec!r}", "write i/n, e.g. --shard 0/2 for the first of two processes") from None
    if not (n >= 1 and 0 <= i < n):
        raise SaexError(f"bad shard spec {spec!r}: need 0 <= i < n", "e.g. --shard 1/2 for the second of two")
    return i, n


# --------------------------------------------------------------------------- writing


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _write_bytes_atomic(dest: Path, data: bytes) -> str:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return hashlib.sha256(data).hexdigest()


def _shard_name(k: int) -> str:
    return f"{k:05d}"


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
        corpus = open_corpus(cfg.corpus, cfg.text_field)
        windows = token_windows(corpus.documents(cfg.split), lm.tokenizer, cfg.context_size,
                                cfg.n_windows, prepend_bos=cfg.prepend_bos)
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
        return json.loads((out / "plan.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


_STORE_ENTRIES = {"plan.json", "tokens.npy", "shards", "manifest.json"}


def _check_existing(out: Path, plan_doc: dict) -> None:
    """Refuse to mix a new harvest into a store planned differently."""
    plan_path = out / "plan.json"
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
                f"{k}: store has {json.dumps(old.get(k))[:120]}, asked {json.dumps(plan_doc.get(k))[:120]}" for k in diff)
            raise SaexError(f"the store {out} was harvested with other settings ({detail})",
                            "use another --out folder, or delete this store to start over")
    elif out.exists() and any(p for p in out.iterdir()
                              if not p.name.startswith(".") and p.name not in _STORE_ENTRIES):
        raise SaexError(f"{out} exists and is not an activation store",
                        "give --out a new or empty folder (nothing in an existing folder is overwritten)")


def harvest(cfg: HarvestConfig, lm: LoadedModel | None = None) -> Path:
    """Fill (or finish) the store `cfg.out`; return its path. Safe to rerun and to kill."""
    out = Path(cfg.out).expanduser()
    rank, world = parse_shard(cfg.shard)
    if out.exists() and not out.is_dir():
        raise SaexError(f"{out} is a file, not a folder", "give --out a folder path")
    if (out / "manifest.json").exists() and (out / "plan.json").exists():
        _check_manifest_matches(out, cfg)
        print(f"store {out} is already complete", file=sys.stderr)
        return out
    lm = lm or load_model(cfg.model, device=cfg.device)
    plan = _Plan(cfg, lm)
    if len(plan.windows) < cfg.n_windows:
        print(f"note: the corpus gave only {len(plan.windows):,} windows ({len(plan.windows) * cfg.context_size:,} "
              f"tokens) of the {cfg.n_windows:,} asked", file=sys.stderr)
    # Compiled and eager forwards differ in the last bits, so the choice belongs to the
    # plan: every process and every resume of one store makes the same one.
    earlier = _read_plan(out)
    if cfg.compile == "auto":
        use_compile = (earlier["compiled"] if earlier and "compiled" in earlier else
                       lm.device.type == "cpu" and len(plan.windows) * cfg.context_size >= COMPILE_MIN_TOKENS)
    else:
        use_compile = cfg.compile == "yes"
    reader = ResidualReader(lm, plan.hook, precision=cfg.precision, compile=use_compile,
                            calibration_ids=plan.calibration)
    calib_acts = torch.cat([_read_batch(reader, plan.calibration[i:i + cfg.batch_size], cfg.batch_size)
                            for i in range(0, len(plan.calibration), cfg.batch_size)])
    norms = calib_acts.norm(dim=-1)
    special = torch.isin(plan.calibration, plan.special_ids)
    threshold = _norm_threshold(cfg, norms, special)
    plan_doc = _describe(cfg, plan, reader, threshold) | {"compiled": reader.compiled}
    _check_existing(out, plan_doc)
    ensure_writable_dir(out, "activation store")
    shard_dir = ensure_writable_dir(out / "shards", "activation store")
    remove_stale_temps(out)
    remove_stale_temps(shard_dir)
    try:
        if not (out / "plan.json").exists():
            _write_bytes_atomic(out / "tokens.npy", _npy_bytes(plan.windows))
            write_json_atomic(out / "plan.json", plan_doc)
        mine = [k for k in range(plan.n_shards) if k % world == rank]
        todo = [k for k in mine if not _shard_complete(shard_dir, k)]
        n_tok = sum(plan.shard_rows(k).stop - plan.shard_rows(k).start for k in todo) * cfg.context_size
        bar = _progress(n_tok, cfg.progress, f"harvest {plan.hook.name}")
        started = time.perf_counter()
        for k in todo:
            _harvest_shard(k, plan, reader, threshold, shard_dir, bar)
        bar.close()
        if n_tok:
            elapsed = time.perf_counter() - started
            print(f"harvested {n_tok:,} tokens in {elapsed:.0f} s ({n_tok / elapsed:,.0f} tok/s, "
                  f"{reader.precision}{', compiled' if reader.compiled else ''})", file=sys.stderr)
        if all(_shard_complete(shard_dir, k) for k in range(plan.n_shards)):
            _write_manifest(out, plan_doc)
    except OSError as e:
        raise SaexError(f"could not write the activation store {out}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun the same command: it resumes "
                        "from the last complete shard") from None
    return out


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, desc=desc, disable=not enabled, smoothing=0.1)


def _shard_complete(shard_dir: Path, k: int) -> bool:
    meta = shard_dir / f"{_shard_name(k)}.json"
    if not meta.exists():
        return False
    try:
        info = json.loads(meta.read_text())
        return all((shard_dir / f["name"]).stat().st_size == f["bytes"] for f in info["files"].values())
    except (OSError, KeyError, json.JSONDecodeError):
        return False


def _read_batch(reader: ResidualReader, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    real = batch.shape[0]
    if real < batch_size and reader.compiled:
        # keep one batch shape so the compiled graph is reused, not recompiled
        batch = torch.cat([batch, batch[-1:].expand(batch_size - real, -1)])
    return reader(batch)[:real]


def _harvest_shard(k: int, plan: _Plan, reader: ResidualReader, threshold: float,
                   shard_dir: Path, bar) -> None:
    cfg = plan.cfg
    rows = plan.shard_rows(k)
    ids = torch.from_numpy(plan.windows[rows]).long()
    n, t, d = ids.shape[0], cfg.context_size, plan.lm.d_model
    np_dtype = _NUMPY_DTYPES[STORAGE_DTYPES[cfg.storage_dtype]]
    torch_dtype = _TORCH_DTYPES[STORAGE_DTYPES[cfg.storage_dtype]]
    acts = np.empty((n, t, d), dtype=np_dtype)
    flags = np.zeros((n, t), dtype=np.uint8)
    b = cfg.batch_size
    for i in range(0, n, b):
        batch = ids[i:i + b]
        real = batch.shape[0]
        h = _read_batch(reader, batch, b)
        if not torch.isfinite(h).all():
            bad = int((~torch.isfinite(h)).any(-1).any(-1).nonzero()[0]) + rows.start + i
            raise SaexError(f"the model produced NaN/inf activations in shard {k} (window {bad})",
                            "try --precision fp32, or check the model weights")
        norms = h.norm(dim=-1)
        f = np.zeros((real, t), dtype=np.uint8)
        f[torch.isin(batch[:real], plan.special_ids).numpy()] |= FLAG_SPECIAL
        f[(norms > threshold).numpy()] |= FLAG_OUTLIER
        flags[i:i + real] = f
        acts[i:i + real] = h.to(torch_dtype).view(torch.uint16).numpy() if torch_dtype == torch.bfloat16 \
            else h.to(torch_dtype).numpy()
        bar.update(real * t)
    write_shard(shard_dir, k, rows.start, acts, plan.windows[rows], flags)


def write_shard(shard_dir: Path, k: int, first_window: int, acts: np.ndarray, tokens: np.ndarray,
                flags: np.ndarray) -> None:
    """Write shard k's three arrays atomically, then its .json (which marks it complete)."""
    name = _shard_name(k)
    files = {}
    for kind, arr in (("acts", acts), ("tokens", tokens), ("flags", flags)):
        data = _npy_bytes(np.ascontiguousarray(arr))
        fname = f"{name}.{kind}.npy"
        files[kind] = {"name": fname, "bytes": len(data), "sha256": _write_bytes_atomic(Path(shard_dir) / fname, data)}
    info = {
        "shard": k, "first_window": first_window, "n_windows": int(len(acts)), "files": files,
        "n_special": int(((flags & FLAG_SPECIAL) > 0).sum()),
        "n_outliers": int(((flags & FLAG_OUTLIER) > 0).sum()),
        "n_usable": int((flags == 0).sum()),
        "outlier_positions": _count_positions(flags),
    }
    write_json_atomic(Path(shard_dir) / f"{name}.json", info)


def _count_positions(flags: np.ndarray) -> dict[str, int]:
    """How many outliers sit at each position in the window (they cluster at 1-2)."""
    pos = np.nonzero(flags & FLAG_OUTLIER)[1]
    vals, counts = np.unique(pos, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}


def _write_manifest(out: Path, plan_doc: dict) -> None:
    shard_dir = out / "shards"
    shards = [json.loads((shard_dir / f"{_shard_name(k)}.json").read_text()) for k in range(plan_doc["n_shards"])]
    positions: dict[str, int] = {}
    for s in shards:
        for p, c in s["outlier_positions"].items():
            positions[p] = positions.get(p, 0) + c
    n_tokens = plan_doc["n_windows"] * plan_doc["context_size"]
    manifest = plan_doc | {
        "n_tokens": n_tokens,
        "n_usable": sum(s["n_usable"] for s in shards),
        "n_special": sum(s["n_special"] for s in shards),
        "n_outliers": sum(s["n_outliers"] for s in shards),
        "outlier_positions": dict(sorted(positions.items(), key=lambda kv: int(kv[0]))),
        "shards": [{"shard": s["shard"], "n_windows": s["n_windows"],
                    **{f"{kind}_sha256": f["sha256"] for kind, f in s["files"].items()}} for s in shards],
    }
    write_json_atomic(out / "manifest.json", manifest)


def _check_manifest_matches(out: Path, cfg: HarvestConfig) -> None:
    from sae.models import parse_hook_point

    m = json.loads((out / "manifest.json").read_text())
    asked = cfg.plan_dict()
    asked["layer"] = parse_hook_point(cfg.layer, m["model"]["n_layers"],
                                      m["hook"]["module_path"].rsplit(".", 1)[0]).layer
    if m.get("config") != asked:
        diff = [k for k in cfg.PLAN_FIELDS if m.get("config", {}).get(k) != asked[k]]
        raise SaexError(f"the store {out} was harvested with other settings ({', '.join(diff)} differ)",
                        "use another --out folder, or delete this store to start over")


# --------------------------------------------------------------------------- reading


class ActivationStore:
    """Read access to a complete store; shards are memory-mapped, not loaded."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        mpath = self.path / "manifest.json"
        if not mpath.exists():
            hint = ("its harvest has not finished: rerun the same harvest command to complete it"
                    if (self.path / "plan.json").exists() else "give the folder of an activation store made by `saex harvest`")
            raise SaexError(f"{self.path} is not a complete activation store (no manifest.json)", hint)
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            raise SaexError(f"{mpath} is corrupt", "delete the store and harvest again") from None
        if self.manifest.get("format") != STORE_FORMAT:
            raise SaexError(f"{self.path} has store format {self.manifest.get('format')}, this version reads {STORE_FORMAT}",
                            "harvest it again with this version")

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def context_size(self) -> int:
        return int(self.manifest["context_size"])

    @property
    def n_shards(self) -> int:
        return int(self.manifest["n_shards"])

    @property
    def n_windows(self) -> int:
        return int(self.manifest["n_windows"])

    @property
    def hook_name(self) -> str:
        return self.manifest["hook"]["name"]

    @property
    def dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.manifest["dtype"]]

    def check_compatible(self, model_spec: str | None = None, hook_name: str | None = None,
                         d_model: int | None = None) -> None:
        m = self.manifest
        if model_spec is not None and m["model"]["spec"] != model_spec:
            raise SaexError(f"the store {self.path} holds activations of {m['model']['spec']}, not {model_spec}",
                            "use a store harvested from the same model")
        if hook_name is not None and self.hook_name != hook_name:
            raise SaexError(f"the store {self.path} is at {self.hook_name}, not {hook_name}",
                            "use a store harvested at the same hook point")
        if d_model is not None and self.d_model != d_model:
            raise SaexError(f"the store {self.path} has d_model {self.d_model}, expected {d_model}",
                            "use a store from the same model and layer")

    def _load(self, k: int, kind: str) -> np.ndarray:
        if not 0 <= k < self.n_shards:
            raise IndexError(f"shard {k} of {self.n_shards}")
        p = self.path / "shards" / f"{_shard_name(k)}.{kind}.npy"
        try:
            return np.load(p, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SaexError(f"shard file {p} is missing or corrupt ({e})",
                            "delete the store's manifest.json and the shard's .json, then rerun the harvest to rebuild it") from None

    def acts(self, k: int) -> torch.Tensor:
        """Shard k's activations, "window pos d_model", in the storage dtype (memory-mapped)."""
        arr = torch.from_numpy(self._load(k, "acts"))
        return arr.view(torch.bfloat16) if self.dtype == torch.bfloat16 else arr

    def tokens(self, k: int) -> torch.Tensor:
        return torch.from_numpy(self._load(k, "tokens"))

    def flags(self, k: int) -> torch.Tensor:
        return torch.from_numpy(self._load(k, "flags"))

    def usable(self, k: int) -> torch.Tensor:
        """Shard k's training vectors (flag 0 only), "n d_model", float32."""
        a = self.acts(k).reshape(-1, self.d_model)
        return a[(self.flags(k).reshape(-1) == 0)].float()

    def usable_rows(self, k: int) -> torch.Tensor:
        """Positions (flattened window * pos) of shard k's training vectors, int64."""
        return (self.flags(k).reshape(-1) == 0).nonzero().squeeze(1)

    def gather(self, k: int, rows: torch.Tensor) -> torch.Tensor:
        """Shard k's vectors at flattened positions `rows`, "n d_model" float32, read
        from the memory map without loading the rest of the shard."""
        flat = self.acts(k).reshape(-1, self.d_model)
        order = rows.argsort()  # ascending positions read the file front to back
        out = torch.empty(len(rows), self.d_model)
        out[order] = flat[rows[order]].float()
        return out

    def iter_usable(self, shards: list[int] | None = None) -> Iterator[torch.Tensor]:
        for k in shards if shards is not None else range(self.n_shards):
            yield self.usable(k)

    def verify(self) -> None:
        """Check every shard file against the manifest's checksums."""
        from sae.fsutil import sha256_file

        for s in self.manifest["shards"]:
            for kind in ("acts", "tokens", "flags"):
                p = self.path / "shards" / f"{_shard_name(s['shard'])}.{kind}.npy"
                if not p.exists() or sha256_file(p) != s[f"{kind}_sha256"]:
                    raise SaexError(f"shard {s['shard']} ({kind}) of {self.path} does not match its checksum",
                                    "the file is damaged: delete that shard's files and rerun the harvest")


def store_summary(path: str | Path) -> str:
    """One line: tokens, usable vectors, outliers and where they sit."""
    m = ActivationStore(path).manifest
    pos = m.get("outlier_positions", {})
    top = ", ".join(f"pos {p}: {c}" for p, c in sorted(pos.items(), key=lambda kv: -kv[1])[:3])
    return (f"{m['n_tokens']:,} tokens at {m['hook']['name']} of {m['model']['spec']} "
            f"({m['corpus']['split']}): {m['n_usable']:,} usable, {m['n_special']:,} special, "
            f"{m['n_outliers']:,} outliers above norm {m['outlier_threshold']:.0f}"
            + (f" ({top})" if top else "") + f"; {m['dtype']}, {m['compute_precision']} forward")
