"""Honest epoch selection in cross-validation: a model whose held-out predictions are pure noise across
epochs reports chance under ``selection="inner"`` and above chance under the optimistic ``"held-out"``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dnadiff.data.genomic_benchmarks import Split, TaskData
from dnadiff.finetuning import run_finetune
from dnadiff.finetuning.cv import inner_split, stratified_folds
from dnadiff.finetuning.report import render_markdown
from dnadiff.finetuning.trainer import FinetuneConfig


class NoiseClassifier(nn.Module):
    """(tokens [B, L], valid [B, L]) -> logits [B, 2] that are a hash of the sequence and of the number of
    training forward passes so far: every epoch's predictions are fresh noise, independent of the labels.

    The counter is a buffer, so the selected epoch's state_dict reproduces that epoch's predictions."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("weights", torch.rand(512, generator=torch.Generator().manual_seed(5), dtype=torch.float64))

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.count += 1
        h = ((tokens.double() + 1) * self.weights[: tokens.shape[1]] * valid).sum(-1)
        u = torch.frac(torch.sin(h * 12.9898 + self.count * 78.233) * 43758.5453)
        noise = torch.stack([torch.zeros_like(u), 40 * (u - 0.5)], -1).float()
        return noise + self.bias


def _random_task(n: int, seed: int) -> TaskData:
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGT"), size=30)) for _ in range(n)]
    labels = rng.permutation(np.arange(n) % 2)  # balanced and independent of the sequences
    return TaskData("noise", ["a", "b"], Split(seqs, labels), None, "test")


def test_inner_split_is_stratified_disjoint_and_seeded():
    labels = np.array([0] * 60 + [1] * 40)
    train = np.arange(100)[::1]
    fit, inner = inner_split(labels, train, seed=3)
    assert len(inner) == 10 and len(fit) == 90
    assert set(fit.tolist()) | set(inner.tolist()) == set(train.tolist()) and not set(fit) & set(inner)
    assert np.bincount(labels[inner]).tolist() == [6, 4]  # class proportions kept
    again_fit, again_inner = inner_split(labels, train, seed=3)
    assert np.array_equal(inner, again_inner) and np.array_equal(fit, again_fit)
    assert not np.array_equal(inner, inner_split(labels, train, seed=4)[1])


@pytest.mark.slow
def test_noisy_epochs_honest_reports_chance_optimistic_above():
    data = _random_task(600, seed=0)  # 10 folds of 60: one optimiser step per epoch keeps it quick
    config = FinetuneConfig(lr=1e-3, batch_size=1024, epochs=12, max_length=30, micro_batch=1024)
    splits = stratified_folds(data.train.labels, 10, 0, data.class_names)
    runs = {}
    for selection in ("inner", "held-out"):
        runs[selection] = run_finetune(data, NoiseClassifier, config, "ps", folds=10, seed=0, baselines=(),
                                       splits=splits, selection=selection)
    honest, optimistic = runs["inner"], runs["held-out"]
    for fold in optimistic["folds"]:  # the optimistic figure is the best of the epochs on the scored fold
        assert fold["accuracy"] == max(fold["val_accuracy_per_epoch"])
    for fold, (_, held) in zip(honest["folds"], splits):
        assert fold["n"] == len(held)  # scored on the whole held-out fold
        assert fold["selection_metrics"]["accuracy"] == max(fold["val_accuracy_per_epoch"])
        assert fold["selection_metrics"]["n"] == 54  # 10% of the 540 training examples
    acc_honest = honest["summary"]["accuracy"]["mean"]
    acc_optimistic = optimistic["summary"]["accuracy"]["mean"]
    # 600 held-out predictions of a coin: chance 0.5 with standard error 0.020 (bound: 3.5 standard errors);
    # the best of 12 noisy epochs on 60 examples (sd 0.065) sits about 1.6 sd above chance: 0.606 expected
    assert abs(acc_honest - 0.5) < 0.07, acc_honest
    assert acc_optimistic > 0.56 and acc_optimistic - acc_honest > 0.04, (acc_optimistic, acc_honest)
    honest["model"] = optimistic["model"] = {"description": "noise", "init": "from scratch"}
    assert "optimistic" in render_markdown(optimistic) and "optimistic" not in render_markdown(honest)
    assert honest["selection"] == "inner" and optimistic["selection"] == "held-out"


def test_selection_held_out_refused_for_the_caduceus_protocol(tmp_path):
    import dnadiff
    from dnadiff.errors import ParameterError

    with pytest.raises(ParameterError, match="selection"):
        dnadiff.finetune("human_enhancers", out=tmp_path / "x", data="nope.tsv", from_scratch=True,
                         protocol="caduceus", selection="held-out")
    with pytest.raises(ParameterError, match="selection"):
        dnadiff.finetune("human_enhancers", out=tmp_path / "x", data="nope.tsv", from_scratch=True, selection="best")


def test_finetune_progress_without_a_terminal_is_plain_unwrapped_lines(capsys):
    from dnadiff.finetuning.run import _progress_display

    long_note = "x" * 150
    with _progress_display("bar", "human_enhancers_cohn", "cv", 5, None, 2, [long_note]) as callback:
        callback("fold", 1, 0, float("nan"))
        callback("epoch", 1, 0, 0.6554)
        callback("baselines", 1, 0, float("nan"))
    err = capsys.readouterr().err.splitlines()  # pytest's stderr is no terminal
    assert err == [f"note: {long_note}", "human_enhancers_cohn cv run 2/5: started",
                   "human_enhancers_cohn cv run 2/5: epoch 1/2, selection accuracy 0.655",
                   "human_enhancers_cohn cv run 2/5: baselines"]
