"""The activation store on disk: its format, writing shards and the manifest, reading it back.

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
A multi-layer harvest (`--layer 5,10,15` or `all`) writes one such store per layer into
OUT/layer-LL/ from one forward pass, and OUT/layers.json (LAYERS_FILE) listing them once all
are complete; readers take one layer's subfolder (`layer_store_path`).
This module imports no model or corpus code: readers of a store need only numpy and torch.
`sae.data.harvest` fills a store from a model; `write_store` fills one from arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sae.errors import SaexError
from sae.fsutil import atomic_path, write_json_atomic

STORE_FORMAT = 1
FLAG_SPECIAL = 1
FLAG_OUTLIER = 2
STORAGE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
NUMPY_DTYPES = {"bfloat16": np.uint16, "float16": np.float16, "float32": np.float32}
LAYERS_FILE = "layers.json"  # the top-level manifest of a multi-layer store
MANIFEST_FILE = "manifest.json"
"""A store's manifest, written last: its presence means the store is complete."""
PLAN_FILE = "plan.json"
"""The harvest's plan (windows, settings), written first so that an interrupted harvest resumes."""
TOKENS_FILE = "tokens.npy"
"""The token ids of every window, "windows context"."""


def layer_folder(layer: int, width: int = 2) -> str:
    """Subfolder of one layer's store in a multi-layer store: layer-05, layer-15 ..."""
    return f"layer-{layer:0{width}d}"


def store_layers(path: str | Path) -> dict[int, Path] | None:
    """{layer: its store folder} of a multi-layer store (complete or not); None for any other folder."""
    path = Path(path).expanduser()
    if (path / LAYERS_FILE).exists():
        try:
            doc = json.loads((path / LAYERS_FILE).read_text())
            return {int(k): path / v for k, v in doc["stores"].items()}
        except (json.JSONDecodeError, KeyError, ValueError):
            raise SaexError(f"{path / LAYERS_FILE} is corrupt", f"delete {path} and harvest again") from None
    if (path / MANIFEST_FILE).exists() or (path / PLAN_FILE).exists() or not path.is_dir():
        return None
    found = {}
    for p in path.glob("layer-*"):
        if p.is_dir() and p.name[6:].isdigit() and (p / PLAN_FILE).exists():
            found[int(p.name[6:])] = p
    return dict(sorted(found.items())) or None


def layer_store_path(path: str | Path, layer: int | None = None) -> Path:
    """The store folder to read: `path` itself for a single-layer store; for a multi-layer
    store, the subfolder of `layer` (a clear error naming the layers when none or another is asked)."""
    path = Path(path).expanduser()
    layers = store_layers(path)
    if layers is None:
        return path
    names = ", ".join(str(k) for k in layers)
    if layer is None or int(layer) not in layers:
        example = layers[int(layer)] if layer is not None and int(layer) in layers else next(iter(layers.values()))
        problem = (f"{path} holds one activation store per layer (layers {names}), not a single store"
                   if layer is None else f"{path} has no store of layer {layer} (layers {names})")
        raise SaexError(problem, f"pick a layer: pass its subfolder, e.g. {example}")
    return layers[int(layer)]


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_bytes_atomic(dest: Path, data: bytes) -> str:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return hashlib.sha256(data).hexdigest()


def shard_name(k: int) -> str:
    return f"{k:05d}"


def write_shard(shard_dir: Path, k: int, first_window: int, acts: np.ndarray, tokens: np.ndarray,
                flags: np.ndarray) -> None:
    """Write shard k's three arrays atomically, then its .json (which marks it complete)."""
    name = shard_name(k)
    files = {}
    for kind, arr in (("acts", acts), ("tokens", tokens), ("flags", flags)):
        data = npy_bytes(np.ascontiguousarray(arr))
        fname = f"{name}.{kind}.npy"
        files[kind] = {"name": fname, "bytes": len(data), "sha256": write_bytes_atomic(Path(shard_dir) / fname, data)}
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


def write_manifest(out: Path, plan_doc: dict) -> None:
    shard_dir = out / "shards"
    shards = [json.loads((shard_dir / f"{shard_name(k)}.json").read_text()) for k in range(plan_doc["n_shards"])]
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
    write_json_atomic(out / MANIFEST_FILE, manifest)


def shard_complete(shard_dir: Path, k: int) -> bool:
    meta = shard_dir / f"{shard_name(k)}.json"
    if not meta.exists():
        return False
    try:
        info = json.loads(meta.read_text())
        return all((shard_dir / f["name"]).stat().st_size == f["bytes"] for f in info["files"].values())
    except (OSError, KeyError, json.JSONDecodeError):
        return False

def write_store(out: str | Path, acts: torch.Tensor | np.ndarray, tokens: np.ndarray | None = None,
                flags: torch.Tensor | np.ndarray | None = None, *, shard_windows: int = 16,
                model_spec: str = "synthetic", hook_name: str = "blocks.0.hook_resid_post",
                layer: int = 0, split: str = "train") -> Path:
    """A complete fp32 store from arrays: `acts` "window pos d_model", `tokens` "window pos"
    (dummy ids when not given), `flags` "window pos" (all usable when not given). For
    activations that did not come from a harvest (tests, other tools' dumps)."""
    out = Path(out)
    acts = acts.numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts)
    n, t, d = acts.shape
    flags = np.zeros((n, t), np.uint8) if flags is None else np.asarray(flags, dtype=np.uint8)
    tokens = (np.arange(n * t, dtype=np.int32).reshape(n, t) % 50 if tokens is None
              else np.asarray(tokens, dtype=np.int32))
    if tokens.shape != (n, t) or flags.shape != (n, t):
        raise SaexError(f"tokens {tokens.shape} and flags {flags.shape} must be (window, pos) = {(n, t)}",
                        "give one token id and one flag per stored activation vector")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    n_shards = -(-n // shard_windows)
    plan = {"format": STORE_FORMAT, "config": {},
            "model": {"spec": model_spec, "weights_sha256": "none", "n_layers": layer + 1, "d_model": d},
            "hook": {"name": hook_name, "layer": layer, "module_path": f"model.layers.{layer}"},
            "corpus": {"spec": "arrays", "split": split, "text_field": "text"}, "context_size": t,
            "prepend_bos": False, "d_model": d, "dtype": "float32", "compute_precision": "fp32",
            "bf16_median_relative_error": None, "special_token_ids": [], "outlier_threshold": 1e9,
            "outlier_rule": "none", "flags": {}, "n_windows": n, "shard_windows": shard_windows,
            "n_shards": n_shards}
    write_json_atomic(out / PLAN_FILE, plan)
    with atomic_path(out / TOKENS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tokens, allow_pickle=False)
    for k in range(n_shards):
        rows = slice(k * shard_windows, min(n, (k + 1) * shard_windows))
        write_shard(out / "shards", k, rows.start, acts[rows].astype(np.float32), tokens[rows], flags[rows])
    write_manifest(out, plan)
    return out


class ActivationStore:
    """Read access to a complete store; shards are memory-mapped, not loaded."""

    def __init__(self, path: str | Path):
        self.path = layer_store_path(path)  # a multi-layer store: a clear error naming its layers
        mpath = self.path / MANIFEST_FILE
        if not mpath.exists():
            hint = ("its harvest has not finished: rerun the same harvest command to complete it"
                    if (self.path / PLAN_FILE).exists()
                    else "give the folder of an activation store made by `saex harvest`")
            raise SaexError(f"{self.path} is not a complete activation store (no manifest.json)", hint)
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            raise SaexError(f"{mpath} is corrupt", "delete the store and harvest again") from None
        if self.manifest.get("format") != STORE_FORMAT:
            raise SaexError(f"{self.path} has store format {self.manifest.get('format')}, "
                            f"this version reads {STORE_FORMAT}",
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
        return TORCH_DTYPES[self.manifest["dtype"]]

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
        p = self.path / "shards" / f"{shard_name(k)}.{kind}.npy"
        try:
            return np.load(p, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SaexError(f"shard file {p} is missing or corrupt ({e})",
                            "delete the store's manifest.json and the shard's .json, "
                            "then rerun the harvest to rebuild it") from None

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
                p = self.path / "shards" / f"{shard_name(s['shard'])}.{kind}.npy"
                if not p.exists() or sha256_file(p) != s[f"{kind}_sha256"]:
                    raise SaexError(f"shard {s['shard']} ({kind}) of {self.path} does not match its checksum",
                                    "the file is damaged: delete that shard's files and rerun the harvest")


def store_summary(path: str | Path) -> str:
    """One line: tokens, usable vectors, outliers and where they sit (one line per layer
    for a multi-layer store)."""
    layers = store_layers(path)
    if layers is not None:
        return "\n".join(f"layer {k} ({p}): " + (store_summary(p) if (p / MANIFEST_FILE).exists() else "incomplete")
                         for k, p in layers.items())
    m = ActivationStore(path).manifest
    pos = m.get("outlier_positions", {})
    top = ", ".join(f"pos {p}: {c}" for p, c in sorted(pos.items(), key=lambda kv: -kv[1])[:3])
    return (f"{m['n_tokens']:,} tokens at {m['hook']['name']} of {m['model']['spec']} "
            f"({m['corpus']['split']}): {m['n_usable']:,} usable, {m['n_special']:,} special, "
            f"{m['n_outliers']:,} outliers above norm {m['outlier_threshold']:.0f}"
            + (f" ({top})" if top else "") + f"; {m['dtype']}, {m['compute_precision']} forward")
