"""The retraining stage of ``run`` (autoslim, bcnet, netadjust): pairs of networks trained from
scratch under every seed, one after another or in up to ``jobs`` worker processes, then compared.

A pair is a searched network and its baseline; each network and seed trains into
``retrain/<name>/seed-<k>/`` with the same recipe, and every training is the same
:func:`~widthsearch.training.retrain.train_network` call whether it runs in this process
(``jobs=1``) or in a worker (:mod:`widthsearch.workers`), so the numbers do not depend on
``jobs``. A training that finished in an earlier (killed) run is resumed from its checkpoint, which
only re-scores it. Each training scores the test images once, per image, and the comparison reads
those answers (:func:`~widthsearch.methods.comparison.compare_networks`).
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from widthsearch.errors import UserError

__all__ = ["Retraining", "check_jobs", "check_seeds", "retrain_pairs", "run_retrainings"]

#: a network of a pair: ``(folder name under retrain/, train_network's keyword arguments)``, the
#: network given as ``channels=`` (config) or ``uniform_flops=`` (FLOPs of a uniform-width net)
Network = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Retraining:
    """One network trained under one seed into ``folder``: ``train_network(recipe, folder, **network)``."""

    folder: Path
    recipe: Mapping[str, Any]
    network: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"{self.folder.parent.name}/{self.folder.name}"

    def started(self, resume: bool) -> bool:
        return _started(self.folder, resume)


def _started(folder: Path, resume: bool) -> bool:
    """Whether a resumed run continues the training in ``folder`` from its checkpoint."""
    return resume and (folder / "model.pt").exists()


def check_seeds(seeds: Any) -> tuple[int, ...]:
    """The retraining seeds as a tuple of distinct integers (one-line error otherwise)."""
    try:
        values = tuple(int(v) for v in ([seeds] if isinstance(seeds, int) else seeds))
    except (TypeError, ValueError):
        raise UserError(f"--seeds {seeds!r}: expected integers like 0,1,2") from None
    if not values or len(set(values)) != len(values) or any(v < 0 for v in values):
        raise UserError(f"--seeds {','.join(map(str, values)) or '(none)'}: give distinct non-negative seeds")
    return values


def check_jobs(jobs: Any) -> int:
    """``--jobs`` as a positive integer (default 1; one-line error otherwise)."""
    if jobs is None:
        return 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs must be a positive integer, got {jobs!r}")
    return jobs


def retrain_pairs(
    s: Mapping[str, Any],
    out: Path,
    pairs: Sequence[tuple[Network, Network]],
    *,
    resume: bool,
    progress: bool,
    jobs: int = 1,
    echo: Callable[[str], None] | None = None,
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]]:
    """Retrain both networks of every pair under every seed of ``s["seeds"]`` and compare them.

    Returns per pair ``(found results, base results, comparison)``, one result per seed. The
    trainings run in this order (pair by pair, seed by seed, the found net first), in this process
    when ``jobs`` is 1, otherwise up to ``jobs`` at a time in worker processes.
    """
    from widthsearch.methods.comparison import compare_networks

    seeds = check_seeds(s["seeds"])
    trainings = _plan(s, out, pairs, seeds, resume)
    results = run_retrainings(trainings, jobs=check_jobs(jobs), resume=resume, progress=progress, echo=echo)
    compared = []
    per_pair = 2 * len(seeds)
    for k in range(len(pairs)):
        block = results[per_pair * k: per_pair * (k + 1)]  # seed by seed, the found net first
        found, base = block[0::2], block[1::2]
        comparison = compare_networks([r["test_correct"] for r in found], [r["test_correct"] for r in base], seeds)
        compared.append(([_public(r) for r in found], [_public(r) for r in base], comparison))
    return compared


def _plan(s: Mapping[str, Any], out: Path, pairs: Sequence[tuple[Network, Network]], seeds: Sequence[int],
          resume: bool) -> list[Retraining]:
    """Every training of the pairs, in order; each uniform-width network is found once for all its seeds."""
    data = []  # loaded on first need: only a new uniform-width network needs it

    def load():
        from widthsearch.data import load_data

        if not data:
            data.append(load_data(s["data"], 0.0, 0, augment="none"))  # only its classes and image shape count
        return data[0]

    trainings = []
    for pair in pairs:
        networks = []
        for name, network in pair:
            folders = [out / "retrain" / name / f"seed-{seed}" for seed in seeds]
            if "uniform_flops" in network and not all(_started(f, resume) for f in folders):
                network = {**network, "uniform_flops": _uniform(s, load(), network["uniform_flops"])}
            networks.append((folders, network))
        for i, seed in enumerate(seeds):
            recipe = {"model": s["model"], "model_kwargs": s.get("model_kwargs"), "data": s["data"],
                      "epochs": s["retrain_epochs"], "batch_size": s["batch_size"], "lr": s["lr"], "seed": seed,
                      "threads": s["threads"], "device": s["device"], "compile": s.get("compile")}
            trainings += [Retraining(folders[i], recipe, network) for folders, network in networks]
    return trainings


def _uniform(s: Mapping[str, Any], data, flops: Any):
    from widthsearch.training.retrain import UniformWidth, uniform_network

    if isinstance(flops, UniformWidth):
        return flops
    return uniform_network(s["model"], data, float(flops), model_kwargs=dict(s.get("model_kwargs") or {}))


def _public(result: Mapping[str, Any]) -> dict[str, Any]:
    """A training's result without its per-image answers (those went into the comparison) and recipe."""
    return {k: v for k, v in result.items() if k not in ("test_correct", "args")}


def run_retrainings(trainings: Sequence[Retraining], *, jobs: int, resume: bool, progress: bool,
                    echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``trainings`` (in this process when ``jobs`` is 1) and return their results in order."""
    done = {"n": 0}

    def finished(index: int, result: Mapping[str, Any]) -> None:
        done["n"] += 1
        if echo is not None:
            echo(f"      {trainings[index].label}: test accuracy {100 * result['accuracy']:.2f}% "
                 f"({done['n']}/{len(trainings)} trained)")

    if jobs == 1 or len(trainings) == 1:
        results = []
        for i, training in enumerate(trainings):
            results.append(retrain(training, resume, progress))
            finished(i, results[-1])
        return results
    from widthsearch.workers import Task, run_in_processes

    tasks = [Task(t.label, _retrain_in_worker, (t, resume)) for t in trainings]
    return run_in_processes(tasks, jobs, on_done=finished)


def retrain(training: Retraining, resume: bool, progress: bool,
            echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One training; a resumed one takes its network from its checkpoint, so it is named only for a new one.

    A resumed training that finished before is taken from its ``result.json`` when that holds the
    per-image answers and a recipe that agrees with this one (:func:`kept_result`): its
    checkpoint may be gone, as when a run folder is kept or moved without its weights.
    """
    from widthsearch.training.retrain import train_network

    kept = kept_result(training) if resume else None
    if kept is not None:
        return kept
    again = training.started(resume)
    return train_network(dict(training.recipe), training.folder, resume=again, progress=progress, echo=echo,
                         test_predictions=True, **({} if again else dict(training.network)))


def kept_result(training: Retraining) -> dict[str, Any] | None:
    """The finished result saved in ``training.folder/result.json``, or None where there is none to
    take (no file, an unfinished or older training, one without per-image answers or recipe).

    The recipe is checked as a checkpoint's would be on resume (a different one is refused with one
    line); ``epochs`` may be raised on resume, and then the training goes on from its checkpoint.
    """
    from widthsearch.runfolder import rehome_paths
    from widthsearch.training.loop import resolve_args
    from widthsearch.training.retrain import NETWORK_TRAINING

    path = training.folder / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    saved = result.get("args")
    if not (result.get("complete") and "test_correct" in result and saved):
        return None
    if int(training.recipe.get("epochs") or saved["epochs"]) != int(saved["epochs"]):
        return None
    resolve_args(training.recipe, NETWORK_TRAINING.defaults(), saved)  # refuses another recipe
    return rehome_paths(result, training.folder)


def _retrain_in_worker(training: Retraining, resume: bool) -> dict[str, Any]:
    """:func:`retrain` in a worker process: the folder locked (a second process on it is refused),
    epoch lines instead of progress bars (several workers share one terminal), each line naming
    its training."""
    from widthsearch.runfolder import RunLock

    with RunLock(training.folder):
        return retrain(training, resume, progress=False, echo=functools.partial(worker_say, training.label))


def worker_say(label: str, line: str) -> None:
    """A line of a worker process, named by its task (several workers share one terminal)."""
    print(f"      {label}: {line}", file=sys.stderr, flush=True)
