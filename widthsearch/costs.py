"""Measured costs of a built module: counted FLOPs, parameters, latency.

The fast cost of a config (:meth:`ChannelSpace.cost`) must equal :func:`count_flops` of its export;
the tests check that on random configs of every zoo model.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from widthsearch.errors import UserError

# Aten ops whose FLOPs are multiply-accumulates of conv and linear layers.
_MAC_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm")


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of conv and linear layers for one forward of ``example_input``.

    Uses ``torch.utils.flop_counter`` (which reports 2 FLOPs per MAC) and keeps only conv and
    matrix-multiply ops, so BN, activations, adds and pooling are not counted.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    total = 0
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)  # "aten.addmm" -> "addmm"
        if name in _MAC_OPS or name == "_convolution":
            total += flops
    return total // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    runs: int
    warmup: int
    batch_size: int
    threads: int
    device: str

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    runs: int = 30,
    warmup: int = 5,
    threads: int | None = None,
    channels_last: bool = False,
) -> Latency:
    """Median wall time of a forward pass in eval mode after ``warmup`` runs.

    The batch size is that of ``example_input``; ``threads`` sets ``torch.set_num_threads`` for
    the measurement (and is restored afterwards).
    """
    if runs < 1:  # a median of no timings
        raise UserError(f"--runs must be at least 1, got {runs}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    model.eval()
    x = example_input
    if channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
    times.sort()
    return Latency(
        median_ms=statistics.median(times),
        p90_ms=times[min(len(times) - 1, int(0.9 * len(times)))],
        runs=runs,
        warmup=warmup,
        batch_size=int(x.shape[0]),
        threads=threads if threads is not None else previous_threads,
        device=str(x.device),
    )
