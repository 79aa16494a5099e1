"""Accuracy of plain models and of supernet configurations; BN statistics for evaluation.

Two ways to normalise a sub-network of a supernet at evaluation time (its shared running
statistics were accumulated over a mixture of widths during training and fit none of them):

``bn="calibrate"`` (the default)
    Recompute each BN layer's running mean/variance *for that configuration* from a fixed set of
    calibration images (US-Nets' "BN post-statistics"; Yu & Huang, arXiv:1903.05134, Sec. 3.3),
    then evaluate in ordinary eval mode. The score does not depend on how the evaluation set is cut
    into batches and it is exactly what the exported static network computes with those statistics.
``bn="batch"``
    Evaluate in eval mode but normalise with each batch's own statistics (AutoSlim's greedy
    search, arXiv:1903.11728, which uses one large batch); cheaper, since no calibration pass is
    needed, but the score depends on the batch (keep batches large, >= ~1k images).

Both leave the supernet's BN buffers as they found them.

A configuration's score is its top-1 accuracy (``metric="accuracy"``) or its negative mean
cross-entropy (``metric="loss"``): the loss moves with every image's confidence, not only with
argmax flips, so on a small evaluation set it ranks configurations with less noise.

Under ``torchrun`` (a :class:`~widthsearch.training.distributed.DistContext` passed as ``ctx``)
every process scores its contiguous share of the images and the counts (correct predictions,
summed cross-entropy, images) are summed over the processes; BN calibration sums its per-channel
statistics over the processes' shares of the calibration batches. Every process then returns the
numbers one process computes on all the images: the same count of correct predictions, the loss
up to the order of a float64 sum.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from widthsearch.errors import UserError
from widthsearch.space.dynamic import module_device

if TYPE_CHECKING:  # only the type: evaluation works without torch.distributed
    from widthsearch.training.distributed import DistContext

__all__ = [
    "evaluate",
    "evaluate_metrics",
    "shard_bounds",
    "share_batches",
    "correct_predictions",
    "make_supernet_evaluator",
    "evaluator_for_data",
    "heldout_eval_set",
    "supernet_evaluator",
    "supernet_accuracy",
    "supernet_metrics",
    "metric_score",
    "check_metric",
    "calibration_batches",
    "METRICS",
    "preserve_bn_state",
    "DEFAULT_CALIB_IMAGES",
    "eval_batch_size",
]

#: images used for BN calibration by default (US-Nets use a few thousand training images)
DEFAULT_CALIB_IMAGES = 2048

#: evaluation batch of ``batch_size="auto"`` on a CPU: a forward of ResNet-20 in batches of 100-128
#: runs 2-2.4x as many images a second as in batches of 1000, whose activations spill out of the
#: caches (``benchmarks/static_speed.py``, docs/benchmarks.md); GPUs take :data:`GPU_EVAL_BATCH`
CPU_EVAL_BATCH = 128
GPU_EVAL_BATCH = 1000

#: what an evaluator can return for a configuration (higher is better for both)
METRICS = ("accuracy", "loss")


def _module(model_or_net) -> nn.Module:
    return getattr(model_or_net, "model", model_or_net)


def _memory_format(model: nn.Module) -> torch.memory_format:
    """The layout the first spatial conv's weight uses (inputs are converted to match)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.dim() == 4 and m.weight.shape[-1] > 1:
            w = m.weight
            if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
                return torch.channels_last
            break
    return torch.contiguous_format


def eval_batch_size(batch_size: int | str | None, device: torch.device) -> int | None:
    """``batch_size`` itself, or for ``"auto"`` the evaluation batch that suits ``device`` (the
    numbers do not depend on it in eval mode, up to float rounding)."""
    if batch_size != "auto":
        return batch_size  # type: ignore[return-value]
    return CPU_EVAL_BATCH if device.type == "cpu" else GPU_EVAL_BATCH


def _chunks(n: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    """Equal-sized chunks covering ``range(n)`` (sizes differ by at most one)."""
    if n == 0:
        return
    size = n if not batch_size or batch_size >= n else batch_size
    count = math.ceil(n / size)
    bounds = [round(i * n / count) for i in range(count + 1)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield a, b


def shard_bounds(n: int, ctx: "DistContext | None") -> tuple[int, int]:
    """``(start, stop)``: this process's contiguous share of ``range(n)`` (all of it without ``ctx``);
    the shares of the processes cover ``range(n)`` once, their sizes differ by at most one."""
    if ctx is None or not ctx.enabled:
        return 0, n
    return n * ctx.rank // ctx.world_size, n * (ctx.rank + 1) // ctx.world_size


@torch.no_grad()
def _tally(model: nn.Module, x: Tensor, y: Tensor, batch_size: int | str | None,
           start: int = 0, stop: int | None = None) -> tuple[int, float]:
    """(correct predictions, summed cross-entropy) of ``model`` over images ``start:stop`` of ``(x, y)``.

    Only those images are indexed (a streamed set decodes a chunk at a time). Per-image losses are
    summed in float64, so the sum hardly depends on how the images are cut into chunks or shares.
    """
    device, fmt = module_device(model), _memory_format(model)
    stop = len(y) if stop is None else stop
    correct, loss_sum = 0, 0.0
    for a, b in _chunks(stop - start, eval_batch_size(batch_size, device)):
        xb = x[start + a:start + b].to(device, non_blocking=True)
        if xb.dim() == 4:
            xb = xb.contiguous(memory_format=fmt)
        logits = model(xb).float()
        yb = y[start + a:start + b].to(logits.device)
        correct += int((logits.argmax(dim=1) == yb).sum())
        losses = nn.functional.cross_entropy(logits, yb, reduction="none")
        loss_sum += float(losses.double().sum())
    return correct, loss_sum


def _shared_tally(model: nn.Module, x: Tensor, y: Tensor, batch_size: int | str | None,
                  ctx: "DistContext | None") -> dict[str, float]:
    """``{"accuracy", "loss", "images"}`` over all of ``(x, y)``: this process tallies its share, the
    counts are summed over the processes (one small all-reduce), so every process gets the totals."""
    start, stop = shard_bounds(len(y), ctx)
    correct, loss_sum = _tally(model, x, y, batch_size, start, stop)
    counts = [float(correct), loss_sum, float(stop - start)]
    if ctx is not None and ctx.enabled:
        counts = ctx.sum_floats(counts)
    images = int(round(counts[2]))
    if images == 0:
        raise UserError("cannot evaluate on an empty split (is --heldout-fraction 0?)")
    return {"accuracy": int(round(counts[0])) / images, "loss": counts[1] / images, "images": images}


@torch.no_grad()
def evaluate(model_or_net, x: Tensor, y: Tensor, batch_size: int | str | None = "auto") -> float:
    """Top-1 accuracy (0..1) of a model (or a :class:`Supernet` at its current config) in eval mode.

    BN uses its running statistics. The model's train/eval mode is restored afterwards.
    ``batch_size``: images per forward; ``"auto"`` suits the model's device (:func:`eval_batch_size`),
    None is all at once.
    """
    return evaluate_metrics(model_or_net, x, y, batch_size=batch_size)["accuracy"]


@torch.no_grad()
def evaluate_metrics(model_or_net, x: Tensor, y: Tensor, *, batch_size: int | str | None = "auto",
                     ctx: "DistContext | None" = None) -> dict[str, float]:
    """``{"accuracy": 0..1, "loss": mean cross-entropy, "images": n}`` of a model in eval mode.

    With ``ctx`` (every process of a ``torchrun`` job calls it with the same ``x, y``) each process
    scores its share of the images and all of them return the totals over all images. BN uses its
    running statistics (equal on every process); the train/eval mode is restored afterwards.
    """
    model = _module(model_or_net)
    was_training = model.training
    model.eval()
    try:
        return _shared_tally(model, x, y, batch_size, ctx)
    finally:
        model.train(was_training)


@torch.no_grad()
def correct_predictions(model_or_net, x: Tensor, y: Tensor, batch_size: int | str | None = "auto") -> Tensor:
    """Per image, whether the top-1 prediction is right (a bool tensor on the CPU), in eval mode.

    Its mean is :func:`evaluate`'s accuracy; paired comparisons of two networks (a bootstrap over
    the images) need the images themselves, not only the count.
    """
    model = _module(model_or_net)
    if len(y) == 0:
        raise UserError("cannot evaluate on an empty split (is --heldout-fraction 0?)")
    device, fmt = module_device(model), _memory_format(model)
    was_training = model.training
    model.eval()
    try:
        parts = []
        for a, b in _chunks(len(y), eval_batch_size(batch_size, device)):
            xb = x[a:b].to(device, non_blocking=True)
            if xb.dim() == 4:
                xb = xb.contiguous(memory_format=fmt)
            parts.append((model(xb).float().argmax(dim=1).cpu() == y[a:b].cpu()))
        return torch.cat(parts)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def preserve_bn_state(model: nn.Module) -> Iterator[None]:
    """Restore every BN layer's running statistics and the model's train/eval mode on exit."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, [(name, b.detach().clone()) for name, b in m.named_buffers(recurse=False) if b is not None]))
    was_training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for name, value in buffers:
                    getattr(m, name).copy_(value)
        model.train(was_training)


def calibration_batches(
    x: Tensor, num_images: int = DEFAULT_CALIB_IMAGES, batch_size: int = 256, seed: int = 0
) -> list[Tensor]:
    """A fixed random subset of ``num_images`` images of ``x`` cut into batches.

    The same subset serves every configuration, so calibration noise does not reorder them.
    """
    n = len(x)
    if n == 0:
        raise UserError("no images for BN calibration")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[: min(n, int(num_images))]
    idx = torch.sort(idx).values
    return [x[idx[a:b]] for a, b in _chunks(len(idx), batch_size)]


def _check_bn_mode(bn: str) -> None:
    if bn not in ("calibrate", "batch"):
        raise UserError(f"bn mode must be 'calibrate' or 'batch', got {bn!r}")


def supernet_metrics(
    net,
    config: Mapping[str, int],
    x: Tensor,
    y: Tensor,
    *,
    bn: str = "calibrate",
    calib: Iterable[Tensor] | None = None,
    batch_size: int | None = None,
    align: str | None = "left",
    ctx: "DistContext | None" = None,
) -> dict[str, float]:
    """``{"accuracy": 0..1, "loss": mean cross-entropy}`` of ``net`` at ``config``, in one pass.

    See the module docstring for ``bn``. ``align``: ``"left"``/``"right"`` runs every unit on that
    side; ``"both"`` is BCNet's bilateral score, the mean of the left and the right sub-network's
    metrics, each side with its own BN statistics; ``None`` keeps a :class:`Subnet`'s own
    selectors. ``ctx``: every process of a ``torchrun`` job calls it alike and gets the numbers of
    all the images (with ``bn="calibrate"`` calibration and scoring are shared out, see the module
    docstring; ``bn="batch"`` scores every image on every process). Side-effect free.
    """
    _check_bn_mode(bn)
    if len(y) == 0:
        raise UserError("cannot evaluate on an empty split (is --heldout-fraction 0?)")
    if align == "both":
        sides = [supernet_metrics(net, config, x, y, bn=bn, calib=calib, batch_size=batch_size, align=side, ctx=ctx)
                 for side in ("left", "right")]
        return {key: (sides[0][key] + sides[1][key]) / 2 for key in sides[0]}
    check_align(align)
    model = net.model
    with preserve_bn_state(model), net.using(config, align=align):
        if bn == "calibrate":
            batches, reduce = share_batches(list(calib) if calib is not None else calibration_batches(x), ctx)
            net.calibrate_bn(batches, config, reduce=reduce)
            model.eval()
            found = _shared_tally(model, x, y, batch_size or "auto", ctx)
        else:
            model.eval()
            with net.batch_stats():
                # not shared out: each batch normalises with its own statistics, so cutting the
                # images into other batches would change the numbers
                found = _shared_tally(model, x, y, batch_size or 5000, None)
    return {"accuracy": found["accuracy"], "loss": found["loss"]}


def share_batches(batches: Sequence[Tensor], ctx: "DistContext | None"
                  ) -> tuple[list[Tensor], Callable[[Tensor], Tensor] | None]:
    """``(this process's batches, reduce)`` for :meth:`Supernet.calibrate_bn`: every ``world_size``-th
    batch and the sum over processes, so the statistics are those of all batches; with fewer batches
    than processes every process calibrates on all of them alone (``reduce`` None): the same numbers."""
    if ctx is None or not ctx.enabled or len(batches) < ctx.world_size:
        return list(batches), None
    return list(batches[ctx.rank::ctx.world_size]), ctx.all_reduce_sum


def supernet_accuracy(net, config: Mapping[str, int], x: Tensor, y: Tensor, **kwargs) -> float:
    """Accuracy (0..1) of ``net`` at ``config``; keywords as :func:`supernet_metrics`."""
    return supernet_metrics(net, config, x, y, **kwargs)["accuracy"]


#: how an evaluator aligns a config's channels ("both": BCNet's mean of the two sides)
ALIGNS = ("left", "right", "both")


def check_align(align: str | None) -> None:
    if align is not None and align not in ALIGNS:
        raise UserError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UserError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")


def metric_score(metrics: Mapping[str, float], metric: str) -> float:
    """The score (higher is better) that ``metric`` reads from :func:`supernet_metrics`' result."""
    check_metric(metric)
    return metrics["accuracy"] if metric == "accuracy" else -metrics["loss"]


def make_supernet_evaluator(
    net,
    x: Tensor,
    y: Tensor,
    bn: str = "calibrate",
    calib_batches: Iterable[Tensor] | Tensor | None = None,
    *,
    batch_size: int | None = None,
    align: str = "left",
    num_calib_images: int = DEFAULT_CALIB_IMAGES,
    seed: int = 0,
    metric: str = "accuracy",
) -> Callable[[Mapping[str, int]], float]:
    """``evaluator(config) -> score`` on the fixed set ``(x, y)``, for the searches.

    The score is the accuracy (0..1) or, with ``metric="loss"``, the negative mean cross-entropy.

    ``bn="calibrate"``: before each evaluation the BN statistics of the configuration are
    recomputed from ``calib_batches`` (a list of image batches, or one image tensor that is cut
    into batches of 256; default: ``num_calib_images`` images drawn from ``x`` with ``seed``).
    ``bn="batch"``: normalise with the statistics of evaluation batches of ``batch_size``
    (default: the whole set in chunks of at most 5000). The supernet's BN buffers, configuration
    and mode are unchanged afterwards.
    """
    _check_bn_mode(bn)
    check_metric(metric)  # now, not at the first call
    check_align(align)
    if len(y) == 0:
        raise UserError("cannot evaluate on an empty split (is --heldout-fraction 0?)")
    calib: list[Tensor] | None = None
    if bn == "calibrate":
        if calib_batches is None:
            calib = calibration_batches(x, num_calib_images, seed=seed)
        elif isinstance(calib_batches, Tensor):
            calib = [calib_batches[a:b] for a, b in _chunks(len(calib_batches), 256)]
        else:
            calib = [b[0] if isinstance(b, (tuple, list)) else b for b in calib_batches]
        if not calib:
            raise UserError("no batches for BN calibration")
    x, y, calib = _on_model_device(net, x, y, calib)

    def evaluator(config: Mapping[str, int]) -> float:
        found = supernet_metrics(net, config, x, y, bn=bn, calib=calib, batch_size=batch_size, align=align)
        return metric_score(found, metric)

    evaluator.bn = bn  # type: ignore[attr-defined]
    return evaluator


#: a scoring set up to this size is copied to the supernet's GPU once, not for every candidate
DEVICE_COPY_LIMIT_BYTES = 4 << 30


def _on_model_device(net, x: Tensor, y: Tensor, calib: list[Tensor] | None
                     ) -> tuple[Tensor, Tensor, list[Tensor] | None]:
    """The search's fixed images on the supernet's device when it is not the CPU and they fit under
    :data:`DEVICE_COPY_LIMIT_BYTES`: a search scores thousands of candidates on the same images,
    and a host-to-GPU copy of them per candidate costs about as much as scoring them."""
    device = module_device(net.model)
    size = x.nbytes + y.nbytes + sum(b.nbytes for b in calib or [])
    if device.type == "cpu" or size > DEVICE_COPY_LIMIT_BYTES:
        return x, y, calib
    return x.to(device), y.to(device), None if calib is None else [b.to(device) for b in calib]


def evaluator_for_data(
    net,
    data,
    bn: str = "calibrate",
    *,
    split: str = "heldout",
    num_calib_images: int = DEFAULT_CALIB_IMAGES,
    batch_size: int | None = None,
    align: str = "left",
) -> Callable[[Mapping[str, int]], float]:
    """:func:`make_supernet_evaluator` on a :class:`~widthsearch.data.Dataset` split (default held-out).

    Calibration images are a fixed random subset of the *training* split (no augmentation), drawn
    with the data set's seed, so the images that set the BN statistics are not the ones scored.
    """
    target = getattr(data, split)
    calib = calibration_batches(data.train.x, num_calib_images, seed=data.seed) if bn == "calibrate" else None
    return make_supernet_evaluator(net, target.x, target.y, bn=bn, calib_batches=calib, batch_size=batch_size, align=align)


def heldout_eval_set(meta: Mapping, bn: str, images: int, calib_images: int = DEFAULT_CALIB_IMAGES):
    """(x, y, calibration batches or None, data) for a supernet checkpoint's ``meta``: a fixed,
    seeded subset of ``images`` images of its held-out split (never the test set) and, for
    ``bn="calibrate"``, ``calib_images`` training images for BN statistics."""
    from widthsearch.data import load_run_data

    data = load_run_data(meta)
    held = data.heldout
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(int(meta["seed"])))
    keep = torch.sort(order[: max(1, images)]).values
    x, y = held.x[keep], held.y[keep]
    calib = calibration_batches(data.train.x, calib_images, seed=data.seed) if bn == "calibrate" else None
    return x, y, calib, data


def check_search_images(images: int) -> None:
    """Candidates are scored on at least one held-out image (0 used to become 1 silently)."""
    if not isinstance(images, int) or images < 1:
        raise UserError(f"--search-images must be a positive integer, got {images!r}")


def supernet_evaluator(net, meta: Mapping, bn: str, images: int, calib_images: int = DEFAULT_CALIB_IMAGES,
                       align: str = "left"):
    """(evaluator, data): accuracy of a config on :func:`heldout_eval_set`'s images (``align`` as
    :func:`supernet_metrics`; "both" for BCNet's bilateral score)."""
    check_search_images(images)
    x, y, calib, data = heldout_eval_set(meta, bn, images, calib_images)
    return make_supernet_evaluator(net, x, y, bn=bn, calib_batches=calib, batch_size=len(y), align=align), data
