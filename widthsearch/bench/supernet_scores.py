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


def _save(path: Path, scores: Dict[str, float], meta: Dict[str, Any]) -> None:
    from widthsearch.training.loop import write_json_atomic

    write_json_atomic(path, {"meta": meta, "scores": scores})


def score_with_supernet(
    checkpoint: str | Path,
    bench: Any,
    keys: List[str],
    out: str | Path,
    *,
    bn: str = "calibrate",
    eval_images: int = 2000,
    calib_images: int = 2048,
    progress: bool = True,
) -> Dict[str, float]:
    """Held-out accuracy (%) of each key's sub-network of the supernet at ``checkpoint``.

    Resumes from ``out`` when it holds scores of the same checkpoint.
    """
    from widthsearch.cli.search import supernet_evaluator
    from widthsearch.training.supernet import load_supernet

    net, meta = load_supernet(checkpoint)
    from widthsearch.bench.cbm import MODEL_NAMES

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
    scores: Dict[str, float] = {}
    if out.is_file():
        saved = json.loads(out.read_text())
        if saved.get("meta") != header:
            raise UserError(f"{out} holds scores of another checkpoint or setting; choose another --scores-out")
        scores = {k: float(v) for k, v in saved["scores"].items()}
    evaluator, _ = supernet_evaluator(net, meta, bn, eval_images, calib_images)
    todo = [k for k in keys if k not in scores]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc="scoring archs", unit="arch")
    for i, key in enumerate(todo):
        scores[key] = 100.0 * float(evaluator(bench.key_to_config(key)))
        if bar is not None:
            bar.update(1)
        if i % 10 == 9 or i == len(todo) - 1:
            _save(out, scores, header)
    if bar is not None:
        bar.close()
    _save(out, scores, header)
    return {k: scores[k] for k in keys}
