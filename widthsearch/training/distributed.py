"""Data-parallel training under ``torchrun`` (gloo on CPU, NCCL on GPU), without ``DistributedDataParallel``.

Why not DDP: a supernet step runs ``n`` forward/backward passes at different widths before one
optimizer step, and the dynamic layers slice their weights, so DDP's per-backward bucketed
all-reduce would need ``no_sync`` juggling and unused-parameter detection. Instead every rank
accumulates its ``n`` backward passes locally and then one coalesced all-reduce averages the
gradients (flattened into a single buffer) before the optimizer step. Parameters start equal
(broadcast from rank 0) and receive identical averaged gradients, so they stay equal; each rank
samples its own random configurations, as in AutoSlim's distributed training.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistContext":
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``) and join the group."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local)
        use_cuda = dev.type == "cuda"
        if use_cuda:
            torch.cuda.set_device(dev)
        owns = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60)
            )
            owns = True
        if dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        return cls(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_state(self, module: nn.Module) -> None:
        """Copy every parameter and buffer of rank 0 to all ranks."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """All-reduce (mean) the gradients of ``params`` in one flattened buffer.

        A parameter without a gradient contributes zeros, so all ranks reduce the same layout.
        """
        if not self.enabled:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def sum_floats(self, values: list[float]) -> list[float]:
        """Element-wise sum of small float lists over ranks (for logging)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over ranks (in place; moved to the GPU for NCCL and back)."""
        if not self.enabled:
            return tensor
        work = tensor.to(self.device) if self.device.type == "cuda" else tensor
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        return work.to(tensor.device)

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: a CUDA device when one is available, else the CPU; ``"cuda"``/``"cpu"`` as asked.

    Asking for CUDA without one is a :class:`UserError`. Process ``local_rank`` of a node gets GPU
    ``local_rank`` (modulo the GPU count)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else str(device).startswith("cuda")
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from widthsearch.errors import UserError

        raise UserError("--device cuda requested but no CUDA device is available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
