"""How far a run folder has come: ``widthsearch status DIR``.

A long run (``run``, ``adjust``, ``spnet``, a ``supernet`` or ``train`` folder) leaves in every
training folder a checkpoint (``model.pt``, ``supernet.pt`` or ``joint.pt``: the ``epoch`` it
completed and the ``args`` it was started with), ``log.jsonl`` (one row per epoch: accuracy, speed,
seconds) and, once done, ``result.json``; while an epoch runs, ``progress.json`` (its step, phase
and speed so far, :mod:`widthsearch.training.progress_file`); searches leave ``search_state.json`` and then
``search.json``; Network Adjustment, SP-Net and its experiment keep their stage in
``adjust_state.json``, ``spnet_state.json`` and ``experiment_state.json``; a finished method
writes ``report.md``; a folder a process is writing into holds its lock file (``pid host``,
:mod:`widthsearch.runfolder`). This module reads those and nothing else: no lock is taken and
nothing is written, so it is safe beside the process it watches.

The time left is an estimate for the trainings that have started only (a run folder does not say
which trainings are still to come): the epochs left, less the part of the current one done, times
the median of the last three epochs' seconds; in a first epoch, its seconds so far divided by the
part done (training steps only, so a little short: evaluation follows).
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from widthsearch.errors import UserError
from widthsearch.methods import netadjust, spnet, spnet_experiment, supernet_search
from widthsearch.runfolder import lock_status, process_alive
from widthsearch.training import joint, retrain, slimmable
from widthsearch.training.progress_file import PROGRESS_NAME

__all__ = ["CHECKPOINT_KINDS", "format_status", "run_status", "training_status"]

#: a training folder's checkpoint file and the kind of training it holds (the names the trainings write)
CHECKPOINT_KINDS = {retrain.CHECKPOINT_NAME: "network", slimmable.CHECKPOINT_NAME: "supernet",
                    joint.CHECKPOINT_NAME: "joint"}
#: the state files of the methods whose runs have stages beyond their trainings
METHOD_STATES = (netadjust.STATE_FILE, spnet.STATE_FILE, spnet_experiment.STATE_FILE)
#: epochs whose duration predicts the next ones (the first epoch of a process also compiles, warms caches)
RECENT_EPOCHS = 3


def run_status(folder: str | Path) -> dict[str, Any]:
    """Everything :mod:`the module doc <widthsearch.runstatus>` lists about ``folder``, JSON-ready."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    # one walk of the tree; the run folder's own files first, then its subfolders in natural order
    wanted = {"log.jsonl", PROGRESS_NAME, supernet_search.STATE_FILE, *METHOD_STATES}
    files = sorted((p for p in root.rglob("*") if p.name in wanted),
                   key=lambda p: _natural_key(_relative(p.parent, root)))
    # a training in its first epoch has only progress.json; dict keys keep the order, once each
    folders = dict.fromkeys(p.parent for p in files if p.name in ("log.jsonl", PROGRESS_NAME))
    trainings = [training_status(folder, root) for folder in folders]
    searches = [_search_status(p.parent, root) for p in files if p.name == supernet_search.STATE_FILE]
    stages = [line for p in files if p.name in METHOD_STATES and (line := _method_stage(p, root)) is not None]
    report = root / "report.md" if (root / "report.md").exists() else None
    if not trainings and not searches and not stages and report is None:
        raise UserError(f"{root} holds no widthsearch training, search or report")
    lock = lock_status(root)
    left = [t["seconds_left"] for t in trainings if t["seconds_left"] is not None]
    running = bool(lock and lock["alive"]) or any(t["running"] for t in trainings)
    return {
        "folder": str(root),
        "state": "finished" if report else "running" if running else "stopped",
        "lock": lock,
        "report": str(report) if report else None,
        "trainings": trainings,
        "searches": searches,
        "stages": stages,
        "running": sum(t["running"] for t in trainings),
        # trainings that run side by side overlap, so the longest is the wall time they need at least
        "seconds_left_started": max(left) if left else None,
    }


def training_status(folder: Path, root: Path | None = None) -> dict[str, Any]:
    """One training folder: kind, epochs done of planned, the last epoch's numbers, the epoch in
    progress (``current``: None unless a live process writes ``progress.json``), time left."""
    rows = _log_rows(folder / "log.jsonl")
    result = _read_json(folder / "result.json")
    current = _current_epoch(folder)
    checkpoint = next((folder / name for name in CHECKPOINT_KINDS if (folder / name).exists()), None)
    header = _checkpoint_header(checkpoint) if checkpoint else {}
    done = header.get("epoch", rows[-1]["epoch"] if rows else 0)
    planned = ((result or {}).get("epochs") or (header.get("args") or {}).get("epochs")
               or (current or {}).get("epochs"))
    finished = bool(result and result.get("complete"))
    recent = [r["seconds"] for r in rows[-RECENT_EPOCHS:] if isinstance(r.get("seconds"), (int, float))]
    per_epoch = statistics.median(recent) if recent else None
    part_done = current["part_done"] if current else 0.0
    if per_epoch is None and current and part_done > 0:
        per_epoch_now = current["seconds"] / part_done  # a first epoch: extrapolate it
    else:
        per_epoch_now = per_epoch
    left = None
    if not finished and planned is not None and per_epoch_now is not None:
        left = max(0.0, int(planned) - int(done) - part_done) * per_epoch_now
    lock = lock_status(folder)
    last = rows[-1] if rows else {}
    kind_file = checkpoint.name if checkpoint else (current or {}).get("checkpoint")
    return {
        "path": _relative(folder, root),
        "kind": CHECKPOINT_KINDS.get(kind_file),
        "epochs_done": int(done),
        "epochs": int(planned) if planned is not None else None,
        "finished": finished,
        "running": bool(lock and lock["alive"]) or current is not None,
        "current": current,
        "accuracy": _accuracy(last),
        "img_per_s": last.get("img_per_s"),
        "seconds_per_epoch": per_epoch,
        "seconds_left": left,
    }


def _current_epoch(folder: Path) -> dict[str, Any] | None:
    """The epoch a live process is running in ``folder``, from its ``progress.json``: ``epoch``
    (1-based), ``epochs``, ``step`` of ``steps``, ``part_done`` (their ratio), ``phase``
    (``train``/``evaluate``), ``seconds`` and ``img_per_s`` so far, ``checkpoint`` (the file it
    will write). None without the file, or when its writer is gone (a kill leaves it behind) or
    runs on another host (no way to tell from here)."""
    progress = _read_json(folder / PROGRESS_NAME)
    if progress is None:
        return None
    try:
        pid, host = int(progress["pid"]), str(progress.get("host", ""))
        step, steps = int(progress["step"]), int(progress["steps"])
        epoch, seconds = int(progress["epoch"]), float(progress["seconds"])
    except (KeyError, TypeError, ValueError):
        return None  # not a file this version wrote
    if process_alive(pid, host) is not True or steps < 1:
        return None
    return {"epoch": epoch, "epochs": progress.get("epochs"), "step": step, "steps": steps,
            "part_done": min(1.0, max(0.0, step / steps)), "phase": progress.get("phase"),
            "seconds": seconds, "img_per_s": progress.get("img_per_s"), "checkpoint": progress.get("checkpoint")}


def _method_stage(path: Path, root: Path) -> dict[str, str] | None:
    """Where a method's own state file says its run stands (None when it cannot be read)."""
    state = _read_json(path)
    if state is None:
        return None
    settings = state.get("settings") or {}
    if path.name == netadjust.STATE_FILE:
        text = f"Network Adjustment: {len(state.get('rounds') or [])}/{settings.get('rounds', '?')} rounds done"
    elif path.name == spnet.STATE_FILE:
        bases = f"{len(state.get('bases') or [])}/{len(settings.get('bases') or []) or '?'} bases trained"
        text = f"SP-Net: {bases}, stage {state.get('stage', '?')}"
    else:  # experiment_state.json
        text = "SP-Net vs S-Net: " + _experiment_arms(path.parent, state)
    return {"path": _relative(path.parent, root), "state": path.name, "text": text}


def _experiment_arms(folder: Path, state: dict[str, Any]) -> str:
    """Each seed's arms of a SP-Net experiment: done, started or to come. The state records a seed's
    arms only when its worker returns, so the arms' own folders say how far the seed has come."""
    settings = state.get("settings") or {}
    recorded = state.get("arms") or {}
    parts = []
    for seed in settings.get("seeds") or ():
        arms = (f"{stage.split(':')[0]} {_arm_progress(spnet_experiment.arm_folder(folder, stage), stage in recorded)}"
                for stage in spnet_experiment.seed_stages(settings, seed))
        parts.append(f"seed {seed}: " + ", ".join(arms))
    return "; ".join(parts) or "no seed started"


def _arm_progress(folder: Path, recorded: bool) -> str:
    """``done`` (recorded, SP-Net's state at ``done``, or the S-Net training complete), ``started``
    (its folder exists) or ``to come``."""
    if recorded:
        return "done"
    spnet_state = _read_json(folder / spnet.STATE_FILE)
    trained = _read_json(folder / "result.json")
    if (spnet_state or {}).get("stage") == "done" or (trained or {}).get("complete"):
        return "done"
    return "started" if folder.is_dir() else "to come"


def _search_status(folder: Path, root: Path) -> dict[str, Any]:
    state = _read_json(folder / supernet_search.STATE_FILE) or {}
    return {"path": _relative(folder, root),
            "finished": (folder / "search.json").exists(), "algorithm": state.get("algorithm"),
            "running": bool((lock := lock_status(folder)) and lock["alive"])}


def _relative(folder: Path, root: Path | None) -> str:
    return str(folder.relative_to(root)) if root is not None and folder != root else "."


def _accuracy(row: dict[str, Any]) -> dict[str, Any] | None:
    """The last epoch's held-out accuracy as the training kind logs it."""
    if "heldout_acc" in row:
        return {"heldout": row["heldout_acc"]}
    if "max_acc" in row:
        return {"max": row["max_acc"], "min": row.get("min_acc")}
    if row.get("subnet_acc"):
        return {"subnets": list(row["subnet_acc"])}
    return None


def _log_rows(path: Path) -> list[dict[str, Any]]:
    """The epoch rows of ``log.jsonl``; a line a kill cut short is passed over."""
    rows = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return rows


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _checkpoint_header(path: Path) -> dict[str, Any]:
    """A checkpoint's ``epoch`` and ``args``, its tensors memory-mapped rather than read (a large
    supernet's checkpoint is hundreds of MB); ``{}`` when it cannot be read (being replaced, say)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a status display falls back to the log, whatever went wrong
        return {}
    if not isinstance(ckpt, dict):
        return {}
    return {k: ckpt[k] for k in ("epoch", "args") if k in ckpt}


def _natural_key(text: str) -> list:
    """Sorts names the way people number things: seed-2 before seed-10, rounds/9 before rounds/10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


# ---- text ------------------------------------------------------------------------------------------
def format_status(status: dict[str, Any]) -> str:
    """The status as a few lines of text: the folder's state, one line per training and search."""
    lines = [f"{status['folder']}: {_state_text(status)}"]
    if status["trainings"]:
        width = max(len("training"), *(len(t["path"]) for t in status["trainings"]))
        lines.append(f"  {'training':<{width}}  {'kind':<8}  {'epochs':>7}  {'accuracy':<17}  {'img/s':>6}  "
                     f"{'s/epoch':>7}  left")
        for t in status["trainings"]:
            epochs = f"{t['epochs_done']}/{t['epochs'] if t['epochs'] is not None else '?'}"
            speed = f"{t['img_per_s']:.0f}" if t["img_per_s"] is not None else "-"
            per_epoch = f"{t['seconds_per_epoch']:.0f}" if t["seconds_per_epoch"] is not None else "-"
            left = "done" if t["finished"] else _duration(t["seconds_left"])
            if t["current"]:
                left += f" (running: {_current_text(t['current'])})"
            elif t["running"]:
                left += " (running)"
            accuracy = _accuracy_text(t["accuracy"])
            lines.append(f"  {t['path']:<{width}}  {t['kind'] or '-':<8}  {epochs:>7}  {accuracy:<17}  {speed:>6}  "
                         f"{per_epoch:>7}  {left}")
    for stage in status["stages"]:
        lines.append(f"  {stage['path']}: {stage['text']}")
    for s in status["searches"]:
        what = "done" if s["finished"] else "running" if s["running"] else "started"
        kind = f"{s['algorithm']} search" if s["algorithm"] else "search"
        lines.append(f"  {s['path']}: {kind}, {what}")
    if status["seconds_left_started"] is not None:
        lines.append(f"  started trainings: {_duration(status['seconds_left_started'])} left at their recent speed "
                     "(trainings still to come are not counted)")
    return "\n".join(lines)


def _current_text(current: dict[str, Any]) -> str:
    """``epoch 2 at 43%`` or ``epoch 2 evaluating``."""
    if current["phase"] == "evaluate":
        return f"epoch {current['epoch']} evaluating"
    return f"epoch {current['epoch']} at {100 * current['part_done']:.0f}%"


def _state_text(status: dict[str, Any]) -> str:
    lock = status["lock"]
    if status["state"] == "finished":
        return "finished (report.md)"
    if lock and lock["alive"]:
        return f"running (process {lock['pid']}" + (f" on {lock['host']}" if lock["host"] else "") + ")"
    if status["running"]:
        return f"{status['running']} training(s) running, no process holds the folder itself"
    if lock and lock["alive"] is None:
        return f"locked by process {lock['pid']} on {lock['host']} (another host: cannot tell whether it runs)"
    return "stopped: continue it with the same command and --resume"


def _accuracy_text(accuracy: dict[str, Any] | None) -> str:
    if not accuracy:
        return "-"
    if "heldout" in accuracy:
        return f"held-out {100 * accuracy['heldout']:.2f}%"
    if "max" in accuracy:
        low = f"/{100 * accuracy['min']:.1f}" if accuracy.get("min") is not None else ""
        return f"max/min {100 * accuracy['max']:.1f}{low}%"
    return "subnets " + "/".join(f"{100 * a:.1f}" for a in accuracy["subnets"]) + "%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
