"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""


class UserError(Exception):
    """A problem with the user's input (file, option, data) that the user can fix.

    The message is one line naming the problem and the fix, e.g.
    ``"genome.fa.gz is plain gzip, which cannot be read by random access: recompress it with `bgzip`"``.
    """


class ConfigError(UserError, ValueError):
    """A setting out of its allowed range or an unknown key (the message names the key and what is allowed).
    A UserError for the command line, a ValueError for code that checks values."""
