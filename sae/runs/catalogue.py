"""Finding trained SAE runs and reading what they hold, for the explorer's overview and
anything else that lists runs. Pure reading: nothing here writes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sae.errors import SaexError
from sae.runs.files import CFG_FILE, EVAL_FILE, INDEX_DIR, INDEX_MANIFEST_FILE, METRICS_FILE, RUN_FILE, is_finished

DEFAULT_ROOT = "checkpoints"


def checkpoints_root() -> Path:
    """$SAEX_CHECKPOINTS, else ./checkpoints."""
    return Path(os.environ.get("SAEX_CHECKPOINTS", DEFAULT_ROOT))


@dataclass
class RunInfo:
    path: Path
    cfg: dict
    run: dict = field(default_factory=dict)
    eval: dict | None = None

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def architecture(self) -> str:
        return self.cfg.get("architecture", "?")

    # run.json first, as load_sae reads it: for SAEs from elsewhere (sae.runs.pretrained,
    # sae.runs.sparsify) it holds the hook and HF model id mapped for this project.
    @property
    def hook_name(self) -> str:
        return (self.run.get("hook") or {}).get("name") or (self.cfg.get("metadata") or {}).get("hook_name") or "?"

    @property
    def model(self) -> str:
        model = self.run.get("model") or {}
        if "spec" in model:
            return model["spec"] or "?"
        return (self.cfg.get("metadata") or {}).get("model_name") or "?"

    @property
    def has_index(self) -> bool:
        return (self.path / INDEX_DIR / INDEX_MANIFEST_FILE).exists()

    def metrics(self) -> list[dict]:
        """The training log (metrics.jsonl), [] when absent."""
        p = self.path / METRICS_FILE
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def read_run(path: str | Path) -> RunInfo:
    path = Path(path)
    cfg = _read_json(path / CFG_FILE)
    if cfg is None or not is_finished(path):
        raise SaexError(f"{path} holds no finished SAE run (cfg.json + sae_weights.safetensors)",
                        "train one with `saex train` (or `make demo`), or give another folder")
    return RunInfo(path=path, cfg=cfg, run=_read_json(path / RUN_FILE) or {},
                   eval=_read_json(path / EVAL_FILE))


def find_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Every finished run under `root` (any depth), sorted by path."""
    root = Path(root) if root is not None else checkpoints_root()
    if not root.exists():
        return []
    return [read_run(p.parent) for p in sorted(root.rglob(CFG_FILE))
            if is_finished(p.parent) and not p.parent.name.startswith(".")]
