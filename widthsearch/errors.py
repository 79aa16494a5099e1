"""Errors that the command line turns into one line on stderr and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (model name, file, config, data), not a bug.

    The CLI prints ``error: <message>`` and exits with status 2; library callers can
    catch it like any other exception.
    """


class AnalysisError(UserError):
    """A model whose channel structure cannot be analysed; the message names the op."""


class ConfigError(UserError):
    """A channel configuration that does not fit the model's channel space."""
