"""A pretraining run folder (``--out``) that concurrent runs, kills and refused resumes cannot damage.

- :class:`RunLock`: ``OUT/.lock`` holds ``pid host`` of the run using the folder, created with
  ``O_CREAT | O_EXCL`` (exactly one process wins). A second run is refused in one line; a lock
  left by a killed process (same host, pid no longer alive) is detected and taken over.
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
import time
from pathlib import Path

from dnadiff.errors import UserError

LOCK_NAME = ".lock"
#: a lock file still empty after this many seconds belongs to a process killed while writing it
EMPTY_LOCK_GRACE_S = 30.0


def holds_run(out: Path) -> bool:
    """True when ``out`` holds a previous pretraining run (its config or a checkpoint)."""
    return (out / "config.yaml").exists() or any((out / "checkpoints").glob("*.ckpt"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """Exclusive use of a run folder by one process (see the module docstring).

    Use as a context manager, or :meth:`acquire` / :meth:`release`. Creates ``out`` (and its parents).
    """

    def __init__(self, out: str | os.PathLike, name: str = LOCK_NAME):
        self.out = Path(out)
        self.path = self.out / name
        self.token = f"{os.getpid()} {socket.gethostname()}\n"
        self.held = False

    def _stale_reason(self) -> str | None:
        """Why the existing lock may be taken over (None: it belongs to a live run)."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        fields = text.split()
        if len(fields) != 2 or not fields[0].isdigit():
            return "unreadable" if age > EMPTY_LOCK_GRACE_S else None
        pid, host = int(fields[0]), fields[1]
        if host == socket.gethostname() and not _pid_alive(pid):
            return f"process {pid} is gone"
        return None

    def holder(self) -> str:
        """``process PID on HOST`` of the lock's holder."""
        return self._describe()

    def _describe(self) -> str:
        try:
            pid, host = self.path.read_text().split()
            return f"process {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    def acquire(self) -> "RunLock":
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the run folder {self.out} ({err.strerror}): choose another --out") from None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self._stale_reason() is None:
                    raise UserError(f"{self.out} is in use by {self._describe()} (lock {self.path}): wait for that run "
                                    f"to end or choose another --out; if no run is active there, delete the lock") from None
                self.path.unlink(missing_ok=True)  # a killed run's lock: take it over
                continue
            except OSError as err:
                raise UserError(f"cannot write in the run folder {self.out} ({err.strerror}): choose another --out") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(self.token)
            self.held = True
            return self
        raise UserError(f"{self.out} is in use by {self._describe()}: wait for that run to end or choose another --out")

    def held_elsewhere(self) -> bool:
        """True when another live process holds this lock (without taking it)."""
        return self.path.exists() and not self.held and self._stale_reason() is None

    def release(self) -> None:
        if self.held:
            try:
                if self.path.read_text() == self.token:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

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
    from dnadiff.atomic import TEMP_PATTERN, clean_stale_temporaries

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
    from dnadiff.checkpoints.format import atomic_write

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
