"""Held-out likelihood of a model as a library call: :func:`evaluate` (what ``dnadiff evaluate`` runs).

    report = dnadiff.evaluate("runs/demo/model.pt", genome="hg38.fa", split="test")
    report.bits_per_token, report.bits_stderr, report.markov_bits_per_nt

DNA is scored beside an order-k Markov baseline fitted on the training windows and scored on exactly the
same positions; text in bits per character, pixels in bits per dimension.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from dnadiff.devices import torch_device
from dnadiff.diffusion import evaluate as score_batches
from dnadiff.errors import ParameterError, UserError
from dnadiff.checkpoints.sources import load_model
from dnadiff.data.info import DataInfo
from dnadiff.data.modality import modality_of
from dnadiff.keys import check_value
from dnadiff.training.data_sources import build_dna, genome_path
from dnadiff.training.modalities import build_datamodule


@dataclass
class EvaluateResult:
    """NELBO of the held-out windows: bits per token (per nucleotide for DNA) with its standard error over
    windows, perplexity; for DNA the Markov baseline on the same positions (``markov_*``)."""

    checkpoint: str
    modality: str
    where: str
    unit: str
    bits_per_token: float
    bits_stderr: float
    perplexity: float
    perplexity_stderr: float
    num_positions: int
    num_sequences: int
    num_t: int
    uniform_bits: float
    markov_order: int | None = None
    markov_bits_per_nt: float | None = None
    markov_perplexity: float | None = None

    @property
    def nats_per_token(self) -> float:
        return self.bits_per_token * math.log(2)

    def to_dict(self) -> dict:
        """The JSON record of ``dnadiff evaluate --json`` (DNA: ``bits_per_nt``, ``num_windows``, ``markov_*``;
        text and pixels: ``bits`` in ``unit``, ``num_sequences``)."""
        head = {"checkpoint": self.checkpoint, "modality": self.modality}
        if modality_of(self.modality).markov_baseline:
            return {**head, "where": self.where, "bits_per_nt": self.bits_per_token, "bits_stderr": self.bits_stderr,
                    "nats_per_nt": self.nats_per_token, "perplexity": self.perplexity,
                    "perplexity_stderr": self.perplexity_stderr, "num_positions": self.num_positions,
                    "num_windows": self.num_sequences, "markov_order": self.markov_order,
                    "markov_bits_per_nt": self.markov_bits_per_nt, "markov_perplexity": self.markov_perplexity,
                    "num_t": self.num_t}
        return {**head, "unit": self.unit, "bits": self.bits_per_token, "bits_stderr": self.bits_stderr,
                "perplexity": self.perplexity, "perplexity_stderr": self.perplexity_stderr,
                "uniform_bits": self.uniform_bits, "num_positions": self.num_positions,
                "num_sequences": self.num_sequences}

    def lines(self) -> list[str]:
        """The report as printed by ``dnadiff evaluate``."""
        if modality_of(self.modality).markov_baseline:
            return [f"network   {self.bits_per_token:.4f} ± {self.bits_stderr:.4f} bits/nt   perplexity "
                    f"{self.perplexity:.4f} ± {self.perplexity_stderr:.4f}",
                    f"markov-{self.markov_order}  {self.markov_bits_per_nt:.4f} bits/nt            perplexity "
                    f"{self.markov_perplexity:.4f}",
                    f"on {self.num_positions:,} positions in {self.num_sequences} windows ({self.where})"]
        return [f"network  {self.bits_per_token:.4f} ± {self.bits_stderr:.4f} {self.unit}   "
                f"(uniform {self.uniform_bits:.4f})",
                f"on {self.num_positions:,} tokens in {self.num_sequences} sequences ({self.where})"]


def evaluate(
    checkpoint: str | os.PathLike,
    *,
    genome: str | os.PathLike | None = None,
    text: str | os.PathLike | None = None,
    images: str | None = None,
    split: str = "test",
    region: str | None = None,
    max_windows: int = 256,
    batch_size: int = 16,
    num_t: int = 8,
    exact_steps: int | None = None,
    markov_max_order: int = 8,
    markov_train_windows: int = 2000,
    decompress: bool = False,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str = 1,
    download: bool = False,
) -> EvaluateResult:
    """Held-out NELBO (bits per token, perplexity, standard errors) of any model source.

    Args:
        checkpoint: a model.pt, a pretraining .ckpt, an original Caduceus folder or a hub id (``download``).
        genome / text / images: the data to score (default: the data the model was trained on).
        split: ``"val"`` or ``"test"`` held-out split; region: ``chr:start-end`` (1-based, inclusive) instead (DNA).
        max_windows, batch_size: windows scored and scored together; num_t: Monte-Carlo draws of t per window,
            or exact_steps: the exact discrete-time NELBO with that many steps.
        markov_max_order, markov_train_windows: the DNA baseline (order chosen on the validation windows).
    Raises:
        UserError / ParameterError, before any scoring.
    """

    if split not in ("val", "test"):
        raise ParameterError("split", f"split={split!r} is not a held-out split: use val or test")
    max_windows = check_value(max_windows, "max_windows", "int", lo=1)
    batch_size = check_value(batch_size, "batch_size", "int", lo=1, hi=65_536)
    num_t = check_value(num_t, "num_t", "int", lo=1, hi=100_000)
    exact_steps = None if exact_steps is None else check_value(exact_steps, "exact_steps", "int", lo=1, hi=1_000_000)
    markov_max_order = check_value(markov_max_order, "markov_max_order", "int", lo=0, hi=12)
    markov_train_windows = check_value(markov_train_windows, "markov_train_windows", "int", lo=1)
    device = torch_device(accelerator, devices)
    torch.manual_seed(seed)
    model, process, payload = load_model(checkpoint, download=download)
    model.to(device)
    if isinstance(process, torch.nn.Module):
        process.to(device)
    info = payload.data
    kind = info.kind
    modality = kind.name
    given = {"genome": genome, "text": text, "images": images, "region": region}
    wrong = [name for name, value in given.items() if value and name not in kind.arguments]
    if wrong:
        name = wrong[0]
        raise ParameterError(name, f"{name} does not fit this {modality} checkpoint: give the data it "
                                   f"was trained on ({kind.hint})")
    g = torch.Generator(device=device).manual_seed(seed)
    if kind.markov_baseline:
        from dnadiff.eval.markov import fit_markov

        batches, train, val = _dna_batches(info, genome, region, split, max_windows, batch_size, markov_train_windows,
                                           decompress, seed)
        rep = score_batches(process, model, batches, num_t=num_t, exact_steps=exact_steps, generator=g)
        markov, _ = fit_markov(train, val, max_order=markov_max_order)
        mk = markov.score(batches)
        assert mk.num_positions == rep.num_tokens, "Markov baseline and network must score the same positions"
        return EvaluateResult(str(checkpoint), modality, region or split, "bits/nt", rep.bits_per_token,
                              rep.bits_stderr, rep.perplexity, rep.perplexity_stderr, rep.num_tokens,
                              rep.num_sequences, num_t, 2.0, mk.order, mk.bits_per_nt, mk.perplexity)

    data = {**info.to_dict(), "batch_size": batch_size}
    if text:
        data["text"] = str(text)
    if images:
        data["images"] = str(images)
    dm, info = build_datamodule(data)
    dm.setup("test")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    batches = materialise(loader, max_windows)
    rep = score_batches(process, model, batches, num_t=num_t, exact_steps=exact_steps, generator=g)
    return EvaluateResult(str(checkpoint), modality, split, info.unit, rep.bits_per_token, rep.bits_stderr,
                          rep.perplexity, rep.perplexity_stderr, rep.num_tokens, rep.num_sequences, num_t,
                          info.uniform_bits)


def materialise(loader, limit: int | None = None) -> list[dict]:
    """The batches of a loader as a list (so the network and the baseline see the same windows)."""
    out, n = [], 0
    for batch in loader:
        out.append(batch)
        n += batch["tokens"].shape[0]
        if limit is not None and n >= limit:
            break
    if not out:
        raise UserError("no windows to evaluate: the region or split is shorter than the window or all N")
    return out


def _dna_batches(info: DataInfo, genome, region, split, max_windows, batch_size, markov_train_windows, decompress, seed):

    genome = genome or info.genome
    if not genome:
        raise ParameterError("genome", "genome=None: a DNA checkpoint needs a genome FASTA to evaluate on")
    data = {**info.to_dict(), "batch_size": batch_size, "num_workers": 0, "max_eval_windows": max_windows}
    dm, _ = build_dna(data, genome_path(genome, decompress), seed=seed)
    target = dm.region(region) if region else split
    batches = materialise(dm.eval_dataloader(target, max_windows))
    train = dm.eval_dataloader("train", markov_train_windows)
    val = materialise(dm.eval_dataloader("val", min(max_windows, 256)))
    return batches, train, val
