"""`train(cfg)`, the one entry point for training: it hands cfg to the trainer cfg.trainer() names,
our fast TopK/BatchTopK loop (training/topk_loop.py) or sae-lens's SAETrainer (training/saelens_backend.py)."""

from __future__ import annotations

from pathlib import Path

from training.config import TrainConfig
from training.saelens_backend import train_with_saelens
from training.topk_loop import train_topk


def train(cfg: TrainConfig) -> Path:
    """Train (or resume an interrupted run) and write the run folder cfg.out; returns it."""
    if cfg.trainer() == "ours":
        return train_topk(cfg)
    return train_with_saelens(cfg)
