"""Score Channel-Bench-Macro architectures with a trained supernet (its fidelity as a proxy).

Each scored architecture gets its own BN statistics (recalibrated on training images) before its
accuracy is measured on a fixed subset of the supernet's held-out split; the table's mean accuracy
is then the ground truth for Kendall tau & co. Scores are written to a JSON file as they come, so a
killed scoring run resumes where it stopped.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from widthsearch.errors import UserError


def stratified_keys(bench: Any, count: int, seed: int = 0) -> List[str]:
    """``count`` keys spread over the FLOPs range: one random key from each of ``count`` FLOPs bins.

    All keys when ``count`` covers the table. Bins of equal size in FLOPs *rank* keep cheap and
    expensive architectures equally represented.
    """
    keys = list(bench.table.keys)
    if count >= len(keys):
        return keys
    if count < 2:
        raise UserError("--sample must be at least 2 (correlations need pairs)")
    order = np.argsort(bench.table.flops, kind="stable")
    rng = random.Random(seed)
    chosen = [keys[int(rng.choice(list(chunk)))] for chunk in np.array_split(order, count)]
    return chosen


def _save(path: Path, meta: Dict[str, Any], accuracy: Dict[str, float], loss: Dict[str, float]) -> None:
    from widthsearch.io import write_json_atomic

    write_json_atomic(path, {"meta": meta, "scores": accuracy, "loss": loss})


def _load_saved(path: Path, header: Dict[str, Any]) -> tuple[Dict[str, float], Dict[str, float]]:
    """(accuracy, loss) per key already scored in ``path`` with the same checkpoint and setting."""
    if not path.is_file():
        return {}, {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a scores file written by widthsearch ({e}); choose another --scores-out")
    if not isinstance(saved, dict) or saved.get("meta") != header:
        raise UserError(f"{path} holds scores of another checkpoint or setting; choose another --scores-out")
    accuracy = {k: float(v) for k, v in saved.get("scores", {}).items()}
    loss = {k: float(v) for k, v in saved.get("loss", {}).items()}
    # a key counts as done only with both numbers (files from before the loss was recorded lack it)
    done = accuracy.keys() & loss.keys()
    return {k: accuracy[k] for k in done}, {k: loss[k] for k in done}


def score_with_supernet(
    checkpoint: str | Path,
    bench: Any,
    keys: List[str],
    out: str | Path,
    *,
    bn: str = "calibrate",
    eval_images: int = 2000,
    calib_images: int = 2048,
    metric: str = "accuracy",
    device: str = "cpu",
    progress: bool = True,
    align: str | None = None,
) -> Dict[str, float]:
    """Score of each key's sub-network of the supernet at ``checkpoint``: held-out accuracy (%) or,
    with ``metric="loss"``, the negative mean cross-entropy.

    ``align``: ``"left"``, ``"right"`` or ``"both"`` (BCNet's mean of the two sides, each with its
    own BN statistics); default ``"both"`` for a ``--strategy bcnet`` supernet, else ``"left"``.

    Both numbers are measured in the same pass and written to ``out`` (``"scores"``: accuracy,
    ``"loss"``: cross-entropy), so switching the metric later costs nothing. Resumes from ``out``
    when it holds scores of the same checkpoint and setting. ``device``: ``"cpu"``, ``"cuda"`` or
    ``"auto"`` (CUDA when available).
    """
    from widthsearch.bench.cbm import MODEL_NAMES
    from widthsearch.training.evaluate import check_align, check_metric, heldout_eval_set, supernet_metrics
    from widthsearch.training.slimmable import load_supernet

    check_metric(metric)  # before any work
    check_align(align)
    from widthsearch.training.distributed import resolve_device

    net, meta = load_supernet(checkpoint, resolve_device(device))
    align = align or ("both" if meta.get("strategy") == "bcnet" else "left")
    expected = bench.space
    if [u.name for u in net.space.units] != [u.name for u in expected.units] or [
        u.choices for u in net.space.units
    ] != [u.choices for u in expected.units]:
        raise UserError(
            f"{checkpoint} is a {meta['model']} supernet with groups={meta['groups']}; scoring the "
            f"{bench.name} space needs {MODEL_NAMES[bench.name]} trained with --groups 4"
        )
    out = Path(out)
    header = {"checkpoint": str(checkpoint), "bn": bn, "eval_images": eval_images, "calib_images": calib_images,
              "space": bench.name}
    if align != "left":  # left-aligned score files written before alignment existed keep resuming
        header["align"] = align
    accuracy, loss = _load_saved(out, header)
    x, y, calib, _ = heldout_eval_set(meta, bn, eval_images, calib_images)
    todo = [k for k in keys if k not in accuracy]
    bar = None
    if progress:
        from widthsearch.progress import Progress

        bar = Progress(len(keys), "scoring archs", unit="arch", initial=len(keys) - len(todo))
    for i, key in enumerate(todo):
        found = supernet_metrics(net, bench.key_to_config(key), x, y, bn=bn, calib=calib, batch_size=len(y),
                                 align=align)
        accuracy[key], loss[key] = 100.0 * found["accuracy"], found["loss"]
        if bar is not None:
            bar.update()
        if i % 10 == 9:
            _save(out, header, accuracy, loss)
    if bar is not None:
        bar.close()
    _save(out, header, accuracy, loss)
    if metric == "accuracy":
        return {k: accuracy[k] for k in keys}
    return {k: -loss[k] for k in keys}
