"""Exact denoisers of small enumerable distributions, for testing the diffusion core against
closed-form answers."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn


def all_sequences(V: int, L: int) -> torch.Tensor:
    """Every sequence of length L over V tokens: LongTensor[V**L, L] (lexicographic)."""
    return torch.tensor(list(itertools.product(range(V), repeat=L)), dtype=torch.long)


def random_joint(V: int, L: int, seed: int = 0, concentration: float = 1.0) -> torch.Tensor:
    """A random strictly positive joint distribution over all V**L sequences: FloatTensor[V**L]."""
    g = torch.Generator().manual_seed(seed)
    p = (-torch.log(torch.rand(V**L, generator=g, dtype=torch.float64))) ** (1.0 / concentration)
    p = p + 1e-3
    return p / p.sum()


def markov_joint(P0: torch.Tensor, P: torch.Tensor, L: int) -> torch.Tensor:
    """Joint of a first-order Markov chain (initial P0[V], transitions P[V, V]) over V**L sequences."""
    seqs = all_sequences(P0.numel(), L)
    logp = torch.log(P0)[seqs[:, 0]]
    for n in range(1, L):
        logp = logp + torch.log(P)[seqs[:, n - 1], seqs[:, n]]
    return logp.exp()


def seq_index(x: torch.Tensor, V: int) -> torch.Tensor:
    """Index of each sequence (LongTensor[B, L]) in ``all_sequences`` order: LongTensor[B]."""
    L = x.shape[-1]
    powers = V ** torch.arange(L - 1, -1, -1)
    return (x * powers).sum(-1)


class ExactDenoiser(nn.Module):
    """mu_n(j) = P(x_n = j | unmasked tokens of z) under a joint over V**L sequences.

    Not time-conditioned (exact for every state-independent masking schedule). With several
    joints (one per class) it is class-conditional, and the null label uses ``null_joint``.
    Counts its calls and the rows it evaluated.
    """

    time_conditioned = False

    def __init__(self, joint: torch.Tensor, V: int, L: int, class_joints: list[torch.Tensor] | None = None):
        super().__init__()
        self.V, self.L = V, L
        self.register_buffer("seqs", all_sequences(V, L))
        joints = [joint] + list(class_joints or [])
        self.register_buffer("joints", torch.stack(joints).double())  # [1 + C, S]; row 0 = unconditional
        self.calls = 0
        self.rows = 0
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the module a device

    def _posterior(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """mu [B, L, V] for noisy states z [B, L] under joints p [B, S]."""
        unmasked = z < self.V
        consistent = ((z[:, None, :] == self.seqs[None]) | ~unmasked[:, None, :]).all(-1)  # [B, S]
        w = p * consistent
        onehot = torch.nn.functional.one_hot(self.seqs, self.V).double()  # [S, L, V]
        return torch.einsum("bs,slv->blv", w, onehot) / w.sum(-1)[:, None, None]

    def _table(self) -> torch.Tensor:
        """log mu for every noisy state and joint: [1 + C, (V+1)**L, L, V] (computed once)."""
        if not hasattr(self, "_log_mu"):
            states = all_sequences(self.V + 1, self.L)
            tabs = [self._posterior(states, j.expand(len(states), -1)) for j in self.joints]
            self._log_mu = torch.log(torch.stack(tabs).clamp_min(1e-300)).float()
        return self._log_mu

    def forward(self, z, t, labels=None):
        self.calls += 1
        self.rows += z.shape[0]
        table = self._table()
        idx = seq_index(z, self.V + 1)
        if labels is None:
            return table[0][idx]
        C = self.joints.shape[0] - 1  # labels 0..C-1 -> class joints, C (null) -> unconditional joint
        which = torch.where(labels >= C, torch.zeros_like(labels), labels + 1)
        return table[which, idx]


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in nats of a distribution FloatTensor[S]."""
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square goodness-of-fit p-value (cells with expected count >= 5 pooled)."""
    from scipy.stats import chisquare

    n = counts.sum()
    expected = (probs * n).double()
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum(0, keepdim=True)])
    exp = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


LOG2 = math.log(2)
