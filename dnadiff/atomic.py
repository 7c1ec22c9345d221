"""The one atomic file writer: every result, checkpoint and output file of dnadiff goes through
:func:`atomic_write` (a temporary file beside the target, fsync, then ``os.replace``).

Temporary files and folders are named ``.NAME.dnadiff-HOST-PID-XXXXXXXX.tmp`` (:data:`TEMP_PATTERN`, HOST a
short hash of the host name): hidden, with the writing process' id, so that one left behind by a killed
process of this host is recognised as dnadiff's own and removed by the next write to the same name
(:func:`clean_stale_temporaries`), and nothing else ever is (not a user's ``notes.tmp``, not a temporary
of a process on another host sharing the folder).

A full disk, a read-only file system, a missing permission or an exhausted quota (``ENOSPC``, ``EROFS``,
``EACCES``, ``EDQUOT``), raised anywhere in a write (also from inside torch's zip writer or safetensors,
which report them as their own errors), becomes one :class:`dnadiff.errors.UserError` naming the path and
the fix (:func:`disk_error`); the temporary file is removed and the earlier file at ``path`` stays intact.
"""
from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from pathlib import Path

from dnadiff.errors import UserError

#: dnadiff's temporaries: ``.NAME.dnadiff-HOST-PID-RANDOM.tmp`` (groups: NAME, HOST, PID)
TEMP_PATTERN = re.compile(r"^\.(.+)\.dnadiff-([0-9a-f]{8})-(\d+)-[A-Za-z0-9_]+\.tmp$")
#: errno -> (what happened, the fix)
DISK_ERRORS = {
    errno.ENOSPC: ("the disk is full", "free space there or choose another output folder"),
    errno.EDQUOT: ("the disk quota is exhausted", "free space within your quota or choose another output folder"),
    errno.EROFS: ("the file system is read-only", "choose an output folder on a writable file system"),
    errno.EACCES: ("permission denied", "fix the folder's permissions or choose another output folder"),
    errno.EPERM: ("operation not permitted", "fix the folder's permissions or choose another output folder"),
}


def umask() -> int:
    """The process' umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_umask = umask  # the older private name


def disk_error(err: OSError, path: str | os.PathLike) -> Exception:
    """A one-line UserError for an OSError of :data:`DISK_ERRORS` while writing ``path``; ``err`` itself otherwise."""
    if isinstance(err, OSError) and err.errno in DISK_ERRORS:
        what, fix = DISK_ERRORS[err.errno]
        return UserError(f"could not write {path}: {what} ({os.strerror(err.errno)}); {fix} (earlier files are "
                         "left as they were)")
    return err


def _host() -> str:
    import hashlib

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.dnadiff-{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove dnadiff's temporaries (:data:`TEMP_PATTERN`) in ``folder`` (of target ``name`` only, when given)
    whose writing process, on this host, is gone (a kill -9, a power cut). Files and folders of live processes, and every
    file not named by dnadiff's pattern, are left alone. Returns the removed paths."""
    import shutil

    removed, host = [], _host()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_PATTERN.match(entry.name)
        if (not match or (name is not None and match.group(1) != name) or match.group(2) != host
                or _pid_alive(int(match.group(3)))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def make_temp_dir(target: str | os.PathLike) -> Path:
    """A new hidden temporary folder beside ``target`` (named by :data:`TEMP_PATTERN`); disk errors as UserError."""
    target = Path(target)
    try:
        return Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise disk_error(err, target) from None


class _Recording:
    """A binary file wrapper that remembers the OSError its ``write`` raised (torch's zip writer and other
    native writers replace it by their own RuntimeError)."""

    def __init__(self, handle):
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self._handle, name)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(binary_file_object)`` on a temporary file beside ``path``, then rename it into place.

    A crash or error never leaves a half-written ``path``; an existing file survives until the
    new one is complete. The file gets the permissions of an ordinary new file under the user's
    umask (``0o666 & ~umask``), not the private 0600 of temporary files. A full disk, read-only file
    system, missing permission or exhausted quota raises one UserError (see :func:`disk_error`); the
    temporary file is removed either way.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise disk_error(err, path) from None
    handle = None
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as raw:
            handle = _Recording(raw)
            write(handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else (handle.error if handle is not None else None)
        if cause is not None and cause.errno in DISK_ERRORS:
            raise disk_error(cause, path) from None
        raise
    return path
