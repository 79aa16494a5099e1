"""Reading a proxy's per-architecture scores: JSON ``{key: score}``, CSV ``key,score``, or the
``cbm_scores.json`` that ``bench cbm --supernet`` writes."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict

from widthsearch.bench.cbm.table import is_key
from widthsearch.errors import UserError

__all__ = ["load_scores"]


def _unwrap_supernet_scores(raw: Any, metric: str, path: Path) -> Any:
    """``{key: score}`` from a ``--supernet`` scores file; any other JSON is returned unchanged."""
    from widthsearch.training.evaluate import check_metric

    check_metric(metric)
    if not (isinstance(raw, dict) and isinstance(raw.get("meta"), dict) and isinstance(raw.get("scores"), dict)):
        return raw
    if metric == "accuracy":
        return raw["scores"]
    loss = raw.get("loss")
    if not isinstance(loss, dict) or not loss:
        raise UserError(f"{path} records no cross-entropy; rescore with --supernet to get it")
    return {k: -v if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in loss.items()}


def load_scores(path: Any, metric: str = "accuracy") -> Dict[str, float]:
    """Read scores: a JSON object ``{key: score}``, a CSV with rows ``key,score`` (an optional
    header row is skipped), or the ``cbm_scores.json`` that ``--supernet`` writes (its accuracy,
    or its negative cross-entropy with ``metric="loss"``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"scores file {p} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read scores file {p}: {exc}") from None
    stripped = text.lstrip()
    out: Dict[str, float] = {}
    if stripped.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}: invalid JSON ({exc})") from None
        raw = _unwrap_supernet_scores(raw, metric, p)
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UserError(f"{p}: score of {k!r} is not a number")
            out[str(k)] = float(v)
    else:
        header_seen = False
        for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise UserError(f"{p}:{lineno}: expected 'key,score'")
            key, val = row[0].strip(), row[1].strip()
            try:
                score = float(val)
            except ValueError:
                if not out and not header_seen:
                    header_seen = True  # the first row may be a header such as "key,score"
                    continue
                raise UserError(f"{p}:{lineno}: score {val!r} is not a number") from None
            if key in out:
                raise UserError(f"{p}:{lineno}: key {key!r} appears twice")
            out[key] = score
    if not out:
        raise UserError(f"{p}: no scores found")
    bad = [k for k in out if not is_key(k)]
    if bad:
        raise UserError(f"{p}: {bad[0]!r} is not a Channel-Bench-Macro key (7 digits 1-4)")
    return out
