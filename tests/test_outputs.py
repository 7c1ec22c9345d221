"""Outputs: written with the user's umask (not the 0600 of temporary files), never silently replaced."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from dnadiff.atomic import atomic_write
from dnadiff.cli import main
from dnadiff.generate import write_fasta
from dnadiff.checkpoints.format import save_checkpoint


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666)])
def test_every_writer_follows_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write(tmp_path / "a.txt", lambda f: f.write(b"x"))
    save_checkpoint(tmp_path / "m.pt", {"w": torch.zeros(2)})
    write_fasta(["ACGT"], tmp_path / "s.fa")
    for name in ("a.txt", "m.pt", "s.fa"):
        assert mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m.pt", "s.fa"]  # no temporary left


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny DNA model.pt written by the export path."""
    from dnadiff.training.diffusion_module import DiffusionModule

    torch.manual_seed(0)
    module = DiffusionModule({"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 8, "n_layer": 1,
                              "n_head": 2, "max_len": 32}, {"vocab_size": 4, "schedule": "linear"},
                             ema_decay=0.9, data_info={"modality": "dna", "window": 16, "class_names": []})
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, module.export_payload({}))
    return path


def test_sample_does_not_replace_an_existing_file_unless_forced(tmp_path, tiny_model, capsys, umask):
    umask(0o022)
    out = tmp_path / "existing.fa"
    out.write_text("keep me\n")
    argv = ["sample", "--checkpoint", str(tiny_model), "--num", "2", "--length", "8", "--steps", "4", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--force" in err
    assert out.read_text() == "keep me\n"
    assert main([*argv, "--force"]) == 0
    records = out.read_text().split(">")[1:]
    assert len(records) == 2 and all(len("".join(r.splitlines()[1:])) == 8 for r in records)
    assert mode(out) == 0o644
