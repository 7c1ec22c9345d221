"""What a path that is not a regular file is, for one-line messages: "does not exist" only when nothing is
there (a FIFO, a device such as /dev/zero, a folder or a dangling link is named as such), and a check that
an input is a regular file before it is opened (opening a FIFO would block, reading /dev/zero never ends)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from dnadiff.errors import UserError


def kind_of(path: str | os.PathLike) -> str:
    """``"a regular file"``, ``"a folder"``, ``"a FIFO (named pipe)"``, ``"a character device"``,
    ``"a block device"``, ``"a socket"``, ``"a dangling symbolic link"`` or ``"missing"``."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if path.is_symlink() else "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """``path`` when it is a regular file (or a link to one); else a UserError ``"<what> <path> <is ...>: <fix>"``
    that says what is there instead."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "a regular file":
        return path
    found = "does not exist" if kind == "missing" else f"is {kind}, not a file"
    raise UserError(f"{what} {path} {found}: {fix}")
