"""Confidence-ordered unmasking (MaskGIT; LLaDA's "low-confidence remasking", Nie et al. 2025).

NOT an exact sampler of the model: at each step a token is drawn for every masked position
from the denoiser's distribution mu (after temperature / top-p), and only the k positions with
the highest confidence keep theirs, where the confidence is

* ``prob``:   mu of the drawn token (LLaDA's default, which draws greedily at temperature 0);
* ``margin``: top-1 minus top-2 probability of mu at the position.

Choosing which positions to reveal from the drawn values biases the joint towards
high-probability tokens (lower diversity, often higher per-sample likelihood). The k per step
spreads each block's masked positions evenly over its steps (LLaDA's schedule: n // S per step,
the remainder to the first steps). With ``block_length`` the window is unmasked left to right in
semi-autoregressive blocks of that many positions (each with steps // blocks steps, at least 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .reverse import MuCache, SampleStats, categorical, decode_remaining, start_from_prior, time_grid

SCORES = ("prob", "margin")


@dataclass
class ConfidenceOptions:
    """Confidence sampler settings."""

    score: str = "prob"
    block_length: int | None = None

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"unknown confidence score {self.score!r}; use one of {', '.join(SCORES)}")
        if self.block_length is not None and self.block_length < 1:
            raise ValueError("block_length must be >= 1")


def reveal_counts(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Positions to reveal at each of ``steps`` steps: LongTensor[N, steps] summing to n_masked[N]."""
    base = n_masked[:, None] // steps
    rem = n_masked[:, None] % steps
    return base + (torch.arange(steps, device=n_masked.device)[None, :] < rem).long()


def scores(mu: torch.Tensor, drawn: torch.Tensor, kind: str) -> torch.Tensor:
    """Confidence of each position: mu FloatTensor[M, V], drawn LongTensor[M] -> FloatTensor[M]."""
    if kind == "prob":
        return mu.gather(-1, drawn[:, None]).squeeze(-1)
    top = mu.topk(min(2, mu.shape[-1]), dim=-1).values
    return top[:, 0] - (top[:, 1] if top.shape[-1] > 1 else 0.0)


@torch.no_grad()
def confidence_window(process, denoiser, z: torch.Tensor, steps: int, grid: str = "uniform",
                      options: ConfidenceOptions | None = None, labels=None, guidance: float = 0.0, null_label=None,
                      temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
                      stats: SampleStats | None = None) -> torch.Tensor:
    """Confidence-ordered unmasking of the masked positions of z: LongTensor[N, L] -> LongTensor[N, L].

    The denoiser sees t = t_k of the ``grid`` (global step k); rows that reveal nothing at a
    step are not evaluated.
    """
    opts = options or ConfidenceOptions()
    mask_id = process.mask_id
    z = start_from_prior(process, z, generator)
    N, L = z.shape
    block = opts.block_length or L
    starts = list(range(0, L, block))
    per_block = [steps // len(starts) + (1 if b < steps % len(starts) else 0) for b in range(len(starts))]
    per_block = [max(1, s) for s in per_block]
    total = sum(per_block)
    ts = time_grid(total, grid)
    cache = MuCache(process, denoiser, labels, guidance, null_label, temperature, top_p, stats)
    k_global = 0
    for start, n_steps in zip(starts, per_block):
        in_block = torch.zeros(L, dtype=torch.bool, device=z.device)
        in_block[start:start + block] = True
        counts = reveal_counts(((z == mask_id) & in_block).sum(-1), n_steps)
        for j in range(n_steps):
            k = counts[:, j]
            need = k > 0
            if need.any():
                mu = cache.get(z, ts[k_global], need)
                cand = (z == mask_id) & in_block & need[:, None]
                drawn = categorical(mu[cand], generator)
                conf = torch.full(z.shape, -1.0, dtype=torch.float64, device=z.device)
                conf[cand] = scores(mu[cand], drawn, opts.score).double()
                tokens = torch.full_like(z, mask_id)
                tokens[cand] = drawn
                rank = conf.argsort(-1, descending=True).argsort(-1)
                chosen = cand & (rank < k[:, None])
                z = torch.where(chosen, tokens, z)
            k_global += 1
    return decode_remaining(process, z, generator)
