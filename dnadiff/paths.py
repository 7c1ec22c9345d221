"""Inputs and outputs that are paths: what a path that is not a regular file is, for one-line messages ("does not
exist" only when nothing is there: a FIFO, a device such as /dev/zero, a folder or a dangling link is named as
such), a check that an input is a regular file before it is opened (opening a FIFO would block, reading
/dev/zero never ends), and the one check that an output file can be written (:func:`check_writable`)."""
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


def check_writable(path: str | Path, overwrite: bool = True) -> Path:
    """Fail early, before any work, when ``path`` cannot be written as a file.

    Raises:
        UserError: the folder is missing or not writable, the path is a folder, or (``overwrite=False``)
            the file exists.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"output {path} is a folder: give a file name such as {path / 'samples.fa'}")
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist: create it or choose another --out")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = f"a symbolic link to {os.readlink(path)}" if path.is_symlink() else kind_of(path)
        raise UserError(f"output {path} is {what}, not a regular file: dnadiff replaces only regular files "
                        "(even with --force); give the path of a regular file")
    if not overwrite and path.exists():
        raise UserError(f"output {path} already exists: add --force to replace it or choose another --out")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"output {path} is not writable: choose another --out")
    return path


#: the first two bytes of every gzip (and so every bgzip) stream
GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with gzip's magic bytes (the one test: never the name's suffix)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_text(path: str | os.PathLike, *, newline: str | None = None, encoding: str = "utf-8-sig"):
    """Open a text file for reading, gzip-compressed or not (:func:`is_gzip`); ``utf-8-sig`` drops a
    byte-order mark (spreadsheet exports). ``newline=""`` for the csv module."""
    if is_gzip(path):
        import gzip

        return gzip.open(path, "rt", newline=newline, encoding=encoding)
    return open(path, newline=newline, encoding=encoding)
