"""A pretraining run folder (``--out``) that concurrent runs, kills and refused resumes cannot damage.

- :class:`RunLock`: ``OUT/.lock``, ``flock``-ed by the run using the folder and holding its ``pid host``. A
  second run is refused in one line; the kernel releases the lock of a killed run, so it is taken over.
- :func:`clean_start`: removes the temporary files of dnadiff's atomic writer a kill leaves behind and
  the step checkpoints the resumed run no longer knows (written after the checkpoint it resumes from), so
  superseded checkpoints never pile up; only files named by dnadiff's own patterns, never a user's.
- :class:`AppendingCSVLogger`: Lightning's CSV logger, except that a resumed run appends to
  ``logs/metrics.csv`` (rows past the resumed step are dropped) instead of deleting it.

The folder itself is created only by :meth:`RunLock.acquire`, after every input was validated.
"""
from __future__ import annotations

import csv
import io
import os
import re
import socket
from pathlib import Path

from dnadiff.errors import UserError
from dnadiff.atomic import TEMP_PATTERN, atomic_write, clean_stale_temporaries

LOCK_NAME = ".lock"


def holds_run(out: Path) -> bool:
    """True when ``out`` holds a previous pretraining run (its config or a checkpoint)."""
    return (out / "config.yaml").exists() or any((out / "checkpoints").glob("*.ckpt"))


def _try_lock(fd: int) -> bool:
    """An exclusive, non-blocking lock on the open file ``fd``, released by the kernel when the holder closes it
    or dies (``flock`` on POSIX, ``msvcrt.locking`` on Windows): True when taken, False when another holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunLock:
    """Exclusive use of a run folder by one process (see the module docstring).

    ``OUT/.lock`` is locked with ``flock`` while the run lasts and holds ``pid host`` of its holder (for the
    refusal line). The kernel drops the lock when the holder ends, killed or not, so no staleness rule is
    needed: a lock file nobody holds is simply taken. Use as a context manager, or :meth:`acquire` /
    :meth:`release`. Creates ``out`` (and its parents).
    """

    def __init__(self, out: str | os.PathLike, name: str = LOCK_NAME):
        self.out = Path(out)
        self.path = self.out / name
        self.token = f"{os.getpid()} {socket.gethostname()}\n"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """``process PID on HOST`` of the lock's holder (as its file says)."""
        try:
            pid, host = self.path.read_text().split()
            return f"process {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    def refusal(self) -> UserError:
        """The one-line refusal of a run into this folder while the lock is held elsewhere."""
        return UserError(f"{self.out} is in use by {self.holder()} (lock {self.path}): wait for that run "
                         "to end or choose another --out")

    def acquire(self) -> "RunLock":
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the run folder {self.out} ({err.strerror}): choose another --out") from None
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
            except OSError as err:
                raise UserError(f"cannot write in the run folder {self.out} ({err.strerror}): choose another --out") from None
            if not _try_lock(fd):
                os.close(fd)
                raise self.refusal()
            try:  # a holder that released (and unlinked) between our open and our lock: lock the new file
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, self.token.encode())
        self._fd = fd
        return self

    def held_elsewhere(self) -> bool:
        """True when another process (or another RunLock of this one) holds this lock; takes nothing."""
        if self.held:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            return not _try_lock(fd)
        finally:
            os.close(fd)  # closing drops a lock the probe took

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink()  # while still locked: a waiting acquirer sees the inode change and retries
            except FileNotFoundError:
                pass
            except PermissionError:  # pragma: no cover - Windows removes no open file: close first
                os.close(self._fd)
                self._fd = None
                self.path.unlink(missing_ok=True)
                return
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: the checkpoints dnadiff's pretraining writes into ``OUT/checkpoints`` (Lightning's ``ModelCheckpoint`` with
#: ``filename="step{step}"`` and ``save_last``; ``-vN`` when a name repeats): the only ``*.ckpt`` it ever removes
CHECKPOINT_NAME = re.compile(r"^(last|step\d+)(-v\d+)?\.ckpt$")


def own_temporaries(out: Path) -> list[Path]:
    """The temporary files and folders of dnadiff's atomic writer (:data:`dnadiff.atomic.TEMP_PATTERN`) anywhere
    under ``out`` whose writing process (on this host) is gone. A user's ``notes.tmp`` is not among them."""

    found = []
    for folder, dirs, files in os.walk(out):
        if any(TEMP_PATTERN.match(name) for name in files + dirs):
            found += clean_stale_temporaries(folder)
        dirs[:] = [d for d in dirs if not TEMP_PATTERN.match(d)]
    return found


def clean_start(out: Path, resume: Path | None, fresh: bool) -> list[Path]:
    """Tidy a run folder held under :class:`RunLock` before training starts.

    Removes only what dnadiff itself wrote: the temporaries of its atomic writer left by a killed process
    (:func:`own_temporaries`, by their naming pattern); when resuming, the step checkpoints other than the
    resumed one (the resumed run writes its own); when starting afresh (``fresh``, i.e. ``--force`` over an old
    run), the old checkpoints and metrics log. Checkpoints are dnadiff's by their names (:data:`CHECKPOINT_NAME`):
    a user's ``checkpoints/keep_me.ckpt`` or ``mydata/notes.tmp`` is never touched. Returns the removed paths.
    """
    removed = own_temporaries(out)
    ckpts = out / "checkpoints"
    ours = [p for p in ckpts.glob("*.ckpt") if CHECKPOINT_NAME.match(p.name) and p.is_file()]
    stale: list[Path] = []
    if resume is not None:
        keep = {resume.resolve(), (ckpts / "last.ckpt").resolve()}
        stale = [p for p in ours if p.resolve() not in keep]
    elif fresh:
        stale = ours + [p for p in [out / "logs" / "metrics.csv"] if p.exists()]
    for path in stale:
        path.unlink(missing_ok=True)
    return removed + stale


def trim_metrics(path: Path, before_step: int) -> None:
    """Keep the rows of a CSV metrics log with ``step < before_step`` (rows a killed run wrote past the
    checkpoint being resumed would otherwise appear twice); atomic."""

    if not path.is_file():
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if not r.get("step", "").isdigit() or int(r["step"]) < before_step]
    if len(kept) == len(rows):
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(kept)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def appending_csv_logger(out: Path):
    """Lightning CSV logger writing ``out/logs/metrics.csv``, appending to an existing log."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from lightning.pytorch.loggers.logger import rank_zero_experiment

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # Lightning deletes the old log here; keep it
            if os.path.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as handle:
                    self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])

    class AppendingCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                os.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(out, name="logs", version="")
