"""Write the CLI reference (docs/cli.md) from the parsers themselves, so it cannot drift.

    python -m widthsearch.cli.reference > docs/cli.md
"""
from __future__ import annotations

import argparse
import os


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


ENVIRONMENT = [
    "## Environment variables",
    "",
    "| variable | effect |",
    "|---|---|",
    "| `WIDTHSEARCH_CACHE` | where decoded image sets are cached (default `~/.cache/widthsearch`) |",
    "| `WIDTHSEARCH_PROGRESS_SECONDS` | seconds between progress lines when stderr is not a terminal "
    "(default 60 for training; a driver watching short runs may set 5) |",
    "| `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE` | set by `torchrun`; see docs/scale-out.md |",
]


def cli_reference() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal width: fix it
    from widthsearch.cli.main import build_parser

    parser = build_parser()
    parts = [
        "# CLI reference",
        "",
        "Generated from the parsers by `python -m widthsearch.cli.reference > docs/cli.md`",
        "(a test checks that this file is current). Every command prints one JSON object with `--json`;",
        "user errors print one line `error: ...` on stderr and exit with status 2.",
        "",
        "```",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, sub in _subparsers(parser).items():
        parts += ["", f"## widthsearch {name}", "", "```", sub.format_help().rstrip(), "```"]
        for inner_name, inner in _subparsers(sub).items():
            parts += ["", f"### widthsearch {name} {inner_name}", "", "```", inner.format_help().rstrip(), "```"]
    parts += [""] + ENVIRONMENT
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(cli_reference(), end="")
