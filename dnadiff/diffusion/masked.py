"""Masked (absorbing-state) diffusion: forward process, ELBO and sampling entry point.

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
from .schedules import MaskingSchedule, get_schedule


class MaskedDiffusion:
    """Masked diffusion over a vocabulary of ``vocab_size`` real tokens (mask id = vocab_size).

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
        self.last_sample_stats: dict = {}

    def __repr__(self) -> str:
        return f"MaskedDiffusion(vocab_size={self.vocab_size}, schedule={self.schedule!r}, num_steps={self.num_steps})"

    # ------------------------------------------------------------------ forward process
    def sample_t(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Times in (0, 1] for a batch: FloatTensor[B], stratified when ``antithetic``
        (t_b = 1 - ((u + b/B) mod 1)); with ``num_steps=T`` snapped up to the grid {1/T, ..., 1}."""
        if self.antithetic:
            u = torch.rand(1, device=device, generator=generator)
            x = (u + torch.arange(batch, device=device) / batch) % 1.0
        else:
            x = torch.rand(batch, device=device, generator=generator)
        t = 1.0 - x
        if self.num_steps is not None:
            t = torch.ceil(t * self.num_steps).clamp(1, self.num_steps) / self.num_steps
        return t

    def keep_probability(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """alpha(t) broadcast to the tokens: FloatTensor[B, L] (state-independent schedules)."""
        return self.schedule.alpha(t)[:, None].expand(x.shape)

    def q_sample(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw z_t ~ q(z_t | x): each counted token kept with probability alpha(t), else the mask id.

        Args:
            x: LongTensor[B, L]. t: FloatTensor[B]. mask: BoolTensor[B, L] of counted positions
            (others are never masked). Returns LongTensor[B, L].
        """
        keep = torch.rand(x.shape, device=x.device, generator=generator) < self.keep_probability(x, t)
        if mask is not None:
            keep = keep | ~mask
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

    def nelbo_at(self, denoiser, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """One-sample NELBO estimate of each sequence at given times: FloatTensor[B] in nats.

        Args:
            x: LongTensor[B, L]; t: FloatTensor[B]; mask: BoolTensor[B, L] counted positions;
            weight: FloatTensor[B] overriding ``loss_weight(t)``.
        """
        mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        z = self.q_sample(x, t, mask, generator)
        logp = call_denoiser(denoiser, z, t, labels, self.vocab_size)
        masked = (z == self.mask_id) & mask
        target = torch.where(masked, x, torch.zeros_like(x))
        ce = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        ce_sum = (ce * masked).sum(-1)
        w = self.loss_weight(t) if weight is None else weight
        # where nothing is masked the term is exactly 0 (avoid 0 * inf at tiny t)
        term = torch.where(masked.any(-1), w * ce_sum, torch.zeros_like(ce_sum))
        return term + self.prior_nats(mask.sum(-1).to(term.dtype))

    def loss(self, denoiser, x: torch.Tensor, mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss: the NELBO in nats per counted token (scalar), t stratified across the batch.

        Args:
            x: LongTensor[B, L] clean tokens in 0..V-1 (other ids allowed where ``mask`` is False).
            mask: BoolTensor[B, L], True where a position counts. labels: LongTensor[B] or None.
        """
        mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        t = self.sample_t(x.shape[0], x.device, generator)
        per_seq = self.nelbo_at(denoiser, x, t, mask, labels, generator=generator)
        return per_seq.sum() / mask.sum().clamp_min(1)

    @torch.no_grad()
    def nelbo_draws(self, denoiser, x: torch.Tensor, num_t: int = 16, mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """K Monte-Carlo NELBO estimates per sequence with stratified t: FloatTensor[B, K] in nats.

        Draw k of sequence b uses t = 1 - ((u_b + k/K) mod 1) (snapped to the grid in discrete time).
        """
        B = x.shape[0]
        u = torch.rand(B, device=x.device, generator=generator)
        out = []
        for k in range(num_t):
            t = 1.0 - (u + k / num_t) % 1.0
            if self.num_steps is not None:
                t = torch.ceil(t * self.num_steps).clamp(1, self.num_steps) / self.num_steps
            out.append(self.nelbo_at(denoiser, x, t, mask, labels, generator=generator))
        return torch.stack(out, dim=1)

    def nelbo(self, denoiser, x: torch.Tensor, num_t: int = 16, mask: torch.Tensor | None = None,
              labels: torch.Tensor | None = None, exact_steps: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sequence NELBO in nats: FloatTensor[B].

        ``num_t`` Monte-Carlo draws of t (continuous time, or this object's discrete T), or, with
        ``exact_steps=T``, the exact sum over all T steps of the discrete-time NELBO (one z_t draw
        per step).
        """
        if exact_steps is not None:
            return self.discrete_nelbo_sum(denoiser, x, exact_steps, mask, labels, generator)
        return self.nelbo_draws(denoiser, x, num_t, mask, labels, generator).mean(1)

    @torch.no_grad()
    def discrete_nelbo_sum(self, denoiser, x: torch.Tensor, steps: int, mask: torch.Tensor | None = None,
                           labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Discrete-time NELBO with T = ``steps``, summed exactly over the steps: FloatTensor[B] nats."""
        B = x.shape[0]
        total = torch.zeros(B, device=x.device)
        prior = None
        for i in range(1, steps + 1):
            t = torch.full((B,), i / steps, device=x.device)
            coef = self.step_coefficient(torch.full((B,), (i - 1) / steps, dtype=torch.float64, device=x.device),
                                         torch.full((B,), i / steps, dtype=torch.float64, device=x.device))
            per = self.nelbo_at(denoiser, x, t, mask, labels, weight=coef.to(t.dtype), generator=generator)
            if prior is None:
                m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
                prior = self.prior_nats(m.sum(-1).float())
            total += per - prior
        return total + prior

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

    def sample(self, denoiser, num: int, length: int, steps: int = 128, sampler: str = "cached", **kwargs) -> torch.Tensor:
        """Generate ``num`` sequences of ``length`` tokens: LongTensor[num, length] over 0..V-1.

        See :func:`dnadiff.diffusion.sampling.sample` for the keyword options (grid, temperature,
        top_p, fixed / fixed_mask, labels / guidance / null_label, max_context / block, generator,
        return_stats). Denoiser-call counts of the last run are in ``self.last_sample_stats``.
        """
        from .sampling import sample

        return sample(self, denoiser, num=num, length=length, steps=steps, sampler=sampler, **kwargs)
