"""The one training skeleton behind supernet training, retraining and joint training.

:func:`run_training` does what every training run does -- refuse to overwrite or load the
checkpoint to resume, resolve and check the arguments, set threads, start the (possibly
distributed) context, load the data, build the loader and the :class:`EpochLoop`, run it, and write
``result.json`` -- and asks a :class:`TrainingKind`'s ``build`` for what differs: the network, the
step, the per-epoch evaluation, the states to checkpoint and the run's own result entries
(:class:`Job`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from widthsearch.data import Dataset, load_data
from widthsearch.errors import UserError
from widthsearch.io import json_ready
from widthsearch.space.spec import SpaceSpec
from widthsearch.training.distributed import DistContext
from widthsearch.training.loop import EpochLoop, prepare_output, resolve_args, write_json_atomic
from widthsearch.training.recipe import check_recipe, recipe_defaults

__all__ = ["Job", "TrainingKind", "run_training", "set_threads", "data_model_kwargs", "spec_for_data"]


@dataclass
class Job:
    """What one kind of training puts into the skeleton.

    ``model`` is the module the optimizer trains (``net.model`` for a supernet); ``step(x, y, rng)``
    does one step's forward/backward passes; ``evaluate_epoch()`` scores the model after every
    epoch on every process (each scores its share of the images, the counts are reduced);
    ``states`` are saved in every checkpoint and restored on resume; ``summarize(loop, last_row)``
    gives the run's own entries of the result (on every process too); ``ckpt_extra`` joins every
    checkpoint; ``start_epoch(epoch)`` runs before every epoch (see :class:`EpochLoop`).
    """

    model: nn.Module
    step: Callable[..., dict]
    evaluate_epoch: Callable[[], dict] | None = None
    summarize: Callable[[EpochLoop, dict], dict] = lambda loop, last: {}
    states: dict[str, Any] = field(default_factory=dict)
    ckpt_extra: dict[str, Any] = field(default_factory=dict)
    start_epoch: Callable[[int], dict | None] | None = None


@dataclass(frozen=True)
class TrainingKind:
    """A kind of training run: its checkpoint file and format, its own arguments, its set-up.

    ``options`` are the arguments beyond the :class:`~widthsearch.training.recipe.Recipe`, with
    their defaults; ``build(args, data, ctx, ckpt) -> Job`` sets the run up (``ckpt`` is the loaded
    checkpoint when resuming, else None) and may add entries to ``args`` (they are saved).
    ``compiles``: whether ``build`` honours the recipe's ``compile`` (static networks only).
    """

    what: str  # for messages: "a supernet", "a trained-model", ...
    checkpoint_name: str
    format: str
    options: Mapping[str, Any]
    build: Callable[[dict, Dataset, DistContext, dict | None], Job]
    compiles: bool = False

    def defaults(self) -> dict[str, Any]:
        return {**recipe_defaults(), **self.options}


def run_training(
    kind: TrainingKind,
    args: Mapping[str, Any] | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Train ``kind`` into ``out_dir`` (checkpoint after every epoch, ``log.jsonl``, ``result.json``).

    ``args``: recipe fields and ``kind.options`` (``None`` values mean "default"/"as in the
    checkpoint"). ``stop_after`` ends this call after that many epochs (the run can be resumed).
    Under ``torchrun`` every process trains on its shard; only rank 0 writes.
    """
    out = Path(out_dir)
    ckpt_path = out / kind.checkpoint_name
    ckpt = prepare_output(ckpt_path, resume)
    if ckpt is not None and ckpt.get("format") != kind.format:
        raise UserError(f"{ckpt_path} is not {kind.what} checkpoint")
    a = resolve_args(args, kind.defaults(), ckpt["args"] if ckpt else None)
    check_recipe(a)
    if a.get("compile") and not kind.compiles:
        raise UserError(f"--compile is for static networks, not {kind.what} run: its sub-networks change from step "
                        "to step, where compiling does not pay (docs/benchmarks.md)")
    set_threads(a["threads"])
    ctx = DistContext.from_env(a["device"])
    try:
        if a["batch_size"] % ctx.world_size:
            raise UserError(f"--batch-size {a['batch_size']} (global) must be divisible by the {ctx.world_size} processes")
        data = load_data(a["data"], a["heldout_fraction"], a["seed"], augment=a["augment"],
                         loading=a.get("loading", "auto"), image_size=a.get("image_size"))
        side_files = record_heldout(a, data)
        job = kind.build(a, data, ctx, ckpt)
        a["classes"] = list(data.classes)
        loader = data.loader(
            "train", a["batch_size"] // ctx.world_size, shuffle=True, drop_last=True, augment=True,
            seed=a["seed"], rank=ctx.rank, world_size=ctx.world_size, workers=a.get("workers"), device=ctx.device,
        )
        loop = EpochLoop(
            ctx=ctx, args=a, model=job.model, loader=loader, step_fn=job.step, eval_fn=job.evaluate_epoch,
            ckpt_path=ckpt_path, ckpt_format=kind.format, ckpt_extra=job.ckpt_extra, states=job.states,
            progress=progress, echo=echo, epoch_start=job.start_epoch, side_files=side_files,
        )
        if ckpt is not None:
            loop.load(ckpt)
        history = loop.run(stop_after=stop_after)
        last = history[-1] if history else {}
        result = {
            "checkpoint": str(ckpt_path),
            "model": a["model"],
            "data": a["data"],
            **job.summarize(loop, last),
            "epochs_done": loop.epoch,
            "epochs": a["epochs"],
            "complete": loop.epoch >= a["epochs"],
            "img_per_s": last.get("img_per_s"),
            "seconds": sum(r.get("seconds", 0.0) for r in history),
            "world_size": ctx.world_size,
            # the recipe it was trained with: a finished run's result can stand in for its checkpoint
            # (a resumed `run` checks a kept result's recipe as it would the checkpoint's)
            "args": json_ready(a),
        }
        if ctx.is_main:
            write_json_atomic(out / "result.json", result)
        # the ranks tear the group down together: a gloo rank whose peer destroys the group while
        # its own last messages are in flight can abort ("terminate called without an active
        # exception"), seen once in the two-process test under load
        ctx.barrier()
        return result
    finally:
        ctx.close()


def record_heldout(args: dict, data: Dataset) -> dict[str, str]:
    """Put a streamed run's held-out digest in ``args``; return its file list as ``{"heldout.txt": text}``
    for the epoch loop to write beside the checkpoint (nothing for data held in memory).

    The split is redrawn from the folder and the seed whenever the run's data are loaded again
    (resume, search); the digest turns a folder that changed meanwhile into a one-line error
    instead of a silently different held-out set."""
    from widthsearch.data import check_heldout

    if data.stream is None:
        return {}
    args["heldout_digest"] = check_heldout(data, args)
    return {"heldout.txt": "".join(f"{f}\n" for f in data.heldout.files)}


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given (one thread is fastest when the cores are shared)."""
    if threads is None:
        return
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)


def data_model_kwargs(model_name: str, data: Dataset) -> dict[str, Any]:
    """Extra ``build_model`` arguments that make the zoo model take this data set's images.

    Nothing for a user's model: its own arguments (``--model-arg``) say what it takes, and building it
    runs it once on the data's image shape (a mismatch is a one-line error there)."""
    from widthsearch.models import model_info
    from widthsearch.models.user import is_zoo_model

    if not is_zoo_model(model_name):
        return {}
    info = model_info(model_name)
    want_c = int(info["input_shape"][0])
    have_c = int(data.input_shape[0])
    if have_c == want_c:
        return {}
    if "in_channels" in info["kwargs"]:
        return {"in_channels": have_c}
    raise UserError(f"model {model_name!r} takes {want_c}-channel images but {data.spec} has {have_c} channel(s)")


def spec_for_data(spec: SpaceSpec, data: Dataset) -> SpaceSpec:
    """``spec`` for this data set's classes, image shape and channels."""
    from widthsearch.models.user import is_zoo_model

    # a zoo model's input channels follow the data, whatever data set the spec was written for
    kwargs = {k: v for k, v in dict(spec.model_kwargs).items() if k != "in_channels" or not is_zoo_model(spec.model)}
    return dataclasses.replace(
        spec,
        num_classes=int(data.num_classes),
        input_shape=tuple(int(s) for s in data.input_shape),
        model_kwargs={**kwargs, **data_model_kwargs(spec.model, data)},
    )


def record_spec(args: dict, spec: SpaceSpec) -> None:
    """Keep the spec's data fields in the run's arguments too (older readers look for them there)."""
    args.update(
        input_shape=list(spec.input_shape or ()),
        num_classes=spec.num_classes,
        model_kwargs=dict(spec.model_kwargs),
    )
