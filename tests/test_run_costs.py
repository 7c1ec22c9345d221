"""Long pretraining jobs say what they will cost before they start: a few real steps timed on the device, the
whole run's estimate printed, an absurd CPU run refused (naming a smaller config) unless forced, nothing
written when refused; a warm-up longer than the run is warned about; provenance.json in the run folder."""
from __future__ import annotations

import json

import pytest

from dnadiff.data.info import DataInfo
from dnadiff.cli import main
from dnadiff.training import estimate as est
from dnadiff.training.estimate import estimate_run, warmup_warning

TINY = ["model.d_model=16", "model.n_layer=1", "data.window=64", "data.batch_size=2", "data.max_eval_windows=2",
        "train.val_every=2", "train.ckpt_every=2", "optim.warmup_steps=1", "train.ema_decay=0.9"]


def test_estimate_is_steps_times_step_time_and_refuses_only_long_cpu_runs():
    cfg = {"data": {"window": 1024, "batch_size": 32}, "train": {"max_steps": 50_000}, "optim": {"warmup_steps": 1000}}
    cpu = {"accelerator": "cpu"}
    e = estimate_run(cfg, None, cpu, start_step=0, force=True, seconds_per_step=10.0)
    assert e["steps"] == 50_000 and e["seconds"] == 500_000.0 and "5.8 days" in e["line"]
    with pytest.raises(Exception, match="--config demo.*--force"):
        estimate_run(cfg, None, cpu, seconds_per_step=10.0)  # 5.8 days on a CPU
    assert estimate_run(cfg, None, cpu, start_step=49_000, seconds_per_step=10.0)["seconds"] == 10_000.0  # resumed
    assert estimate_run(cfg, None, cpu, seconds_per_step=0.8)["seconds"] == pytest.approx(40_000.0)  # 11.1 h: allowed


def test_warmup_longer_than_the_run_is_warned():
    cfg = {"train": {"max_steps": 20}, "optim": {"warmup_steps": 1000}}
    assert "2% of its peak" in warmup_warning(cfg) and "optim.warmup_steps=2" in warmup_warning(cfg)
    assert warmup_warning({"train": {"max_steps": 2000}, "optim": {"warmup_steps": 1000}}) is None


def test_time_steps_times_the_real_model(shared_data):
    import torch

    from dnadiff.training.pretrain import build_module, resolve_config

    cfg = resolve_config("demo", TINY, genome=shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")
    module = build_module(cfg, DataInfo(window=64))
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    seconds = est.time_steps(module, 2, 64, torch.device("cpu"))
    assert 0 < seconds < 30
    assert all(torch.equal(before[k], v) for k, v in module.model.state_dict().items())  # the run's weights untouched


@pytest.mark.slow
def test_pretrain_refuses_a_long_cpu_run_unless_forced(shared_data, tmp_path, capsys, monkeypatch):
    genome = str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")
    out = tmp_path / "run"
    monkeypatch.setattr(est, "MAX_CPU_SECONDS", 1e-6)  # any real run is "too long" now
    argv = ["pretrain", "--no-progress", "--config", "demo", "--genome", genome, "--out", str(out), "--max-steps", "2",
            "--accelerator", "cpu", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "this run needs about" in err and "--config demo" in err and "--force" in err and "Traceback" not in err
    assert not out.exists()  # refused before the run folder is created
    assert main([*argv[:-len(TINY)], "--force", *TINY[:-2], "optim.warmup_steps=5", TINY[-1]]) == 0
    captured = capsys.readouterr()
    assert "estimate: 2 steps at" in captured.out and "warmup_steps=5 exceeds the run's 2 steps" in captured.err
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["train"]["max_steps"] == 2 and prov["config"]["model"]["d_model"] == 16
    assert prov["estimate"]["steps"] == 2 and prov["device"].startswith("cpu") and prov["argv"][:2] == ["dnadiff", "pretrain"] and "--force" in prov["argv"]


def test_progress_line_states_each_unit_once():
    from dnadiff.training.callbacks import progress_line

    line = progress_line({"step": 120, "total": 50_000, "tokens_per_s": 3512.4, "train": 1.97214, "val": 1.96501,
                          "eta": 14_000.0})
    assert line == "step 120/50,000  3,512 tokens/s  train 1.9721  val 1.9650 bits/token  ETA 3.9 h"
    assert progress_line({"step": 0, "total": 20, "tokens_per_s": None, "train": None, "val": None,
                          "eta": None}) == "step 0/20"


@pytest.mark.slow
def test_plain_progress_lines_when_the_output_is_no_terminal(shared_data, tmp_path, capsys, monkeypatch):
    import re

    import dnadiff
    from dnadiff.training import pretrain as pt

    monkeypatch.setattr(pt, "PROGRESS_LINE_SECONDS", 0.0)  # a line after every step (30 s in real runs)
    genome = shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz"
    dnadiff.pretrain(genome, config="demo", out=tmp_path / "run", max_steps=4, overrides=TINY[:-3] +
                     ["train.val_every=4", "train.ckpt_every=4", "train.ema_decay=0.9"], accelerator="cpu",
                     progress="bar")  # "bar", but pytest's stderr is no terminal
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("step ")]
    pattern = r"step (\d)/4  [\d,]+ tokens/s  train \d\.\d{4}( {2}val \d\.\d{4})? bits/token  ETA \d+ s"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    steps = [int(re.match(r"step (\d)", line).group(1)) for line in lines]
    assert steps[:4] == [1, 2, 3, 4] and "val " in lines[-1]  # every step, then the validation at step 4
    assert "\r" not in out.out and "\x1b[" not in out.out and "\x1b[" not in out.err  # no terminal control codes


def test_logger_choice(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from dnadiff.errors import ParameterError
    from dnadiff.training.pretrain import check_logger, make_trainer, resolve_config

    with pytest.raises(ParameterError, match="logger='mlflow' is unknown"):
        check_logger("mlflow")
    cfg = resolve_config("demo", TINY, genome="x.fa")
    device = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "strategy": "auto"}
    trainer = make_trainer(cfg, device, 1, tmp_path, None, "csv")
    assert [type(lg) for lg in trainer.loggers] == [type(trainer.loggers[0])] and isinstance(trainer.loggers[0], CSVLogger)
    try:
        check_logger("tensorboard")
    except ParameterError as err:  # not installed: the error says how to get it
        assert "pip install tensorboard" in str(err)
        return
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = make_trainer(cfg, device, 1, tmp_path, None, "tensorboard")
    assert isinstance(trainer.loggers[0], CSVLogger) and isinstance(trainer.loggers[1], TensorBoardLogger)


def test_long_runs_are_timed_on_a_bounded_step_and_scaled(monkeypatch):
    """A step of more than TIMED_TOKENS tokens is timed on fewer rows, then a shorter window, and scaled by the
    token ratio: the estimate of a 131k-token window costs seconds, not the minutes of one real step."""
    from dnadiff.training import estimate as est

    assert est.timed_shape(16, 1024) == (16, 1024)  # the 470k recipe step: timed as it is
    assert est.timed_shape(64, 512) == (32, 512)
    assert est.timed_shape(8, 131_072) == (1, 16_384)
    seen = []

    def fake(module, rows, length, device, precision="32-true"):
        seen.append((rows, length))
        return 2.0

    cfg = {"data": {"window": 131_072, "batch_size": 8}, "train": {"max_steps": 10}}
    monkeypatch.setattr(est, "time_steps", fake)
    e = est.estimate_run(cfg, None, {"accelerator": "cpu"}, force=True)
    assert seen == [(1, 16_384)] and e["seconds_per_step"] == pytest.approx(2.0 * 8 * 131_072 / 16_384)
