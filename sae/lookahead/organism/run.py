"""`build_organism`: draw the data, measure the base model, fine-tune, measure again, save an HF folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sae.errors import SaexError
from sae.fsutil import write_json_atomic
from sae.lookahead.organism.answer import organism_answer
from sae.lookahead.organism.behaviour import measure
from sae.lookahead.organism.config import FORMAT, MANIFEST_FILE, PARTIAL_DIR, OrganismConfig
from sae.lookahead.organism.data import organism_data
from sae.lookahead.organism.finetune import finetune
from sae.report import Report


def read_manifest(folder: str | Path) -> dict | None:
    """The organism.json of a model folder, or None when it is not an organism."""
    path = Path(folder).expanduser() / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _check_out(cfg: OrganismConfig) -> Report | None:
    """A finished organism with these settings is returned; anything else in OUT is never overwritten."""
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise SaexError(f"{out} is a file, not a folder", "pass --out a new or empty folder")
    if not out.is_dir():
        return None
    done = read_manifest(out)
    if done is not None:
        if done.get("key") == cfg.key() and not cfg.force:
            return Report("organism", done, out / MANIFEST_FILE)
        if done.get("key") != cfg.key() and not cfg.force:
            changed = sorted(k for k in cfg.key() if done.get("key", {}).get(k) != cfg.key()[k])
            raise SaexError(f"{out} holds an organism made with other settings ({', '.join(changed)} differ)",
                            "pass another --out, or --force yes to replace it")
        return None
    others = [p.name for p in out.iterdir() if p.name != PARTIAL_DIR]
    if others:
        raise SaexError(f"{out} already holds files that are not an organism's ({', '.join(sorted(others)[:3])} ...)",
                        "pass --out a new or empty folder; nothing there was touched")
    return None


def build_organism(cfg: OrganismConfig, lm=None) -> Report:
    from sae.data.models import load_model, resolve_device
    from sae.precision import resolve

    reused = _check_out(cfg)
    if reused is not None:
        return reused
    t0 = time.perf_counter()
    out = Path(cfg.out).expanduser()
    dev = resolve_device(cfg.device)
    lm = lm or load_model(cfg.model, device=dev)
    if cfg.force and (out / MANIFEST_FILE).exists():
        (out / MANIFEST_FILE).unlink()  # no longer a finished organism: what follows replaces it
    data = organism_data(cfg, lm.tokenizer)
    precision, decision = resolve(cfg.precision, dev)
    measure_kw = dict(batch_size=32, device=dev, n_boot=cfg.bootstrap, seed=cfg.seed, progress=cfg.progress)
    t_before = time.perf_counter()
    before = measure(lm.model, lm.tokenizer, data.evals, **measure_kw)
    seconds = {"data": t_before - t0, "before": time.perf_counter() - t_before}
    partial = out / PARTIAL_DIR
    log = finetune(lm.model, lm.tokenizer, data.train, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                   weight_decay=cfg.weight_decay, bf16=precision == "bf16", device=dev, partial=partial,
                   key=cfg.key(), checkpoint_every=cfg.checkpoint_every, progress=cfg.progress)
    seconds["fine_tune"] = log["seconds"]
    t_after = time.perf_counter()
    after = measure(lm.model, lm.tokenizer, data.evals, **measure_kw)
    seconds["after"] = time.perf_counter() - t_after
    answer = organism_answer(cfg.articles, before, after)
    manifest = {
        "format": FORMAT, "kind": "organism", "key": cfg.key(), "settings": asdict(cfg),
        "base_model": {"spec": lm.spec, "weights_sha256": lm.weights_sha256, "class": type(lm.model).__name__},
        "articles": cfg.articles,
        "data": {"sources": data.sources, "split": cfg.split if cfg.prompts is None else None,
                 "examples": len(data.train), "an_examples": sum(p.article == "an" for p in data.train),
                 "pool": data.pool, "never_trained": "the other half's nouns and the classic riddles' nouns",
                 "eval_sets": {k: len(v) for k, v in data.evals.items()}},
        "training": {k: v for k, v in log.items() if k != "seconds"} | {
            "batch_size": cfg.batch_size, "lr": cfg.lr, "precision": precision,
            "precision_reason": decision.reason if decision else "asked for", "device": str(dev)},
        "behaviour": {"before": before, "after": after},
        "answer": answer.to_dict(), "seconds": seconds | {"total": time.perf_counter() - t0},
    }
    _save(lm, out, manifest)
    print(f"organism written to {out}", file=sys.stderr, flush=True)
    return Report("organism", manifest, out / MANIFEST_FILE)


def _save(lm, out: Path, manifest: dict) -> None:
    """HF files into a temp folder, then moved into OUT; organism.json last (it marks the organism finished)."""
    tmp = out / PARTIAL_DIR / f"model.pid{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    lm.model.save_pretrained(tmp)
    lm.tokenizer.save_pretrained(tmp)
    for path in sorted(tmp.iterdir()):
        os.replace(path, out / path.name)
    write_json_atomic(out / MANIFEST_FILE, manifest)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
