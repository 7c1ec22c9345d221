"""The one training loop of the evaluation CNNs (dnadiff.eval.fit): it keeps the best epoch's weights, skips a
too-small last batch, and visits every row once per epoch."""
from __future__ import annotations

import torch
from torch import nn

from dnadiff.eval.fit import fit_cross_entropy


class Counting(nn.Module):
    """A linear classifier that records the rows of each batch it is called on in training."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.batches: list[list[int]] = []

    def forward(self, x, row):
        if self.training:
            self.batches.append(row.tolist())
        return self.linear(x)


def test_every_row_once_per_epoch_and_a_short_last_batch_skipped():
    x, rows, y = torch.randn(11, 3), torch.arange(11), torch.randint(0, 2, (11,))
    model = fit_cross_entropy(Counting(), [x, rows], y, epochs=2, batch_size=4, lr=1e-2, seed=0, min_batch=2)
    sizes = [len(b) for b in model.batches]
    assert sizes == [4, 4, 3, 4, 4, 3] and not model.training
    assert all(sorted(sum(model.batches[i:i + 3], [])) == list(range(11)) for i in (0, 3))
    model = fit_cross_entropy(Counting(), [x, rows], y, epochs=1, batch_size=5, lr=1e-2, seed=0, min_batch=2)
    assert [len(b) for b in model.batches] == [5, 5]  # the last row alone is skipped


def test_select_keeps_the_weights_of_the_best_epoch():
    x, rows, y = torch.randn(16, 3), torch.arange(16), torch.randint(0, 2, (16,))
    scores, seen = iter([0.2, 0.9, 0.5, 0.9]), []

    def select(model):
        seen.append(model.linear.weight.detach().clone())
        return next(scores)

    model = fit_cross_entropy(Counting(), [x, rows], y, epochs=4, batch_size=8, lr=0.1, seed=1, select=select)
    assert torch.equal(model.linear.weight, seen[1]) and not torch.equal(seen[1], seen[3])  # first of the equals
