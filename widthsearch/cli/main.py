"""Entry point of the ``widthsearch`` command: one sub-command per module in this package."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Sequence

from widthsearch.cli.outfolder import guarded_out
from widthsearch.cli.recipe_file import RECIPE_HELP, apply_recipe, drop_recipe_lists
from widthsearch.errors import UserError

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func``.
COMMAND_MODULES = ("profile", "space", "export", "latency_table", "supernet", "search", "train", "run", "adjust", "spnet",
                   "bench", "status")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="widthsearch",
        description="Search the number of channels of each layer of a CNN under a budget.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"widthsearch.cli.{name}").register(sub)
    for _name, command in _leaf_commands(parser):
        command.add_argument("--recipe", default=None, metavar="FILE", help=RECIPE_HELP)
    return parser


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """``(name, parser)`` of every command that runs (``bench cbm``, not ``bench``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaf_commands(child, f"{prefix} {name}".strip())


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the contract of every ``--json`` flag)."""
    print(json.dumps(obj, indent=None, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        appended = _recipe_defaults(parser, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    drop_recipe_lists(args, appended)
    try:
        refuse_under_torchrun(args.command)  # before --out is locked or anything is read
        with guarded_out(args):  # --out checked and locked before any work
            result = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


#: the commands that run as one data-parallel job under torchrun (every process trains its shard)
TORCHRUN_COMMANDS = ("supernet", "train")

#: what to do instead, for the commands people are most likely to launch under torchrun
_TORCHRUN_INSTEAD = {
    "run": "run its steps one by one (`supernet` and `train` under torchrun, `search` in one process)",
    "adjust": "run it in one process (one GPU); Network Adjustment's rounds are not data-parallel",
    "spnet": "run it in one process, or its joint fine-tune alone under torchrun as "
             "`train --channels OUT/configs/*.yaml --init-from OUT/sorted.pt`",
}


def refuse_under_torchrun(command: str) -> None:
    """A one-line ``UserError`` when a command that runs in one process is started by torchrun
    (``WORLD_SIZE`` > 1): every process would do all the work and write the same files."""
    world = os.environ.get("WORLD_SIZE", "1")
    if command in TORCHRUN_COMMANDS or not world.isdigit() or int(world) <= 1:
        return
    instead = _TORCHRUN_INSTEAD.get(command, "run it without torchrun")
    raise UserError(f"`widthsearch {command}` does not run under torchrun ({world} processes): {instead}; "
                    f"only {' and '.join(TORCHRUN_COMMANDS)} do")


def _recipe_defaults(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, list]:
    """``--recipe FILE``: the file's section for the command becomes the sub-parser's defaults."""
    words = [arg for arg in argv if not arg.startswith("-")]
    for name, command in _leaf_commands(parser):
        # a leaf named by the first words of the command line ("supernet", "bench cbm")
        if name.split() == words[: len(name.split())]:
            return apply_recipe(command, name, argv)
    return {}  # argparse reports the missing or unknown command


if __name__ == "__main__":
    sys.exit(main())
