"""torch.distributed helpers (torchrun): a single process is the world of size 1 and every helper is a no-op."""

from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size) of this process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on CUDA), and let
    ActNorm's data-dependent initialisation average its statistics over the processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if world()[1] > 1:
        from sdtool.flows.actnorm import ActNorm

        ActNorm.reduce_mean = staticmethod(all_reduce_mean)
    return world()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average over processes (a copy)."""
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average gradients over processes (data parallelism: every rank sees different crops)."""
    rank, size = world()
    if size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset: offset + n].view_as(g))
        offset += n


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    if world()[1] == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
