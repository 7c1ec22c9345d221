"""The one atomic file writer: every result, checkpoint and output file of dnadiff goes through
:func:`atomic_write` (a temporary file beside the target, fsync, then ``os.replace``)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(binary_file_object)`` on a temporary file beside ``path``, then rename it into place.

    A crash or error never leaves a half-written ``path``; an existing file survives until the
    new one is complete. The file gets the permissions of an ordinary new file under the user's
    umask (``0o666 & ~umask``), not the private 0600 of temporary files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
