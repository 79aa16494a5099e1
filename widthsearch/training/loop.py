"""The epoch loop shared by supernet training and retraining: resume, checkpoints, logs, DDP.

Exact resumption: every random stream of an epoch (data order, augmentation, sampled
configurations, dropout) is re-seeded from ``(seed, epoch, rank)`` at the start of the epoch, and
the checkpoint written after each epoch holds the model, optimizer and scheduler states. A run
resumed from the checkpoint of epoch ``k`` therefore performs exactly the same computation for
epochs ``k+1..E`` as an uninterrupted run, and ends with identical weights (on the same device
and thread count). The global python/numpy/torch generator states are stored and restored too.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from widthsearch.data import BatchLoader, mix_seed, same_data_spec
from widthsearch.errors import UserError
from widthsearch.io import write_json_atomic, write_jsonl_atomic, write_text_atomic  # also re-exported from here
from widthsearch.progress import Progress
from widthsearch.runfolder import check_folder
from widthsearch.training.bn_sparsity import add_bn_l1, bn_weights
from widthsearch.training.checkpoint import atomic_save, load_checkpoint, load_state_checked, rng_state, set_rng_state
from widthsearch.training.distributed import DistContext
from widthsearch.training.optim import WarmupCosine, build_optimizer
from widthsearch.training.precision import apply_memory_format, autocast, to_memory_format
from widthsearch.training.progress_file import ProgressFile
from widthsearch.training.steps import zero_grads

__all__ = ["resolve_args", "prepare_output", "EpochLoop", "write_json_atomic", "write_jsonl_atomic"]

#: arguments that may change when resuming (they do not alter the computation beyond float rounding, or
#: extend it)
MUTABLE_ON_RESUME = frozenset({"epochs", "device", "calib_images", "threads", "workers", "compile"})


def resolve_args(
    explicit: Mapping[str, Any] | None, defaults: Mapping[str, Any], saved: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The run's arguments: defaults < checkpoint (when resuming) < explicitly given values.

    ``None`` in ``explicit`` means "not given". When resuming, a given value that differs from the
    checkpoint's is refused (except :data:`MUTABLE_ON_RESUME`): a resumed run must be the same run.
    """
    explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
    unknown = sorted(set(explicit) - set(defaults))
    if unknown:
        raise TypeError(f"unknown training argument(s): {', '.join(unknown)}")
    if saved is None:
        return {**defaults, **explicit}
    args = {**defaults, **{k: v for k, v in saved.items()}}
    for key, value in explicit.items():
        if key in MUTABLE_ON_RESUME:
            args[key] = value
            continue
        old = saved.get(key, defaults[key])
        if key == "data" and same_data_spec(value, old):
            args[key] = value  # the same file spelled as now, valid from the current folder
            continue
        same = math.isclose(float(value), float(old), rel_tol=1e-12) if isinstance(value, float) and isinstance(old, (int, float)) else value == old
        if not same:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} differs from the checkpoint's {old}; resume with the same settings or use a new --out")
    return args


def prepare_output(path: Path, resume: bool) -> dict | None:
    """Refuse to overwrite a checkpoint unless resuming, and to resume one that is not there (a
    resumed run takes its settings from the checkpoint: without one it would silently train the
    defaults); load it when resuming."""
    check_folder(path.parent)  # before any work: a file named as --out fails the first save
    if path.exists() and not resume:
        raise UserError(f"{path} already exists; pass --resume to continue it, or choose another --out")
    if resume and not path.exists():
        raise UserError(f"--resume: there is no checkpoint {path} to continue (a run killed in its first epoch "
                        "leaves none); leave out --resume to start the run")
    return load_checkpoint(path) if resume else None


class EpochLoop:
    """Runs epochs of ``step_fn`` over ``loader`` with checkpoints after each epoch.

    ``step_fn(x, y, rng) -> {"losses": [...], "correct": int}`` does the forward/backward passes
    (gradients are zeroed before and averaged over ranks after it, then the optimizer steps);
    ``eval_fn() -> dict`` runs on every rank after every epoch (after rank 0's BN buffers were
    copied to all ranks) and its values join the log row: under ``torchrun`` it must share the work
    out and reduce it, so that every rank returns the same numbers (see
    :func:`~widthsearch.training.evaluate.evaluate_metrics`).
    ``states`` are further objects with ``state_dict()``/``load_state_dict()`` (a stateful training
    strategy, per-subnet BN statistics): saved under ``"states"`` in every checkpoint, restored by
    :meth:`load`. ``epoch_start(epoch)`` runs before each epoch's first step, after the epoch's
    random streams are seeded and the model is in training mode (per-epoch settings such as a
    dropout ramp derive from the epoch index there, so a resumed run sets them alike); the
    entries of the dict it may return join the epoch's log row.
    """

    def __init__(
        self,
        *,
        ctx: DistContext,
        args: dict,
        model: nn.Module,
        loader: BatchLoader,
        step_fn: Callable,
        eval_fn: Callable[[], dict] | None,
        ckpt_path: Path,
        ckpt_format: str,
        ckpt_extra: dict | None = None,
        states: Mapping[str, Any] | None = None,
        progress: bool = False,
        echo: Callable[[str], None] | None = None,
        epoch_start: Callable[[int], dict | None] | None = None,
        side_files: Mapping[str, str] | None = None,
    ) -> None:
        self.epoch_start = epoch_start
        # written beside the first checkpoint, not before: a run that fails before its first
        # epoch ends leaves its --out as it found it
        self.side_files = dict(side_files or {})
        self.ctx, self.args, self.model, self.loader = ctx, args, model, loader
        self.step_fn, self.eval_fn = step_fn, eval_fn
        self.ckpt_path, self.ckpt_format, self.ckpt_extra = ckpt_path, ckpt_format, dict(ckpt_extra or {})
        self.states = dict(states or {})
        self.log_path = ckpt_path.parent / "log.jsonl"
        self.progress, self.echo = progress, echo
        # validated with the other recipe arguments (recipe.check_recipe) before any work
        self.precision = args["precision"]
        self.channels_last = bool(args["channels_last"])
        apply_memory_format(model, self.channels_last)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # older checkpoints' arguments have no bn_l1: off
        self.bn_l1 = float(args.get("bn_l1") or 0.0)
        self.bn_weights = bn_weights(model) if self.bn_l1 else []
        self.steps_per_epoch = len(loader)
        if self.steps_per_epoch < 1:
            raise UserError(
                f"--batch-size {args['batch_size']} is larger than the training split "
                f"({loader.num_samples * ctx.world_size} images); use a smaller batch"
            )
        self.optimizer = build_optimizer(model, args["lr"], args["weight_decay"], args["momentum"], args["nesterov"])
        self.scheduler = WarmupCosine(
            self.optimizer,
            total_steps=args["epochs"] * self.steps_per_epoch,
            warmup_steps=int(round(args["warmup_epochs"] * self.steps_per_epoch)),
        )
        self.epoch = 0
        self.history: list[dict] = []

    def load(self, ckpt: dict) -> None:
        load_state_checked(self.model, ckpt["model"], str(self.ckpt_path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        self.history = list(ckpt.get("history", []))
        saved_states = ckpt.get("states", {})
        for name, obj in self.states.items():
            if name in saved_states:
                obj.load_state_dict(saved_states[name])
        if self.epoch > self.args["epochs"]:
            raise UserError(f"checkpoint already has {self.epoch} epochs, more than --epochs {self.args['epochs']}")
        saved_epochs = int(ckpt["args"].get("epochs", self.args["epochs"]))
        if saved_epochs != self.args["epochs"] and self.ctx.is_main:
            print(
                f"note: --epochs {self.args['epochs']} differs from the checkpoint's {saved_epochs}; the cosine "
                "schedule is stretched from here on (the run is no longer identical to a single run)",
                file=sys.stderr,
            )

    def state(self) -> dict:
        return {
            "format": self.ckpt_format,
            "epoch": self.epoch,
            "args": self.args,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "world_size": self.ctx.world_size,
            "states": {name: obj.state_dict() for name, obj in self.states.items()},
            **self.ckpt_extra,
        }

    def run(self, stop_after: int | None = None) -> list[dict]:
        """Train from ``self.epoch`` to ``args["epochs"]`` (or ``stop_after`` epochs of this call),
        keeping ``progress.json`` up to date meanwhile (:mod:`~widthsearch.training.progress_file`)."""
        tracker = ProgressFile(self.ckpt_path.parent, epochs=self.args["epochs"], steps=self.steps_per_epoch,
                               checkpoint=self.ckpt_path.name, enabled=self.ctx.is_main)
        try:
            return self._run(tracker, stop_after)
        finally:
            tracker.close()

    def _run(self, tracker: ProgressFile, stop_after: int | None) -> list[dict]:
        ctx, args = self.ctx, self.args
        self.ctx.broadcast_state(self.model)
        zero_grads(self.params)
        done_here = 0
        while self.epoch < args["epochs"]:
            if stop_after is not None and done_here >= stop_after:
                break
            epoch = self.epoch
            self.loader.set_epoch(epoch)
            rng = random.Random(mix_seed(args["seed"], epoch, ctx.rank, 2))
            torch.manual_seed(mix_seed(args["seed"], epoch, ctx.rank, 3))
            self.model.train()
            started = (self.epoch_start(epoch) or {}) if self.epoch_start is not None else {}
            tracker.start_epoch(epoch)
            t0 = time.perf_counter()
            loss_sums: list[float] = []
            correct = seen = 0
            batches = self.loader
            bar = None
            if self.progress and ctx.is_main:
                bar = Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{args['epochs']}")
            for step, (xb, yb) in enumerate(batches, start=1):
                xb = to_memory_format(xb.to(ctx.device, non_blocking=True), self.channels_last)
                yb = yb.to(ctx.device, non_blocking=True)
                zero_grads(self.params)
                with autocast(ctx.device, self.precision):
                    stats = self.step_fn(xb, yb, rng)
                # before the optimizer step: the weights (and the last checkpoint) stay finite
                self._stop_if_diverged(stats["losses"], epoch, step, bar)
                ctx.average_gradients(self.params)
                # after averaging: every rank adds the same term to the same (replicated) scales
                add_bn_l1(self.bn_weights, self.bn_l1)
                self.optimizer.step()
                self.scheduler.step()
                losses = stats["losses"]
                if not loss_sums:
                    loss_sums = [0.0] * len(losses)
                for i, value in enumerate(losses):
                    loss_sums[i] += value * len(yb)
                correct += stats["correct"]
                seen += len(yb)
                tracker.step(step, seen)
                if bar is not None:
                    bar.update(loss=f"{losses[0]:.3f}")
            if bar is not None:
                bar.close()
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            train_seconds = time.perf_counter() - t0
            totals = ctx.sum_floats([*loss_sums, float(correct), float(seen), train_seconds])
            seen_all = max(1.0, totals[-2])
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": totals[0] / seen_all,
                "train_acc": totals[-3] / seen_all,
                **started,
            }
            if len(loss_sums) > 1:
                row["other_loss"] = sum(totals[1:-3]) / (len(loss_sums) - 1) / seen_all
            row["lr"] = float(self.scheduler.get_last_lr()[0])
            row["train_seconds"] = train_seconds
            row["img_per_s"] = seen_all / max(1e-9, totals[-1] / ctx.world_size)
            if ctx.enabled:
                # BN running statistics drift apart across ranks (each sees other data and widths);
                # keep rank 0's so that every rank holds the checkpointed state, and evaluates it
                for buf in self.model.buffers():
                    torch.distributed.broadcast(buf.data, src=0)
            t1 = time.perf_counter()
            tracker.evaluating(seen)
            if self.eval_fn is not None:
                # on every rank: each scores its share of the images and the counts are reduced
                row.update(self.eval_fn())
            row["seconds"] = time.perf_counter() - t0
            row["eval_seconds"] = time.perf_counter() - t1
            self.epoch = epoch + 1
            done_here += 1
            self.history.append(row)
            if ctx.is_main:
                for name, text in self.side_files.items():
                    if not (self.ckpt_path.parent / name).exists():
                        write_text_atomic(self.ckpt_path.parent / name, text)
                atomic_save(self.state(), self.ckpt_path)
                write_jsonl_atomic(self.log_path, self.history)
                if self.echo is not None:
                    self.echo(_format_row(row, args["epochs"]))
            ctx.barrier()
        return self.history


    def _stop_if_diverged(self, losses: list[float], epoch: int, step: int, bar: Progress | None) -> None:
        """A ``UserError`` once a step's loss is NaN or infinite (a too high learning rate): training
        on would only spread NaN through the weights and end at chance accuracy with exit 0.

        The losses are floats already, so the check costs nothing; under DDP the ranks agree on it
        (one tiny all-reduce) so that none waits forever for a rank that stopped."""
        bad = [v for v in losses if not math.isfinite(v)]
        if self.ctx.enabled:
            diverged = self.ctx.sum_floats([float(bool(bad))])[0] > 0
        else:
            diverged = bool(bad)
        if not diverged:
            return
        if bar is not None:
            bar.close()
        value = bad[0] if bad else float("nan")  # on a rank that saw none, another rank's loss was bad
        lr = float(self.scheduler.get_last_lr()[0])
        kept = f"; {self.ckpt_path} still holds epoch {self.epoch}" if self.epoch and self.ctx.is_main else ""
        raise UserError(f"loss became {value} at epoch {epoch + 1} step {step} (lr {lr:.3g}): lower --lr{kept}")


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['loss']:.4f}"]
    for key, label in (("max_acc", "max acc"), ("min_acc", "min acc"), ("heldout_acc", "held-out acc")):
        if key in row:
            parts.append(f"{label} {100 * row[key]:.2f}%")
    if row.get("subnet_acc"):
        parts.append("subnet accs " + "/".join(f"{100 * a:.2f}" for a in row["subnet_acc"]) + "%")
    parts.append(f"{row['img_per_s']:.0f} img/s")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)

