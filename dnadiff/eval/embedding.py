"""A small CNN classifier of real sequences whose penultimate layer is the embedding for the
Fréchet distance (as the FBD of Dirichlet flow matching, Stark et al. 2024, uses a trained
classifier's features).

One-hot input (N = all zeros), two convolution layers, global max pooling over positions and
over both strands (so the embedding is reverse-complement invariant), a hidden layer of ``dim``
units (the embedding) and a linear class head. Trained with Adam on real labelled sequences for
a fixed number of epochs, single process, CPU by default.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from dnadiff.data.tokenizer import NUM_BASES, encode
from dnadiff.eval.fit import fit_cross_entropy
from dnadiff.rc import reverse_complement_str


def one_hot(seqs: Sequence[str]) -> torch.Tensor:
    """FloatTensor[S, 4, L] one-hot (letters other than A/C/G/T, and padding of sequences shorter
    than the longest L: zeros)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.stack([encode(s.ljust(width, "N")) for s in seqs])
    x = torch.nn.functional.one_hot(ids.clamp_max(NUM_BASES), NUM_BASES + 1)[..., :NUM_BASES]
    return x.float().transpose(1, 2)


class _Net(nn.Module):
    def __init__(self, num_classes: int, dim: int, channels: int = 64):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(4, channels, 9, padding=4), nn.ReLU(),
                                  nn.Conv1d(channels, channels, 9, padding=4), nn.ReLU())
        self.hidden = nn.Sequential(nn.Linear(channels, dim), nn.ReLU())
        self.head = nn.Linear(dim, num_classes)

    def embed(self, x: torch.Tensor, x_rc: torch.Tensor) -> torch.Tensor:
        h = torch.maximum(self.conv(x).amax(-1), self.conv(x_rc).amax(-1))
        return self.hidden(h)

    def forward(self, x, x_rc):
        return self.head(self.embed(x, x_rc))


class SequenceEmbedder:
    """CNN classifier of real sequences; ``embed`` gives its penultimate features.

    Args:
        dim: embedding size. epochs, batch_size, lr: training settings. seed: initialisation and order.
    """

    def __init__(self, dim: int = 64, epochs: int = 3, batch_size: int = 128, lr: float = 2e-3, seed: int = 0):
        self.dim, self.epochs, self.batch_size, self.lr, self.seed = dim, epochs, batch_size, lr, seed
        self.net: _Net | None = None

    @staticmethod
    def _inputs(seqs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return one_hot(seqs), one_hot([reverse_complement_str(s) for s in seqs])

    def fit(self, seqs: Sequence[str], labels: Sequence[int]) -> "SequenceEmbedder":
        """Train on S real equal-length sequences with integer labels int[S]."""
        torch.manual_seed(self.seed)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.net = _Net(int(y.max()) + 1, self.dim)
        fit_cross_entropy(self.net, self._inputs(seqs), y, self.epochs, self.batch_size, self.lr, self.seed)
        return self

    @torch.no_grad()
    def embed(self, seqs: Sequence[str]) -> np.ndarray:
        """float64[S, dim] penultimate-layer features of equal-length sequences."""
        out = []
        for i in range(0, len(seqs), 512):
            out.append(self.net.embed(*self._inputs(seqs[i:i + 512])).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim))

    @torch.no_grad()
    def predict(self, seqs: Sequence[str]) -> np.ndarray:
        """Predicted class of each sequence: int64[S]."""
        return np.concatenate([self.net(*self._inputs(seqs[i:i + 512])).argmax(-1).numpy()
                               for i in range(0, len(seqs), 512)])

    def accuracy(self, seqs: Sequence[str], labels: Sequence[int]) -> float:
        """Share of sequences predicted as their label."""
        return float(np.mean(self.predict(seqs) == np.asarray(labels)))
