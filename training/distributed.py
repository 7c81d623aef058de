"""Data-parallel training on torch.distributed: launched by `torchrun`, one process per
rank, gloo on CPU and nccl on GPU. Each rank trains on its slice of every global batch
(training/data.py) and gradients are averaged before each step, so the ranks hold the
same weights throughout."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); joins the process group when torchrun started us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def teardown(world: int) -> None:
    """Leave the process group before the interpreter exits: a gloo group left to the
    interpreter's shutdown can abort a rank ("terminate called without an active exception")
    after its work is done, and torchrun then fails the whole run."""
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params, world: int) -> None:
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def all_min(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
