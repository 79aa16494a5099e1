"""Entry point of the ``widthsearch`` command: one sub-command per module in this package."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from widthsearch.errors import UserError

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func``.
COMMAND_MODULES = ("profile", "space", "export", "latency_table", "supernet", "search", "train", "run", "adjust", "spnet",
                   "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="widthsearch",
        description="Search the number of channels of each layer of a CNN under a budget.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"widthsearch.cli.{name}").register(sub)
    return parser


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the contract of every ``--json`` flag)."""
    print(json.dumps(obj, indent=None, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
