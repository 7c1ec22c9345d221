"""Full disks and read-only file systems (issue 27): ENOSPC, EROFS, EACCES and EDQUOT, wherever a write meets
them (also inside torch's zip writer and in the export's safetensors file), become one line naming the path
and the fix; the temporary file is removed and every earlier file stays as it was. On a real small tmpfs
(the suite runs as root; skipped where mounting is not permitted) and by injecting the error at the writer."""
from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import dnadiff.atomic as atomic
from dnadiff.atomic import atomic_write
from dnadiff.errors import UserError
from dnadiff.checkpoints.format import load_checkpoint, save_checkpoint

DISK_ERRNOS = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT]
WHAT = {errno.ENOSPC: "disk is full", errno.EROFS: "read-only", errno.EACCES: "permission denied",
        errno.EDQUOT: "quota"}


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mounted 192 KiB tmpfs (unmounted afterwards); skips where mount is not permitted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True, capture_output=True)


def _one_line(err: UserError, path, what: str) -> str:
    message = str(err)
    assert "\n" not in message and str(path) in message and what in message, message
    assert "choose" in message or "free space" in message, message  # the fix
    return message


def test_a_checkpoint_on_a_full_tmpfs_is_one_line_and_the_old_one_survives(small_tmpfs):
    path = small_tmpfs / "last.ckpt"
    save_checkpoint(path, {"w": torch.arange(100.0)})
    with pytest.raises(UserError) as err:
        save_checkpoint(path, {"w": torch.zeros(200_000)})  # 800 KB: does not fit
    _one_line(err.value, path, "disk is full")
    assert [p.name for p in small_tmpfs.iterdir()] == ["last.ckpt"]  # no temporary left
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(100.0))


def test_an_export_to_a_full_or_read_only_tmpfs_is_one_line_and_leaves_nothing(small_tmpfs, shared_fixtures, tmp_path):
    from dnadiff.checkpoints.export import export as export_hf
    from hf_cache import original_files, reference

    config, state, _ = reference(shared_fixtures, "ph")
    big = {**config, "d_model": 128}  # about 0.9 MB of weights: does not fit in 192 KiB
    from dnadiff.checkpoints.huggingface import OriginalCaduceusMLM, backbone_from_config, original_state_dict

    folder = tmp_path / "orig"
    folder.mkdir()
    for name, data in original_files(big, original_state_dict(OriginalCaduceusMLM(backbone_from_config(big))),
                                     "safetensors", tmp_path).items():
        (folder / name).write_bytes(data)
    with pytest.raises(UserError) as err:
        export_hf(folder, small_tmpfs / "hf")
    _one_line(err.value, small_tmpfs, "disk is full")
    assert list(small_tmpfs.iterdir()) == []
    _remount(small_tmpfs, "ro")
    with pytest.raises(UserError) as err:
        export_hf(folder, small_tmpfs / "hf")
    _one_line(err.value, small_tmpfs / "hf", "read-only")
    with pytest.raises(UserError) as err:
        save_checkpoint(small_tmpfs / "model.pt", {"w": torch.zeros(3)})
    _one_line(err.value, small_tmpfs / "model.pt", "read-only")


def test_fold_files_and_results_on_a_read_only_tmpfs(small_tmpfs):
    from dnadiff.finetuning.report import write_fold

    _remount(small_tmpfs, "ro")
    with pytest.raises(UserError) as err:
        write_fold(small_tmpfs, {"num_folds": 1}, {}, {"fold": 0})
    _one_line(err.value, small_tmpfs / "fold_0.json", "read-only")


class _FailingFile:
    """A binary file that takes ``budget`` bytes, then fails every write with ``code`` (like a disk filling up)."""

    def __init__(self, handle, code: int, budget: int):
        self.handle, self.code, self.budget = handle, code, budget

    def write(self, data):
        if len(data) > self.budget:
            raise OSError(self.code, os.strerror(self.code))
        self.budget -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("code", DISK_ERRNOS, ids=[errno.errorcode[c] for c in DISK_ERRNOS])
@pytest.mark.parametrize("writer", ["torch.save", "safetensors", "text"])
def test_every_disk_errno_inside_every_writer_is_one_line(tmp_path, monkeypatch, code, writer):
    """Injected at the writer's file: torch's zip writer and safetensors report the OSError as their own error."""
    from safetensors.torch import save

    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode), code, 1000))
    path = tmp_path / "out.bin"
    path.write_bytes(b"earlier")
    payload = {"w": torch.zeros(10_000)}
    write = {"torch.save": lambda f: torch.save(payload, f),
             "safetensors": lambda f: f.write(save(payload)),
             "text": lambda f: f.write(b"x" * 5000)}[writer]
    with pytest.raises(UserError) as err:
        atomic_write(path, write)
    _one_line(err.value, path, WHAT[code])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"] and path.read_bytes() == b"earlier"


@pytest.mark.parametrize("code", DISK_ERRNOS, ids=[errno.errorcode[c] for c in DISK_ERRNOS])
def test_a_folder_that_cannot_take_a_new_file_is_one_line(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as err:
        atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}"))
    _one_line(err.value, tmp_path / "x.json", WHAT[code])


def test_other_errors_are_not_disguised(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode), errno.EIO, 10))
    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "x", lambda f: f.write(b"y" * 100))
    assert err.value.errno == errno.EIO and not isinstance(err.value, UserError)
    monkeypatch.undo()
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "x", lambda f: 1 / 0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_pretrain_on_a_full_disk_stops_in_one_line_and_resumes_from_the_last_good_checkpoint(small_tmpfs, tmp_path, capsys):
    """A TINY run's checkpoint is about 70 KB: step 2's (step2.ckpt + last.ckpt) fit in 192 KiB, step 4's do not."""
    import numpy as np

    from dnadiff.cli import main
    from test_run_folder import TINY

    rng = np.random.default_rng(0)
    genome = tmp_path / "toy.fa"
    genome.write_text("".join(f">c{i}\n" + "".join(rng.choice(list("ACGT"), size=n)) + "\n" for i, n in enumerate((3000, 1500))))
    out = small_tmpfs / "run"
    argv = ["pretrain", "--genome", str(genome), "--out", str(out), "--max-steps", "4", *TINY]
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    # the run's own cost estimate may precede it (printed before training); the error is one line
    err = "\n".join(line for line in lines if not line.startswith("estimate: "))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "disk is full" in err and str(out) in err
    ckpts = out / "checkpoints"
    assert not [p for p in out.rglob("*") if atomic.TEMP_PATTERN.match(p.name)]
    assert load_checkpoint(ckpts / "last.ckpt")["global_step"] == 2  # the last good checkpoint
    _remount(small_tmpfs, "size=4m")  # the user frees space
    assert main(argv + ["--resume"]) == 0
    assert load_checkpoint(ckpts / "last.ckpt")["global_step"] == 4
    assert json.loads((out / "summary.json").read_text())


def test_the_writer_removes_only_its_own_dead_temporaries(tmp_path):
    """After a kill -9, ``.NAME.dnadiff-HOST-PID-*.tmp`` stays behind; the next write to NAME removes it when its
    process (on this host) is gone, and nothing else: not a live writer's, another host's, another name's,
    nor a user's file that merely ends in .tmp."""
    from dnadiff.atomic import TEMP_PATTERN, _host

    dead = 2**22 + 999  # above the default pid_max
    files = {
        "dead": f".out.fa.dnadiff-{_host()}-{dead}-abc123.tmp",
        "live": f".out.fa.dnadiff-{_host()}-{os.getpid()}-abc123.tmp",
        "other host": f".out.fa.dnadiff-{'0' * 8 if _host() != '0' * 8 else '1' * 8}-{dead}-abc123.tmp",
        "other name": f".other.fa.dnadiff-{_host()}-{dead}-abc123.tmp",
        "user": ".out.fa.notes.tmp",
        "old style": ".out.fa.x7k2m9qz.tmp",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"half")
    atomic_write(tmp_path / "out.fa", lambda f: f.write(b">s\nACGT\n"))
    left = {p.name for p in tmp_path.iterdir()}
    assert files["dead"] not in left
    assert left == {"out.fa"} | {v for k, v in files.items() if k != "dead"}
    assert [bool(TEMP_PATTERN.match(v)) for v in files.values()] == [True, True, True, True, False, False]
