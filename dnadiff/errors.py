"""Errors a user can fix: the library raises them, the CLI prints them as one line and exits with code 2."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, option, data) that the user can fix.

    The message is one line naming the problem and the fix, e.g.
    ``"genome.fa.gz is plain gzip, which cannot be read by random access: recompress it with `bgzip`"``.
    """


class ParameterError(UserError, ValueError):
    """A bad argument of a library call. ``parameter`` is its name (``batch_size``); the message starts with
    ``parameter=value`` (``"batch_size=0 is not allowed: use an integer in [1, 65536]"``), which the CLI
    shows as its option (``--batch-size 0 ...``)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


class ConfigError(UserError, ValueError):
    """A setting out of its allowed range or an unknown key (the message names the key and what is allowed).
    A UserError for the command line, a ValueError for code that checks values."""



class LeakageWarning(UserWarning):
    """The data lets the evaluation see what training saw: a table repeats examples, a test split shares examples or
    genome intervals with the train split. Scores measured on such data overstate what the model learned."""
