"""``widthsearch status DIR``: how far a run folder has come, read while its process runs."""
from __future__ import annotations

import argparse

from widthsearch.cli.main import print_json
from widthsearch.runstatus import format_status, run_status


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "status", help="how far a run folder has come: epochs per training, speed, time left, running or stopped",
        description="Read a run folder (of run, adjust, spnet, supernet, train or search) without locking or "
        "writing it: per training its epochs done of planned, the last epoch's held-out accuracy and speed, where "
        "the epoch in progress stands (step, or evaluating; also in a first epoch, before any checkpoint), and "
        "the time left at the recent speed; per search whether it finished; the stage of a Network Adjustment or "
        "SP-Net run (rounds done, bases trained, each seed's arms done, started or to come); whether a process "
        "still writes into the folder. The time left counts the trainings that have started only.")
    parser.add_argument("folder", metavar="DIR", help="the run folder (the --out of the command that wrote it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    status = run_status(args.folder)
    if args.json:
        print_json(status)
    else:
        print(format_status(status))
    return 0
