"""Text and pixels through the shared diffusion core: units, data wiring, short training runs, one core for all.

The training tests use the real text shipped in data/text/ and scikit-learn's bundled digits, a tiny
DiffusionTransformer and dnadiff.diffusion.MaskedDiffusion.loss, and check that held-out bits per
character / per dimension fall well below the uniform baseline log2(V).
"""
from __future__ import annotations

import ast
import io
import math
import pickle
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import dnadiff
from dnadiff.data.info import DataInfo
from dnadiff.diffusion import MaskedDiffusion, get_schedule
from dnadiff.errors import UserError
from dnadiff.eval.units import bits_per_character, bits_per_dimension, bits_per_token, nats_to_bits, perplexity, uniform_bits
from dnadiff.models.transformer import DiffusionTransformer
from dnadiff.training.modalities import build_datamodule, model_io, report_in_units, save_samples

REPO = Path(__file__).resolve().parents[1]
REAL_TEXT = REPO / "data" / "text" / "python_reference_topics.txt"


@contextmanager
def one_thread():
    """Train on one thread: on a shared 2-core machine more threads only spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_units_against_hand_computation():
    ln2 = math.log(2)
    assert nats_to_bits(ln2) == pytest.approx(1.0, abs=1e-15)
    # 1000 characters at 1.5 bits each: 1500 * ln 2 nats in total
    assert bits_per_character(1500 * ln2, 1000) == pytest.approx(1.5, rel=1e-14)
    # 10 CIFAR images = 30720 dimensions, each coded uniformly over 256 levels: ln 256 nats per dimension
    assert bits_per_dimension(30720 * math.log(256), 30720) == pytest.approx(8.0, rel=1e-14)
    # one 8x8 digit (64 dims) at -ln(1/17) nats each -> log2 17 = 4.0875 bpd; perplexity 17
    assert bits_per_dimension(64 * math.log(17), 64) == pytest.approx(4.087462841250339, rel=1e-14)
    assert perplexity(64 * math.log(17), 64) == pytest.approx(17.0, rel=1e-12)
    assert uniform_bits(27) == pytest.approx(4.754887502163468, rel=1e-15)
    assert uniform_bits(4) == 2.0 and uniform_bits(256) == 8.0
    with pytest.raises(ValueError):
        bits_per_token(1.0, 0)


def test_untrained_model_scores_the_uniform_baseline():
    """Zero head = exactly uniform predictions: the NELBO (a Monte-Carlo estimate) is log2 V bits per token."""
    data, info = build_datamodule({"images": "digits", "batch_size": 64})
    model = DiffusionTransformer(**model_io(info), d_model=32, n_layer=1, n_head=2)
    diffusion = MaskedDiffusion(vocab_size=info.vocab_size, schedule=get_schedule("linear"))
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad(), one_thread():
        nats = diffusion.nelbo(model, batch["tokens"], num_t=32, loss_mask=batch["loss_mask"]).sum().item()
    report = report_in_units(info, nats, int(batch["loss_mask"].sum()))
    assert report["unit"] == "bpd" and report["uniform_bits"] == uniform_bits(17)
    assert report["bits"] == pytest.approx(uniform_bits(17), rel=0.05)


def _train_and_score(info: dict, data, steps: int, lr: float, eval_batches: int) -> tuple[float, MaskedDiffusion]:
    """Train a tiny transformer with MaskedDiffusion.loss; return held-out bits per token and the core object."""
    torch.manual_seed(0)
    model = DiffusionTransformer(**model_io(info), d_model=64, n_layer=2, n_head=4)
    diffusion = MaskedDiffusion(vocab_size=info.vocab_size, schedule=get_schedule("linear"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    done = 0
    while done < steps:
        for batch in data.train_dataloader():
            loss = diffusion.loss(model, batch["tokens"], batch["loss_mask"]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    model.eval()
    total_nats, num_tokens = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(data.val_dataloader()):
            if i == eval_batches:
                break
            total_nats += diffusion.nelbo(model, batch["tokens"], num_t=8, loss_mask=batch["loss_mask"]).sum().item()
            num_tokens += int(batch["loss_mask"].sum())
    return report_in_units(info, total_nats, num_tokens)["bits"], diffusion


@pytest.mark.slow
def test_short_training_on_real_text_lowers_bpc_well_below_uniform():
    data, info = build_datamodule({"text": str(REAL_TEXT), "text_level": "char", "window": 64, "batch_size": 32})
    assert info.unit == "bpc" and info.vocab_size == 27
    with one_thread():
        bpc, diffusion = _train_and_score(info, data, steps=400, lr=3e-3, eval_batches=8)
    assert type(diffusion) is MaskedDiffusion
    assert bpc < 0.85 * uniform_bits(27), f"bpc {bpc:.3f} vs uniform {uniform_bits(27):.3f}"


@pytest.mark.slow
def test_short_training_on_digits_lowers_bpd_well_below_uniform(tmp_path):
    data, info = build_datamodule({"images": "digits", "batch_size": 32})
    with one_thread():
        bpd, diffusion = _train_and_score(info, data, steps=250, lr=3e-3, eval_batches=4)
    assert bpd < 0.75 * uniform_bits(17), f"bpd {bpd:.3f} vs uniform {uniform_bits(17):.3f}"
    path = save_samples(info, torch.randint(0, 17, (4, 64)), tmp_path / "grid")
    assert path.suffix == ".png" and path.read_bytes()[:4] == b"\x89PNG"


def _write_cifar_folder(folder: Path) -> None:
    """A CIFAR-10 folder in the exact python format: pickled dicts with bytes keys, data uint8[N, 3072]."""
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": [1, 2],
                         b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"filenames": [b"a.png", b"b.png"]}, handle)


def test_cifar_folder_builds_and_one_core_step_runs(tmp_path):
    _write_cifar_folder(tmp_path)
    data, info = build_datamodule({"images": str(tmp_path), "batch_size": 2})
    assert (info.vocab_size, info.embed_size, info.window, info.shape) == (256, 257, 3072, (32, 32, 3))
    assert info.class_names[:2] == ("airplane", "automobile") and info.uniform_bits == 8.0
    batch = next(iter(data.train_dataloader()))
    model = DiffusionTransformer(**model_io(info), d_model=16, n_layer=1, n_head=2)
    loss = MaskedDiffusion(vocab_size=256).loss(model, batch["tokens"], batch["loss_mask"]).loss
    assert loss.item() == pytest.approx(math.log(256), rel=0.25)  # untrained: about ln V nats per token


def test_data_info_rebuilds_the_same_data_and_is_plain():
    data, info = build_datamodule({"text": str(REAL_TEXT), "text_level": "byte", "window": 128})
    again, same = build_datamodule(info)
    assert same == info
    assert torch.equal(next(iter(again.val_dataloader()))["tokens"], next(iter(data.val_dataloader()))["tokens"])
    assert info.unit == "bits/byte" and info.embed_size == 258
    stored = info.to_dict()  # what a checkpoint holds: plain types only, safe for weights_only loading
    assert all(isinstance(v, (str, int, float, list, dict)) for v in stored.values())
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    buffer.seek(0)
    assert DataInfo.from_dict(torch.load(buffer, weights_only=True)) == info


def test_namespace_config_and_user_errors(tmp_path):
    import argparse

    _, info = build_datamodule(argparse.Namespace(text=str(REAL_TEXT), window=None, batch_size=None, images=None))
    assert info.window == 256 and info.text_level == "char" and info.batch_size == 32
    with pytest.raises(UserError, match="exactly one data source"):
        build_datamodule({"text": str(REAL_TEXT), "images": "digits"})
    with pytest.raises(UserError, match="exactly one data source"):
        build_datamodule({})
    path = save_samples(info, torch.tensor([[7, 4, 11, 11, 14, 26, 27]]), tmp_path / "samples")
    assert path.read_text() == "hello _\n"  # 27 = a mask left unfilled


def _class_definitions(package: Path) -> list[tuple[str, list[str], str]]:
    """(class name, base-class names, file) for every class defined in the package's modules."""
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).split(".")[-1] for base in node.bases]
                found.append((node.name, bases, str(path.relative_to(package))))
    return found


def _pretrain_path(modality: str, tmp_path: Path):
    """Data and Lightning module exactly as `dnadiff pretrain` builds them, with a tiny model."""
    from dnadiff.training.pretrain import build_module
    from dnadiff.config import load_config
    from dnadiff.training.data_sources import build_data

    tiny = ["model.d_model=16", "model.n_layer=1", "data.batch_size=4"]
    if modality != "dna":
        tiny += ["model.name=transformer", "model.n_head=2"]
    cfg = load_config(None, tiny + ["data.window=64"])
    if modality == "dna":  # a generated toy genome is enough to exercise the DNA path
        rng = np.random.default_rng(0)
        (tmp_path / "toy.fa").write_text(">chrT\n" + "".join(rng.choice(list("ACGT"), 20000)) + "\n")
        cfg["data"]["genome"] = str(tmp_path / "toy.fa")
    elif modality == "text":
        cfg["data"]["text"] = str(REAL_TEXT)
    else:
        cfg["data"]["images"] = "digits"
    data, info = build_data(cfg, seed=0)
    data.setup("fit")
    return data, info, build_module(cfg, info)


def test_dna_text_and_pixels_share_the_one_diffusion_core(tmp_path):
    """No fork: MaskedDiffusion is defined once, never subclassed, and the DNA, text and pixel
    pretraining paths all train with an object of exactly that class and its very loss."""
    package = Path(dnadiff.__file__).parent
    definitions = _class_definitions(package)
    assert [where for name, _, where in definitions if name == "MaskedDiffusion"] == ["diffusion/masked.py"]
    assert not [name for name, bases, _ in definitions if "MaskedDiffusion" in bases]
    seen = {}
    for modality in ("dna", "text", "pixels"):
        data, info, module = _pretrain_path(modality, tmp_path)
        assert info.modality == modality
        assert type(module.diffusion) is MaskedDiffusion
        assert type(module.diffusion).loss is MaskedDiffusion.loss and type(module.diffusion).nelbo is MaskedDiffusion.nelbo
        batch = next(iter(data.train_dataloader()))
        torch.manual_seed(1)
        loss = module.diffusion.loss(module.model, batch["tokens"], batch["loss_mask"]).loss
        torch.manual_seed(1)
        fresh = MaskedDiffusion(vocab_size=info.vocab_size, schedule=module.diffusion.schedule)
        assert torch.equal(loss, fresh.loss(module.model, batch["tokens"], batch["loss_mask"]).loss)
        assert loss.item() == pytest.approx(math.log(info.vocab_size), rel=0.5), modality
        seen[modality] = (info.vocab_size, type(module.model).__name__)
    assert seen == {"dna": (4, "CaduceusDenoiser"), "text": (27, "DiffusionTransformer"), "pixels": (17, "DiffusionTransformer")}


@pytest.mark.slow
def test_cli_pretrains_and_evaluates_digits_and_text(tmp_path, capsys):
    """`dnadiff pretrain --images digits` / `--text FILE` then `dnadiff evaluate` report bpd / bpc."""
    import json

    from dnadiff.cli import main

    runs = {"digits": (["--images", "digits", "--config", "digits_tiny", "--max-steps", "60"], [], "bpd", 17),
            "text": (["--text", str(REAL_TEXT), "--config", "text8_tiny", "--max-steps", "6"], ["data.window=64"], "bpc", 27)}
    for name, (source, overrides, unit, levels) in runs.items():
        out = tmp_path / name
        with one_thread():
            assert main(["pretrain", *source, "--out", str(out), "--no-progress", "train.val_every=1000", *overrides]) == 0
            capsys.readouterr()
            assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--max-windows", "64", "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (result["modality"], result["unit"], result["uniform_bits"]) == (
            "pixels" if name == "digits" else "text", unit, uniform_bits(levels))
        assert result["num_positions"] == 64 * 64  # 64 digits of 64 pixels; 64 text chunks of 64 characters
        assert 0 < result["bits"] < uniform_bits(levels) + 3 * result["bits_stderr"]
        if name == "digits":  # 60 steps are enough to learn the many blank pixels of a digit
            assert result["bits"] < 0.9 * uniform_bits(levels)
    assert json.loads((tmp_path / "digits" / "summary.json").read_text())["steps"] == 60
