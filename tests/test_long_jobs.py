"""Long generations: the planned number of denoiser calls is exact for the ancestral sampler, an absurd
estimate for the device is refused unless forced, and long runs print progress with the time left."""
from __future__ import annotations

import pytest
import torch

from dnadiff.cli import main
from dnadiff.commands import sample as sample_cmd
from dnadiff import progress
from dnadiff.data.info import DataInfo
from dnadiff.diffusion import MaskedDiffusion, SampleStats
from dnadiff.generate import DNAModel
from dnadiff.models.transformer import DiffusionTransformer
from dnadiff.checkpoints.format import save_checkpoint


def tiny_generator(window: int = 16) -> DNAModel:
    torch.manual_seed(0)
    model = DiffusionTransformer(vocab_size=7, num_outputs=4, d_model=8, n_layer=1, n_head=2, max_len=64)
    return DNAModel(model, MaskedDiffusion(4), DataInfo(window=window))


@pytest.mark.parametrize("num, length, steps, batch, exact", [(3, 40, 5, 2, True), (1, 16, 4, 8, True),
                                                             (2, 100, 2, 1, True), (5, 17, 3, 5, False)])
def test_planned_calls_are_the_ancestral_sampler_s_calls(num, length, steps, batch, exact):
    """Exact when every window has at least ``steps`` new positions; an upper bound otherwise (the last
    window of 17 bases adds 1 new base: one call, not 3)."""
    gen = tiny_generator(window=16)
    stats = SampleStats()
    gen.generate(num, length=length, steps=steps, sampler="ancestral", batch_size=batch, seed=0, stats=stats)
    planned = progress.planned_calls(num, length, steps, 16, batch)
    calls = stats.denoiser_calls
    assert calls == planned if exact else calls < planned


def test_num_windows_matches_the_semi_autoregressive_sampler():
    # windows start at 0, 8, 16, ... and the last one ends at the length: 1 + ceil((L - 16) / 8)
    assert [progress.num_windows(n, 16) for n in (1, 16, 17, 24, 25, 40)] == [1, 1, 2, 2, 3, 4]


@pytest.fixture
def model_pt(tmp_path):
    from dnadiff.training.diffusion_module import DiffusionModule

    module = DiffusionModule({"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 8, "n_layer": 1,
                              "n_head": 2, "max_len": 32}, {"vocab_size": 4, "schedule": "linear"}, ema_decay=0.9,
                             data_info={"modality": "dna", "window": 16, "class_names": []})
    return str(save_checkpoint(tmp_path / "model.pt", module.export_payload({})))


def test_an_absurd_request_is_refused_before_sampling(tmp_path, model_pt, capsys):
    out = tmp_path / "x.fa"
    code = main(["sample", "--checkpoint", model_pt, "--num", "4", "--length", "100000000000", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "denoiser calls" in err and "days" in err and "--force" in err and "--length" in err
    assert not out.exists()


def test_the_limit_is_the_device_estimate_and_force_overrides_it(tmp_path, model_pt, capsys, monkeypatch):
    monkeypatch.setattr(sample_cmd, "MAX_ESTIMATED_SECONDS", 0.0)
    monkeypatch.setattr(sample_cmd, "PROGRESS_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    out = tmp_path / "x.fa"
    argv = ["sample", "--checkpoint", model_pt, "--num", "2", "--length", "40", "--steps", "3", "--sampler", "ancestral",
            "--out", str(out)]
    assert main(argv) == 2 and not out.exists()
    assert "up to 12 denoiser calls" in capsys.readouterr().err  # 1 batch x 4 windows x 3 steps
    assert main([*argv, "--force"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sampling:")]
    assert lines[0].startswith("sampling: up to 12 denoiser calls, about ")
    assert "(12/12 denoiser calls at most)" in lines[-1] and "left" in lines[-1]
    assert len(out.read_text().split(">")) == 3
