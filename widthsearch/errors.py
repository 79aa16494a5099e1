"""Errors that the command line turns into one line on stderr and exit code 2."""
from typing import Mapping, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (model name, file, config, data), not a bug.

    The CLI prints ``error: <message>`` and exits with status 2; library callers can
    catch it like any other exception.
    """


class AnalysisError(UserError):
    """A model whose channel structure cannot be analysed; the message names the op."""


class ConfigError(UserError):
    """A channel configuration that does not fit the model's channel space."""


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or a one-line ``UserError`` naming the choices (registries of methods,
    search algorithms, ...)."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown {what} {name!r}; choose one of: {', '.join(table)}") from None
