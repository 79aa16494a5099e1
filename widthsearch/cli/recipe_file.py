"""``--recipe FILE``: a published setting as YAML, one section per command; flags override it.

A recipe file maps command names to their settings, keyed like the command's flags without the
dashes (``batch_size`` for ``--batch-size``; a switch such as ``--stream`` by its stored value,
``loading: stream``)::

    supernet:
      model: mobilenet_v2
      width_mult: 1.5
      epochs: 50
    search:
      target: [flops=500M, flops=300M, flops=200M]

``widthsearch supernet --recipe FILE --data imagefolder:DIR --out runs/sn`` takes the
``supernet`` section as its defaults; every flag given on the command line wins (a repeated
flag such as ``--target`` replaces the recipe's list). An unknown key, a value outside a flag's
choices or a file without a section for the command is a one-line error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from widthsearch.errors import UserError
from widthsearch.io import read_yaml

__all__ = ["RECIPE_HELP", "apply_recipe", "read_recipe", "recipe_path"]

RECIPE_HELP = "YAML of a published setting (see recipes/); flags given here override it"

#: flags a recipe may not set: where the run goes and how it reports belong to the command line
_NOT_IN_RECIPES = frozenset({"help", "out", "resume", "json", "recipe", "func", "command", "stop_after"})


def recipe_path(argv: Sequence[str]) -> str | None:
    """The value of ``--recipe`` in ``argv`` (``--recipe F`` or ``--recipe=F``), if any."""
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recipe="):
            return arg.split("=", 1)[1]
    return None


def read_recipe(path: str | Path, command: str) -> dict[str, Any]:
    """The ``command`` section of the recipe file at ``path``."""
    path = Path(path)
    doc = read_yaml(path, "recipe", shape="a mapping of command names (supernet, search, train, ...) to settings")
    if command not in doc:
        raise UserError(f"recipe {path} has no '{command}' section (it has: {', '.join(map(str, doc))})")
    section = doc[command] or {}
    if not isinstance(section, dict):
        raise UserError(f"recipe {path}: the '{command}' section must map settings to values")
    return section


def apply_recipe(parser: argparse.ArgumentParser, command: str, argv: Sequence[str]) -> dict[str, list]:
    """Make the recipe named in ``argv`` the defaults of ``parser`` (the command's sub-parser).

    Returns the list-valued defaults of repeatable flags, so that :func:`drop_recipe_lists` can
    let command-line repetitions replace them rather than add to them."""
    path = recipe_path(argv)
    if path is None:
        return {}
    section = read_recipe(path, command)
    actions: dict[str, argparse.Action] = {}
    consts: dict[str, set] = {}
    for a in parser._actions:
        if a.dest in _NOT_IN_RECIPES:
            continue
        actions.setdefault(a.dest, a)
        if a.nargs == 0 and a.const is not None:
            consts.setdefault(a.dest, set()).add(a.const)  # --stream and --in-memory share one setting
    unknown = sorted(set(section) - set(actions))
    if unknown:
        raise UserError(f"recipe {path}: '{command}' takes no setting(s) {', '.join(unknown)}")
    defaults: dict[str, Any] = {}
    appended: dict[str, list] = {}
    for key, value in section.items():
        action = actions[key]
        value = _checked(path, key, action, value)
        if key in consts and value not in consts[key] and not isinstance(value, bool):
            raise UserError(f"recipe {path}: {key} must be one of {', '.join(map(str, sorted(consts[key], key=str)))}")
        if isinstance(action, argparse._AppendAction):
            value = [value] if not isinstance(value, list) else list(value)
            appended[key] = list(value)
        defaults[key] = value
    parser.set_defaults(**defaults)
    return appended


def drop_recipe_lists(args: argparse.Namespace, appended: dict[str, list]) -> None:
    """A repeatable flag given on the command line replaces the recipe's list (flags override)."""
    for key, recipe_list in appended.items():
        value = getattr(args, key)
        if isinstance(value, list) and len(value) > len(recipe_list) and value[: len(recipe_list)] == recipe_list:
            setattr(args, key, value[len(recipe_list):])


def _checked(path: str, key: str, action: argparse.Action, value: Any) -> Any:
    """``value`` converted by the flag's type and checked against its choices."""
    flag = action.option_strings[0] if action.option_strings else key
    if action.type is not None and value is not None:
        convert = action.type
        try:
            if isinstance(value, list):
                value = [convert(str(v)) if not isinstance(v, (int, float)) or convert is str else convert(v)
                         for v in value]
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or convert is str:
                value = convert(str(value))
            else:
                value = convert(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise UserError(f"recipe {path}: {key} ({flag}) cannot be {value!r}") from None
    if action.choices is not None:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v not in action.choices]
        if bad:
            raise UserError(f"recipe {path}: {key} ({flag}) must be one of {', '.join(map(str, action.choices))}, "
                            f"not {bad[0]!r}")
    return value
