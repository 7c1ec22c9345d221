"""Masked (absorbing-state) diffusion with a state-independent schedule: forward process and ELBO.

MDLM (Sahoo et al. 2024) and MD4 (Shi et al. 2024) in one object. Tokens are 0..V-1; the mask
id is V. A *denoiser* is any module called as ``denoiser(z_t, t)`` (or with ``labels=``) that
returns logits over the V real tokens; SUBS parameterization: the mask is never predicted
(extra logit columns beyond V are dropped) and unmasked tokens are carried over exactly (only
masked positions enter the loss; the sampler never touches them).

Continuous-time NELBO of a sequence x (MD4 eq. 5, with weight w(t) = -alpha'(t)/(1-alpha(t))):

    NELBO(x) = E_{t~U(0,1)} E_{z_t~q(.|x)} [ w(t) * sum_{n: z_t^n = mask} -log mu_theta(z_t, t)_n[x_n] ]
               + n_tokens * alpha(1) * log V          (prior term; 0 unless alpha(1) > 0)

Discrete time with T steps, s(i) = (i-1)/T, t(i) = i/T:

    NELBO_T(x) = sum_i E_{z_t(i)} [ (alpha_s - alpha_t)/(1 - alpha_t) * sum_{masked} -log mu ] + prior.

The prior for alpha(1) > 0 puts each position on the mask with probability 1 - alpha(1) and on a
uniform real token otherwise, so KL(q(z_1|x) || p(z_1)) = n_tokens * alpha(1) * log V exactly; the
samplers start from this same prior. For alpha(0) < 1 (MD4's clipped schedules) the positions
still masked at t = 0 are decoded uniformly: reconstruction term n_tokens * (1 - alpha(0)) * log V,
and the samplers finish the same way. Step coefficients are computed in float64.
"""
from __future__ import annotations

import math

import torch

from .denoiser import call_denoiser
from .process import LossResult, ProcessBase, counted
from .schedules import MaskingSchedule, get_schedule


class MaskedDiffusion(ProcessBase):
    """Masked diffusion over a vocabulary of ``vocab_size`` real tokens (mask id = vocab_size).

    Implements :class:`dnadiff.diffusion.process.DiffusionProcess`.

    Args:
        vocab_size: V, number of real tokens.
        schedule: a :class:`MaskingSchedule` or its name.
        num_steps: None for the continuous-time objective, or T for the discrete-time one.
        antithetic: stratify the times t across the batch (lower-variance, still unbiased).
    """

    def __init__(self, vocab_size: int, schedule: str | MaskingSchedule = "linear", num_steps: int | None = None,
                 antithetic: bool = True):
        if vocab_size < 1:
            raise ValueError("vocab_size must be >= 1")
        self.vocab_size = int(vocab_size)
        self.mask_id = int(vocab_size)
        self.schedule = get_schedule(schedule)
        self.num_steps = num_steps
        self.antithetic = antithetic

    def __repr__(self) -> str:
        return f"MaskedDiffusion(vocab_size={self.vocab_size}, schedule={self.schedule!r}, num_steps={self.num_steps})"

    # ------------------------------------------------------------------ forward process
    def keep_probability(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """alpha(t) broadcast to the tokens: FloatTensor[B, L] (state-independent schedules)."""
        return self.schedule.alpha(t)[:, None].expand(x.shape)

    def q_sample(self, x: torch.Tensor, t: torch.Tensor, loss_mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw z_t ~ q(z_t | x): each counted token kept with probability alpha(t), else the mask id.

        Args:
            x: LongTensor[B, L]. t: FloatTensor[B]. loss_mask: BoolTensor[B, L] of counted positions
            (others are never masked). Returns LongTensor[B, L].
        """
        keep = torch.rand(x.shape, device=x.device, generator=generator) < self.keep_probability(x, t)
        if loss_mask is not None:
            keep = keep | ~loss_mask
        return torch.where(keep, x, torch.full_like(x, self.mask_id))

    # ------------------------------------------------------------------ objective
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sequence weight of the masked cross-entropy: FloatTensor[B] (dtype of ``t``).

        Continuous time: w(t) = -alpha'(t)/(1-alpha(t)). Discrete time (T steps): the
        single-step coefficient (alpha_s - alpha_t)/(1 - alpha_t) times T, so that a uniform draw
        of the step index gives an unbiased estimate of the sum over steps (computed in float64).
        """
        if self.num_steps is None:
            return self.schedule.weight(t)
        t64 = t.double()
        return (self.num_steps * self.step_coefficient(t64 - 1.0 / self.num_steps, t64)).to(t.dtype)

    def step_coefficient(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(alpha_s - alpha_t)/(1 - alpha_t) for s < t, evaluated in float64: FloatTensor[B] (float64).

        The probability that a position masked at t is revealed by s, and the discrete-time ELBO
        weight of step (s, t].
        """
        s64, t64 = s.double().clamp_min(0.0), t.double()
        a_t, a_s = self.schedule.alpha(t64), self.schedule.alpha(s64)
        return (a_s - a_t) / (1.0 - a_t).clamp_min(1e-300)

    def unmask_probability(self, t: float, s: float) -> float:
        """Probability that a position masked at time t is unmasked at time s < t (float64 scalar)."""
        return float(self.step_coefficient(torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)))

    def end_alphas(self) -> tuple[float, float]:
        """(alpha(0), alpha(1)) in float64: 1 and 0 except for the log-linear and clipped schedules."""
        a = self.schedule.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
        return float(a[0]), float(a[1])

    def prior_nats(self, n_tokens: torch.Tensor) -> torch.Tensor:
        """End terms of the NELBO in nats for sequences with ``n_tokens`` counted positions.

        Prior: KL(q(z_1|x) || p(z_1)) = n_tokens * alpha(1) * log V, where p(z_1) keeps a position
        with probability alpha(1) as a uniform token (the samplers start from this p(z_1)).
        Reconstruction (MD4's, clipped schedules): a position still masked at t = 0 (probability
        1 - alpha(0)) is decoded uniformly, n_tokens * (1 - alpha(0)) * log V. Both 0 by default.
        """
        a0, a1 = self.end_alphas()
        nats = (a1 + (1.0 - a0)) * math.log(self.vocab_size)
        return n_tokens * nats if nats > 0 else torch.zeros_like(n_tokens)

    def masked_nats(self, denoiser, x: torch.Tensor, t: torch.Tensor, weight: torch.Tensor,
                    loss_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """One z_t ~ q(.|x) draw of weight * (cross-entropy summed over the masked counted positions):
        FloatTensor[B] nats (x LongTensor[B, L], t and weight FloatTensor[B])."""
        loss_mask = counted(x, loss_mask)
        z = self.q_sample(x, t, loss_mask, generator)
        logp = call_denoiser(denoiser, z, t, labels, self.vocab_size)
        masked = (z == self.mask_id) & loss_mask
        target = torch.where(masked, x, torch.zeros_like(x))
        ce = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        ce_sum = (ce * masked).sum(-1)
        # where nothing is masked the term is exactly 0 (avoid 0 * inf at tiny t)
        return torch.where(masked.any(-1), weight * ce_sum, torch.zeros_like(ce_sum))

    def nelbo_at(self, denoiser, x: torch.Tensor, t: torch.Tensor, loss_mask: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-sample NELBO estimate of each sequence at given times: FloatTensor[B] in nats.

        Args:
            x: LongTensor[B, L]; t: FloatTensor[B]; loss_mask: BoolTensor[B, L] counted positions.
        """
        term = self.masked_nats(denoiser, x, t, self.loss_weight(t), loss_mask, labels, generator)
        return term + self.prior_nats(counted(x, loss_mask).sum(-1).to(term.dtype))

    def step_nats(self, denoiser, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                  loss_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Discrete step t -> s (FloatTensor[B] each): one z_t draw of the sum over masked positions of
        KL(q(z_s|z_t,x) || p(z_s|z_t)) = step_coefficient(s, t) * CE: FloatTensor[B] nats."""
        coef = self.step_coefficient(s.double(), t.double()).float()  # float64 (s, t) give the exact coefficient
        return self.masked_nats(denoiser, x, t.float(), coef, loss_mask, labels, generator)

    def loss(self, denoiser, x: torch.Tensor, loss_mask: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> LossResult:
        """Training loss: the NELBO in nats per counted token, t stratified across the batch.

        Args:
            x: LongTensor[B, L] clean tokens in 0..V-1 (other ids allowed where ``loss_mask`` is False).
            loss_mask: BoolTensor[B, L], True where a position counts. labels: LongTensor[B] or None.
        Returns:
            :class:`LossResult` with ``loss`` (scalar) and ``nelbo`` (the same value, detached).
        """
        loss_mask = counted(x, loss_mask)
        t = self.sample_t(x.shape[0], x.device, generator)
        per_seq = self.nelbo_at(denoiser, x, t, loss_mask, labels, generator=generator)
        loss = per_seq.sum() / loss_mask.sum().clamp_min(1)
        return LossResult(loss, loss.detach())

    # ------------------------------------------------------------------ sampling
    def reverse_probs(self, mu: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """Reverse step p(z_s | z_t = mask) from denoiser probabilities.

        Args:
            mu: FloatTensor[..., V] denoiser probabilities at masked positions; t > s.
        Returns:
            FloatTensor[..., V + 1]: unmask to each token, or (last column) stay masked.
        """
        p_unmask = self.unmask_probability(t, s)
        stay = torch.full_like(mu[..., :1], 1.0 - p_unmask)
        return torch.cat([mu * p_unmask, stay], dim=-1)
