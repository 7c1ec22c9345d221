"""The interface of a diffusion process, and the parts every process shares.

Training, evaluation and sampling call a process only through :class:`DiffusionProcess`;
:class:`MaskedDiffusion` (MDLM / MD4 with a fixed schedule) and :class:`GenMD4` (learnable,
state-dependent schedule) both implement all of it. Words used throughout the core:

* ``mask_id``: the mask token (= V, one past the real tokens);
* ``loss_mask``: BoolTensor[B, L], the counted positions (the others, e.g. N or PAD, are never
  masked and never scored);
* ``masked``: BoolTensor[B, L], the positions of z_t that hold the mask token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class LossResult:
    """What a process's ``loss`` returns: ``loss`` (scalar, call ``backward`` on it) and ``nelbo``
    (scalar, detached: the NELBO estimate in nats per counted token, the number to report). They
    are the same number for MaskedDiffusion; GenMD4's loss adds a score-function surrogate."""

    loss: torch.Tensor
    nelbo: torch.Tensor


@runtime_checkable
class DiffusionProcess(Protocol):
    """A masked diffusion process over V real tokens (mask id V). Shapes: x LongTensor[B, L] clean
    tokens; loss_mask BoolTensor[B, L] or None (all counted); labels LongTensor[B] or None."""

    vocab_size: int
    mask_id: int

    def loss(self, denoiser, x, loss_mask=None, labels=None, generator=None) -> LossResult:
        """Training loss, t stratified across the batch."""

    def nelbo_at(self, denoiser, x, t, loss_mask=None, labels=None, generator=None) -> torch.Tensor:
        """One-sample NELBO estimate of each sequence at times t FloatTensor[B]: FloatTensor[B] nats."""

    def nelbo_draws(self, denoiser, x, num_t=16, loss_mask=None, labels=None, generator=None) -> torch.Tensor:
        """``num_t`` stratified Monte-Carlo NELBO draws per sequence: FloatTensor[B, num_t] nats."""

    def discrete_nelbo_sum(self, denoiser, x, steps, loss_mask=None, labels=None, generator=None) -> torch.Tensor:
        """Discrete-time NELBO with T = ``steps``, summed exactly over the steps: FloatTensor[B] nats."""

    def nelbo(self, denoiser, x, num_t=16, loss_mask=None, labels=None, exact_steps=None,
              generator=None) -> torch.Tensor:
        """Per-sequence NELBO: mean of ``nelbo_draws``, or ``discrete_nelbo_sum`` with ``exact_steps``."""

    def reverse_probs(self, mu: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """Reverse step from a masked position: mu FloatTensor[..., V] -> FloatTensor[..., V + 1]
        (unmask to each token, or, last column, stay masked)."""

    def sample(self, denoiser, num: int, length: int, steps: int = 128, sampler: str = "cached", **kwargs):
        """Generate LongTensor[num, length] over 0..V-1 (see :func:`dnadiff.diffusion.sampling.sample`; its
        ``stats=`` counts the calls)."""


def stratified_times(u: torch.Tensor, k: int | torch.Tensor, n: int, num_steps: int | None = None) -> torch.Tensor:
    """Stratified times t = 1 - ((u + k/n) mod 1) in (0, 1], snapped up to the grid {1/T, ..., 1} when
    ``num_steps`` = T. u: FloatTensor[...] uniform draws; k: stratum (int or LongTensor broadcast with u)."""
    t = 1.0 - (u + k / n) % 1.0
    if num_steps is not None:
        t = torch.ceil(t * num_steps).clamp(1, num_steps) / num_steps
    return t


def counted(x: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    """The counted positions: ``loss_mask``, or all of x's positions when None (BoolTensor[B, L])."""
    return torch.ones_like(x, dtype=torch.bool) if loss_mask is None else loss_mask


class ProcessBase:
    """What every process shares, written once: stratified time draws, NELBO draws and the NELBO,
    the step-by-step discrete-time sum, sampling. A subclass provides ``vocab_size``, ``mask_id``,
    ``antithetic``, ``num_steps``, ``nelbo_at``, ``step_nats``, ``prior_nats``, ``reverse_probs``, ``loss``."""

    num_steps: int | None = None

    def sample_t(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Times in (0, 1] for a batch: FloatTensor[B], stratified when ``antithetic``
        (t_b = 1 - ((u + b/B) mod 1)); with ``num_steps=T`` snapped up to the grid {1/T, ..., 1}."""
        if self.antithetic:
            u = torch.rand(1, device=device, generator=generator)
            return stratified_times(u, torch.arange(batch, device=device), batch, self.num_steps)
        return stratified_times(torch.rand(batch, device=device, generator=generator), 0, 1, self.num_steps)

    @torch.no_grad()
    def nelbo_draws(self, denoiser, x: torch.Tensor, num_t: int = 16, loss_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """K Monte-Carlo NELBO estimates per sequence with stratified t: FloatTensor[B, K] in nats.

        Draw k of sequence b uses t = 1 - ((u_b + k/K) mod 1) (snapped to the grid in discrete time).
        """
        u = torch.rand(x.shape[0], device=x.device, generator=generator)
        return torch.stack([self.nelbo_at(denoiser, x, stratified_times(u, k, num_t, self.num_steps), loss_mask,
                                          labels, generator=generator) for k in range(num_t)], dim=1)

    def nelbo(self, denoiser, x: torch.Tensor, num_t: int = 16, loss_mask: torch.Tensor | None = None,
              labels: torch.Tensor | None = None, exact_steps: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sequence NELBO in nats: FloatTensor[B].

        ``num_t`` Monte-Carlo draws of t (continuous time, or this object's discrete T), or, with
        ``exact_steps=T``, the exact sum over all T steps of the discrete-time NELBO (one z_t draw
        per step).
        """
        if exact_steps is not None:
            return self.discrete_nelbo_sum(denoiser, x, exact_steps, loss_mask, labels, generator)
        return self.nelbo_draws(denoiser, x, num_t, loss_mask, labels, generator).mean(1)

    @torch.no_grad()
    def discrete_nelbo_sum(self, denoiser, x: torch.Tensor, steps: int, loss_mask: torch.Tensor | None = None,
                           labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Discrete-time NELBO with T = ``steps``: the prior KL plus, for i = 1..T (s = (i-1)/T,
        t = i/T), one z_t draw of the step term ``step_nats``: FloatTensor[B] nats."""
        B = x.shape[0]
        total = torch.zeros(B, device=x.device)
        for i in range(1, steps + 1):  # float64 times: step coefficients from exact grid points
            t = torch.full((B,), i / steps, device=x.device, dtype=torch.float64)
            s = torch.full((B,), (i - 1) / steps, device=x.device, dtype=torch.float64)
            total += self.step_nats(denoiser, x, s, t, loss_mask, labels, generator)
        return total + self.prior_nats(counted(x, loss_mask).sum(-1).float())

    def sample(self, denoiser, num: int, length: int, steps: int = 128, sampler: str = "cached", **kwargs) -> torch.Tensor:
        """Generate ``num`` sequences of ``length`` tokens: LongTensor[num, length] over 0..V-1.

        See :func:`dnadiff.diffusion.sampling.sample` for the keyword options (the sampler's ``options``,
        ``decoding``, ``conditioning``, ``windows``, ``generator``, ``device``); denoiser-call counts go into
        the :class:`~dnadiff.diffusion.reverse.SampleStats` passed as ``stats=``.
        """
        from .sampling import sample

        return sample(self, denoiser, num=num, length=length, steps=steps, sampler=sampler, **kwargs)
