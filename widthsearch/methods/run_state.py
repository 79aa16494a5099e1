"""The saved state of a resumable multi-stage method run (Network Adjustment, SP-Net)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Collection, Mapping

from widthsearch.data.loading import same_data_spec
from widthsearch.errors import UserError
from widthsearch.runfolder import rehome_paths


def load_run_state(path: Path, settings: Mapping[str, Any], *, version: int,
                   mutable: Collection[str] = (), absent: Mapping[str, Any] | None = None) -> dict | None:
    """The state saved at ``path`` for a resumed run, or None when there is none.

    A state of another format version, or one started with other ``settings`` (except the
    ``mutable`` ones, which do not change the computation), is refused with one line: a resumed
    run must be the same run. Paths the run recorded are re-pointed to the folder's present place
    (:func:`widthsearch.runfolder.rehome_paths`). ``absent`` gives the values that a setting added
    later had in effect for states saved before it existed (they are filled in).
    """
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("version") != version:
        raise UserError(f"{path} was written by another version of widthsearch")
    saved = state["settings"] = {**(absent or {}), **state["settings"]}
    # a run folder may have moved since (a GPU lease and back): its recorded files are where it is now
    state.update(rehome_paths({k: v for k, v in state.items() if k != "settings"}, path.parent))
    for key, value in settings.items():
        if key == "data" and same_data_spec(value, saved.get(key)):  # one file, however spelled
            continue
        if key not in mutable and saved.get(key) != value:
            raise UserError(f"--{key.replace('_', '-')} {value} differs from the saved run's {saved.get(key)}; "
                            "resume with the same settings or use a new --out")
    return state
