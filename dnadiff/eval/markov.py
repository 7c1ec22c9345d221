"""Order-k Markov baseline over A/C/G/T: does the network beat counting?

The model predicts base ``x_j`` from the ``k`` bases before it,
``p(x_j = b | ctx) = (count(ctx, b) + alpha) / (count(ctx) + 4 * alpha)`` (additive smoothing),
with counts of every order ``0..max_order`` taken from training windows. A context that would cross
an N (or any non-ACGT token) or the window start backs off to the longest clean context available,
so position ``j`` with ``r`` clean bases before it uses order ``min(k, r)``.
The order ``k`` (and the smoothing ``alpha`` from a small grid) are chosen on validation windows,
and :meth:`MarkovModel.score` evaluates the exact log-likelihood on the positions of ``loss_mask``,
the same positions and masks the network is scored on.

Context codes: the order-m context of position j is ``sum_{t=1..m} x_{j-t} * 4^(t-1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from dnadiff.data.tokenizer import NUM_BASES
from dnadiff.errors import UserError

MAX_SUPPORTED_ORDER = 12
DEFAULT_ALPHAS = (0.1, 0.5, 1.0)


@dataclass(frozen=True)
class MarkovScore:
    """Log-likelihood summary on a set of positions.

    ``nats_per_nt`` is the mean negative log-likelihood, ``bits_per_nt = nats_per_nt / ln 2`` and
    ``perplexity = exp(nats_per_nt)``.
    """

    order: int
    alpha: float
    total_nats: float
    num_positions: int
    nats_per_nt: float
    bits_per_nt: float
    perplexity: float

    @staticmethod
    def from_total(order: int, alpha: float, total_nats: float, num_positions: int) -> "MarkovScore":
        if num_positions == 0:
            raise UserError("no A/C/G/T position to score: the windows are empty or all N")
        mean = total_nats / num_positions
        return MarkovScore(order, alpha, total_nats, num_positions, mean, mean / math.log(2), math.exp(mean))


def _as_numpy(tokens: torch.Tensor, loss_mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = torch.as_tensor(tokens).detach().cpu().numpy().astype(np.int64)
    mask = torch.as_tensor(loss_mask).detach().cpu().numpy().astype(bool)
    if x.ndim != 2 or mask.shape != x.shape:
        raise ValueError(f"tokens and loss_mask must both be [B, L], got {x.shape} and {mask.shape}")
    if (mask & (x >= NUM_BASES)).any():
        raise ValueError("loss_mask selects a position that is not A/C/G/T")
    return x, mask


def clean_run_before(x: np.ndarray) -> np.ndarray:
    """int64 [B, L]: number of consecutive A/C/G/T tokens immediately before each position
    (0 at the window start and right after a non-ACGT token)."""
    positions = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    last_bad = np.maximum.accumulate(np.where(x >= NUM_BASES, positions, -1), axis=1)
    run = np.zeros_like(x)
    run[:, 1:] = positions[:, :-1] - last_bad[:, :-1]
    return run


def context_codes(x: np.ndarray, max_order: int) -> list[np.ndarray]:
    """Context codes of every order 0..max_order, each int64 [B, L] (meaningful where the clean run
    before the position is at least that order)."""
    clean = np.where(x < NUM_BASES, x, 0)
    codes = [np.zeros_like(x)]
    for m in range(1, max_order + 1):
        shifted = np.zeros_like(x)
        shifted[:, m:] = clean[:, :-m]
        codes.append(codes[-1] + shifted * NUM_BASES ** (m - 1))
    return codes


class MarkovModel:
    """Counts of every context order ``0..max_order``; ``order`` and ``alpha`` are set by :meth:`select`.

    Args:
        max_order: largest context length considered (at most 12: 4^13 counts).
        alphas: smoothing constants tried by :meth:`select`.
    """

    def __init__(self, max_order: int = 8, alphas: Sequence[float] = DEFAULT_ALPHAS):
        if not 0 <= max_order <= MAX_SUPPORTED_ORDER:
            raise UserError(f"Markov max order {max_order} must be between 0 and {MAX_SUPPORTED_ORDER}")
        self.max_order = int(max_order)
        self.alphas = tuple(float(a) for a in alphas)
        self.counts = [np.zeros(NUM_BASES ** (m + 1), dtype=np.float64) for m in range(max_order + 1)]
        self.order = 0
        self.alpha = self.alphas[-1]

    @property
    def num_fitted(self) -> int:
        """Number of positions counted (order-0 total)."""
        return int(self.counts[0].sum())

    def update(self, tokens: torch.Tensor, loss_mask: torch.Tensor) -> None:
        """Add the positions of ``loss_mask`` (BoolTensor[B, L]) of ``tokens`` (LongTensor[B, L]) to the counts."""
        x, mask = _as_numpy(tokens, loss_mask)
        run = clean_run_before(x)
        for m, code in enumerate(context_codes(x, self.max_order)):
            use = mask & (run >= m)
            cells = code[use] * NUM_BASES + x[use]
            self.counts[m] += np.bincount(cells, minlength=self.counts[m].size)

    def _order_log_probs(self, m: int, alpha: float, code: np.ndarray, x: np.ndarray) -> np.ndarray:
        table = self.counts[m].reshape(-1, NUM_BASES)
        return np.log(table[code, x] + alpha) - np.log(table.sum(1)[code] + NUM_BASES * alpha)

    def log_likelihood(self, tokens: torch.Tensor, loss_mask: torch.Tensor, order: int | None = None,
                       alpha: float | None = None) -> torch.Tensor:
        """Per-position log p (nats) under order ``order`` (default: the selected one) with back-off.

        Returns:
            FloatTensor[B, L] (float64): log-probability on ``loss_mask`` positions, 0 elsewhere.
        """
        order = self.order if order is None else order
        alpha = self.alpha if alpha is None else alpha
        x, mask = _as_numpy(tokens, loss_mask)
        used = np.minimum(clean_run_before(x), order)
        codes = context_codes(x, order)
        out = np.zeros(x.shape, dtype=np.float64)
        for m in range(order + 1):
            at = mask & (used == m)
            out[at] = self._order_log_probs(m, alpha, codes[m][at], x[at])
        return torch.from_numpy(out)

    def _nats_by_order(self, x: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
        """float64 [max_order + 1]: total negative log-likelihood under each order k (with back-off)."""
        run = clean_run_before(x)
        codes = context_codes(x, self.max_order)
        exact = np.zeros(self.max_order + 1)  # nats of positions whose clean run is exactly m, at order m
        at_least = np.zeros(self.max_order + 1)  # nats of positions with run >= m, at order m
        for m in range(self.max_order + 1):
            use = mask & (run >= m)
            nll = -self._order_log_probs(m, alpha, codes[m][use], x[use])
            at_least[m] = nll.sum()
            exact[m] = nll[run[use] == m].sum()
        return np.concatenate([[0.0], np.cumsum(exact)[:-1]]) + at_least

    def select(self, batches: Iterable[dict]) -> MarkovScore:
        """Choose ``order`` in 0..max_order and ``alpha`` in ``alphas`` minimising validation NLL.

        Args:
            batches: dicts with ``tokens`` LongTensor[B, L] and ``loss_mask`` BoolTensor[B, L].
        Returns:
            the validation score of the chosen (order, alpha).
        """
        if self.num_fitted == 0:
            raise UserError("the Markov baseline has no training counts: fit it on training windows first")
        totals = np.zeros((len(self.alphas), self.max_order + 1))
        positions = 0
        for batch in batches:
            x, mask = _as_numpy(batch["tokens"], batch["loss_mask"])
            positions += int(mask.sum())
            for a, alpha in enumerate(self.alphas):
                totals[a] += self._nats_by_order(x, mask, alpha)
        best_alpha, best_order = np.unravel_index(int(np.argmin(totals)), totals.shape)
        self.order, self.alpha = int(best_order), self.alphas[best_alpha]
        return MarkovScore.from_total(self.order, self.alpha, float(totals[best_alpha, best_order]), positions)

    def score(self, batches: Iterable[dict]) -> MarkovScore:
        """Exact log-likelihood of the selected model on the ``loss_mask`` positions of ``batches``."""
        total, positions = 0.0, 0
        for batch in batches:
            total -= float(self.log_likelihood(batch["tokens"], batch["loss_mask"]).sum())
            positions += int(torch.as_tensor(batch["loss_mask"]).sum())
        return MarkovScore.from_total(self.order, self.alpha, total, positions)


def fit_markov(train_batches: Iterable[dict], val_batches: Iterable[dict], max_order: int = 8,
               alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[MarkovModel, MarkovScore]:
    """Fit counts on training batches and choose the order (and smoothing) on validation batches.

    Returns:
        (model with ``order``/``alpha`` set, its validation score).
    """
    model = MarkovModel(max_order, alphas)
    for batch in train_batches:
        model.update(batch["tokens"], batch["loss_mask"])
    return model, model.select(val_batches)
