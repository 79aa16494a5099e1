"""Numeric precision and memory layout of training steps.

``precision="bf16"`` runs each training step's forward pass under ``torch.autocast`` with
bfloat16: convolutions and matrix products compute in bf16 while the weights, the optimizer
state and the losses stay in fp32 (mixed precision; bf16 keeps fp32's exponent range, so no loss
scaling is needed). On a CPU with AVX-512 BF16 (or AMX) oneDNN runs bf16 convolutions several times
faster than fp32; on GPUs of the Ampere generation and later it uses the tensor cores.

``channels_last`` stores 4-d weights and activations as NHWC, the layout oneDNN's fast kernels
(and cuDNN's tensor-core kernels) prefer. Sliced sub-networks keep working: the weight slices are
views with NHWC strides. Evaluation reads the layout from the weights and converts its inputs.

``compile`` runs a static network's training forward and backward through ``torch.compile``
(TorchInductor fuses the batch-norm, ReLU and residual-add kernels around each convolution). It
pays once per process, at the first step (tens of seconds on a CPU), and changes float rounding
only. It is offered for static networks alone: a supernet switches its channel selections at
every step, and a joint training of three fixed ResNet-20 sub-networks gained 1.1x after a
168 s compile on a 2-core CPU, against 1.3x for the static ResNet-20.

Measured speed-ups are in ``docs/benchmarks.md`` (``benchmarks/training_precision.py``,
``benchmarks/static_speed.py``).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch
from torch import Tensor, nn

from widthsearch.errors import UserError

__all__ = ["PRECISIONS", "check_precision", "autocast", "apply_memory_format", "to_memory_format", "compiled",
           "compile_failures"]

#: precisions a training step can run in
PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def autocast(device: torch.device, precision: str) -> ContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def apply_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """Convert the model's 4-d parameters and buffers to NHWC when ``channels_last`` (in place)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """A batch of images in the layout of the model (other tensors unchanged)."""
    if x.dim() != 4:
        return x
    return x.contiguous(memory_format=_format(channels_last))


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled``, else ``model`` itself.

    The compiled module shares ``model``'s parameters and buffers, so the optimizer, checkpoints
    and evaluation keep using ``model``; only the training step calls the compiled one."""
    return torch.compile(model) if enabled else model


@contextlib.contextmanager
def compile_failures(enabled: bool) -> Iterator[None]:
    """Turn a failure of ``torch.compile`` (it compiles lazily: the forward at the first call, the
    backward at the first ``backward``) into a one-line error that names the way out."""
    if not enabled:
        yield
        return
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--compile: torch.compile failed ({first[:300]}); train without --compile") from err
