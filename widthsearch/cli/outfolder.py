"""What every command that writes a run folder (``--out DIR`` with ``--resume``) gets before it
starts: ``--out`` checked, ``--resume`` refused when there is nothing to resume, the folder locked
against a second process, and the temporary files of a killed run removed on resume."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator

from widthsearch.errors import UserError
from widthsearch.runfolder import RunLock, check_folder, folder_has_content, remove_stale_temps


def writes_run_folder(args: argparse.Namespace) -> bool:
    """Commands with ``--out`` and ``--resume`` write a resumable run folder (export's --out is a file,
    and a command whose ``--out`` is a resumable file says so with ``out_is_file``)."""
    return (isinstance(getattr(args, "out", None), str) and hasattr(args, "resume")
            and not getattr(args, "out_is_file", False))


def _is_main_process() -> bool:
    # under torchrun every rank runs the command; rank 0 alone writes, so it alone locks
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def guarded_out(args: argparse.Namespace) -> Iterator[None]:
    """The body runs with ``args.out`` checked and (on rank 0) locked; a no-op for other commands."""
    if not writes_run_folder(args):
        yield
        return
    out = check_folder(args.out)
    if args.resume and not folder_has_content(out):
        what = "does not exist" if not out.exists() else "is empty"
        raise UserError(f"--resume: {out} {what}, there is no run to continue; leave out --resume to start one")
    if not _is_main_process():
        yield
        return
    with RunLock(out):
        if args.resume:
            removed = remove_stale_temps(out)
            if removed:
                print(f"note: removed {len(removed)} temporary file(s) a killed run left in {out}", file=sys.stderr)
        yield
