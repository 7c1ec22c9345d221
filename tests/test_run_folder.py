"""Run folders of `dnadiff pretrain` that refused resumes, concurrent runs and kills cannot damage:
validate before creating, a lock, stale temporary files and superseded checkpoints cleaned, an
appending metrics log."""
from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnadiff.cli import main
from dnadiff.errors import UserError
from dnadiff.checkpoints.format import load_checkpoint
from dnadiff.training.run_folder import LOCK_NAME, RunLock

TINY = ["--config", "demo", "--no-progress", "model.d_model=8", "model.n_layer=1", "data.window=64",
        "data.batch_size=2", "data.max_eval_windows=2", "train.val_every=2", "train.ckpt_every=2",
        "optim.warmup_steps=1", "train.ema_decay=0.9", "train.log_every=1", "optim.total_steps=4"]


@pytest.fixture
def genome(tmp_path) -> str:
    """A toy two-contig genome of random bases (seeded)."""
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (3000, 1500)]
    path = tmp_path / "toy.fa"
    path.write_text("".join(f">c{i}\n{s}\n" for i, s in enumerate(seqs)))
    return str(path)


def pretrain(genome: str, out: Path, steps: int, *extra: str) -> int:
    return main(["pretrain", "--genome", genome, "--out", str(out), "--max-steps", str(steps), *TINY, *extra])


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra, needle", [
    (["data.window=0"], "window"),
    (["data.window=2000000"], "window"),
])
def test_failures_found_by_the_data_leave_no_folder(tmp_path, genome, capsys, extra, needle):
    out = tmp_path / "run"
    err = one_line_error(capsys, pretrain(genome, out, 2, *extra))
    assert needle in err
    assert not out.exists()


def test_all_n_genome_is_refused_before_the_folder_exists(tmp_path, capsys):
    genome = tmp_path / "n.fa"
    genome.write_text(">c1\n" + "N" * 5000 + "\n>c2\n" + "N" * 2000 + "\n")
    out = tmp_path / "run"
    err = one_line_error(capsys, pretrain(str(genome), out, 2))
    assert "N" in err
    assert not out.exists()


@pytest.fixture
def finished_run(tmp_path, genome, capsys):
    out = tmp_path / "run"
    assert pretrain(genome, out, 2) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("extra, needle", [
    (["data.window=32"], "data.window=64"),
    (["model.d_model=16"], "model.d_model=8"),
    (["diffusion.eps=0.01"], "diffusion.eps=0.001"),
])
def test_refused_resume_leaves_the_run_untouched(finished_run, genome, capsys, extra, needle):
    before = snapshot(finished_run)
    assert (finished_run / "logs" / "metrics.csv").is_file()
    err = one_line_error(capsys, pretrain(genome, finished_run, 4, "--resume", "last", *extra))
    assert needle in err and "--out" in err
    assert snapshot(finished_run) == before  # config.yaml not rewritten, metrics.csv not deleted


def metric_rows(out: Path) -> list[dict]:
    with open(out / "logs" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_resume_appends_to_the_metrics_log(finished_run, genome, capsys):
    before = metric_rows(finished_run)
    old_steps = sorted({int(r["step"]) for r in before})
    assert old_steps and max(old_steps) < 2
    assert pretrain(genome, finished_run, 4, "--resume") == 0
    after = metric_rows(finished_run)
    steps = sorted({int(r["step"]) for r in after})
    assert set(old_steps) <= set(steps) and max(steps) >= 2
    kept = [{k: r[k] for k in before[0]} for r in after[: len(before)]]
    assert kept == before  # the rows written before the resume come first, unchanged


def test_resume_cleans_temporary_files_and_superseded_checkpoints(finished_run, genome, capsys):
    from dnadiff.atomic import _host

    ckpts = finished_run / "checkpoints"
    dead = 2**22 + 4242  # above the default pid_max: a killed process
    # what kills leave behind: half-written files and step checkpoints newer than last.ckpt
    (ckpts / f".step4.ckpt.dnadiff-{_host()}-{dead}-k1ll3d.tmp").write_bytes(b"half")
    (finished_run / f".config.yaml.dnadiff-{_host()}-{dead}-x1.tmp").write_bytes(b"half")
    shutil.copy(ckpts / "last.ckpt", ckpts / "step4.ckpt")
    shutil.copy(ckpts / "last.ckpt", ckpts / "step2-v1.ckpt")
    # and what the user keeps in the folder (issue 27: --resume deleted these)
    shutil.copy(ckpts / "last.ckpt", ckpts / "keep_me.ckpt")
    (finished_run / "mydata").mkdir()
    (finished_run / "mydata" / "experiment_notes.tmp").write_text("mine")
    (finished_run / ".notes.tmp").write_text("mine too")
    live = ckpts / f".other.ckpt.dnadiff-{_host()}-{os.getpid()}-live.tmp"  # a live writer's: left alone
    live.write_bytes(b"busy")
    assert pretrain(genome, finished_run, 4, "--resume") == 0
    assert sorted(p.name for p in finished_run.rglob("*.tmp")) == sorted([".notes.tmp", "experiment_notes.tmp", live.name])
    assert sorted(p.name for p in ckpts.iterdir() if p.suffix == ".ckpt") == ["keep_me.ckpt", "last.ckpt", "step4.ckpt"]
    assert load_checkpoint(ckpts / "step4.ckpt")["global_step"] == 4
    assert load_checkpoint(ckpts / "last.ckpt")["global_step"] == 4
    assert (finished_run / "mydata" / "experiment_notes.tmp").read_text() == "mine"


def test_a_new_run_into_a_finished_run_is_refused_unless_forced(finished_run, genome, capsys):
    before = snapshot(finished_run)
    err = one_line_error(capsys, pretrain(genome, finished_run, 2))
    assert "--resume" in err and "--force" in err
    assert snapshot(finished_run) == before
    assert pretrain(genome, finished_run, 2, "--force") == 0
    assert load_checkpoint(finished_run / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, genome, capsys):
    out = tmp_path / "run"
    holder = RunLock(out).acquire()  # a live run holds it (flock)
    err = one_line_error(capsys, pretrain(genome, out, 2))
    assert f"process {os.getpid()}" in err and "--out" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    holder.release()


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, genome, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{dead.pid} {socket.gethostname()}\n")
    assert pretrain(genome, out, 2) == 0
    assert not (out / LOCK_NAME).exists()  # released at the end
    assert (out / "model.pt").is_file()


def test_a_lock_dies_with_its_holder_process(tmp_path):
    """The kernel drops the flock of a killed holder: no pid or host rule decides staleness."""
    out = tmp_path / "run"
    code = f"from dnadiff.training.run_folder import RunLock; RunLock({str(out)!r}).acquire(); print('held', flush=True); " \
           "import time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert RunLock(out).held_elsewhere()
        with pytest.raises(UserError, match=f"in use by process {child.pid} on"):
            RunLock(out).acquire()
    finally:
        child.kill()
        child.wait()
    assert (out / LOCK_NAME).exists() and not RunLock(out).held_elsewhere()  # the file is left, the lock is gone
    with RunLock(out) as lock:
        assert (out / LOCK_NAME).read_text() == lock.token


def test_run_lock_is_exclusive_and_released(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / LOCK_NAME).read_text().split() == [str(os.getpid()), socket.gethostname()]
    with pytest.raises(UserError, match="in use by process"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with RunLock(tmp_path / "run"):
        pass
