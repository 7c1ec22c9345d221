"""GenMD4 (Shi et al. 2024): learnable, state-dependent masking schedules.

Token value i is kept with probability alpha_{t,i} = 1 - t^{w_i}, one learnable exponent w_i > 0
per vocabulary entry. With a_i(t) = -alpha'_{t,i}/(1 - alpha_{t,i}) = w_i / t, the continuous-time
NELBO of a sequence x is (a per-step KL expanded to first order in dt):

    NELBO(x) = E_t E_{z_t} sum_{n masked} [ a_{x_n}(t) (-log mu_n[x_n]) + sum_j mu_n[j] a_j(t) - a_{x_n}(t) ]

which reduces to the polynomial schedule's w/t * CE when all w_i are equal. z_t depends on w, so
the gradient for w has a score-function part; it is estimated with REINFORCE leave-one-out from
two forward samples at the same t:  1/2 (f_1 - f_2) (grad log q(z^1) - grad log q(z^2)).

Discrete time with T steps (s = (i-1)/T, t = i/T): a masked position unmasks to j with probability
r_j = (alpha_{s,j} - alpha_{t,j})/(1 - alpha_{t,j}) = 1 - (s/t)^{w_j} under the model and to x_n with
r_{x_n} under q, so each masked position contributes the exact step KL

    KL_n = -r_{x_n} log mu_n[x_n] + (1 - r_{x_n}) log((1 - r_{x_n}) / (1 - sum_j mu_n[j] r_j)),

which is the MaskedDiffusion step term when all w_j are equal (the second part vanishes). The prior
term is 0: alpha_1 = 0, every position is masked at t = 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .denoiser import call_denoiser
from .process import LossResult, ProcessBase, counted


class GenMD4(nn.Module, ProcessBase):
    """State-dependent masked diffusion with learnable exponents w (FloatTensor[V], via softplus).

    Implements :class:`dnadiff.diffusion.process.DiffusionProcess` (continuous time; the discrete-time
    NELBO is available for evaluation through ``discrete_nelbo_sum``).

    Args:
        vocab_size: V real tokens (mask id = V). init_w: initial exponent(s), scalar or list of V.
    """

    def __init__(self, vocab_size: int, init_w: float | list[float] = 1.0, antithetic: bool = True):
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.mask_id = int(vocab_size)
        self.antithetic = antithetic
        w0 = torch.as_tensor(init_w, dtype=torch.float32).expand(vocab_size).clone()
        self.raw_w = nn.Parameter(torch.log(torch.expm1(w0)))  # softplus^{-1}

    @property
    def w(self) -> torch.Tensor:
        """Exponents w: FloatTensor[V] (> 0)."""
        return F.softplus(self.raw_w)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Keep probability per token value: t FloatTensor[B] -> FloatTensor[B, V]."""
        return 1.0 - t[:, None].pow(self.w)

    def q_sample(self, x, t, loss_mask=None, generator=None) -> torch.Tensor:
        """z_t ~ q(z_t | x): x LongTensor[B, L], t FloatTensor[B] -> LongTensor[B, L]."""
        keep_p = self.alpha(t).detach().gather(1, x.clamp(0, self.vocab_size - 1))
        keep = torch.rand(x.shape, device=x.device, generator=generator) < keep_p
        if loss_mask is not None:
            keep = keep | ~loss_mask
        return torch.where(keep, x, torch.full_like(x, self.mask_id))

    def log_q(self, z, x, t, loss_mask) -> torch.Tensor:
        """log q(z_t | x) summed over counted positions: FloatTensor[B] (differentiable in w)."""
        w_x = self.w[x.clamp(0, self.vocab_size - 1)]  # [B, L]
        log_t = torch.log(t)[:, None]
        masked = z == self.mask_id
        log_masked = w_x * log_t
        log_kept = torch.log(-torch.expm1(log_masked).clamp_max(-1e-12))  # log(1 - t^w)
        per = torch.where(masked, log_masked, log_kept)
        return (per * loss_mask).sum(-1)

    def integrand(self, logp, x, z, t, loss_mask) -> torch.Tensor:
        """The NELBO integrand f(z_t, t) per sequence: FloatTensor[B] (nats; see module doc)."""
        a = self.w[None, :] / t[:, None]  # [B, V]
        masked = (z == self.mask_id) & loss_mask
        xs = torch.where(masked, x, torch.zeros_like(x))
        a_x = a.gather(1, xs)  # [B, L]
        ce = -logp.gather(-1, xs.unsqueeze(-1)).squeeze(-1)
        mix = (logp.exp() * a[:, None, :]).sum(-1)  # sum_j mu_j a_j
        per = a_x * ce + mix - a_x
        return (per * masked).sum(-1)

    def prior_nats(self, n_tokens: torch.Tensor) -> torch.Tensor:
        """KL(q(z_1|x) || p(z_1)) = 0: alpha_1 = 0 for every token value."""
        return torch.zeros_like(n_tokens)

    def nelbo_at(self, denoiser, x, t, loss_mask=None, labels=None, generator=None) -> torch.Tensor:
        """One-sample NELBO estimate at times t (FloatTensor[B]): the integrand at one z_t draw, FloatTensor[B]."""
        loss_mask = counted(x, loss_mask)
        z = self.q_sample(x, t, loss_mask, generator)
        return self.integrand(call_denoiser(denoiser, z, t, labels, self.vocab_size), x, z, t, loss_mask)

    def step_nats(self, denoiser, x, s, t, loss_mask=None, labels=None, generator=None) -> torch.Tensor:
        """Discrete step t -> s (FloatTensor[B] each): one z_t draw of the exact per-position KLs of the
        module doc summed over the masked positions: FloatTensor[B] nats."""
        loss_mask = counted(x, loss_mask)
        r = (1.0 - (s.double()[:, None] / t.double()[:, None]) ** self.w.detach().double()).float()  # [B, V] unmasking probability of each value
        t = t.float()
        z = self.q_sample(x, t, loss_mask, generator)
        logp = call_denoiser(denoiser, z, t, labels, self.vocab_size)
        masked = (z == self.mask_id) & loss_mask
        xs = torch.where(masked, x, torch.zeros_like(x))
        r_x = r.gather(1, xs)  # [B, L]
        stay_q = 1.0 - r_x
        stay_p = (1.0 - (logp.exp() * r[:, None, :]).sum(-1)).clamp_min(0.0)
        ce = -logp.gather(-1, xs.unsqueeze(-1)).squeeze(-1)
        kl = r_x * ce + torch.xlogy(stay_q, stay_q) - torch.xlogy(stay_q, stay_p)
        return (kl * masked).sum(-1)

    def _two_sample_terms(self, denoiser, x, loss_mask, labels, generator):
        t = self.sample_t(x.shape[0], x.device, generator)
        fs, lqs = [], []
        for _ in range(2):
            z = self.q_sample(x, t, loss_mask, generator)
            logp = call_denoiser(denoiser, z, t, labels, self.vocab_size)
            fs.append(self.integrand(logp, x, z, t, loss_mask))
            lqs.append(self.log_q(z, x, t, loss_mask))
        return fs, lqs

    def loss(self, denoiser, x, loss_mask=None, labels=None, generator=None) -> LossResult:
        """Surrogate loss and true NELBO, both per counted token.

        Returns:
            :class:`LossResult`: ``loss.backward()`` gives the pathwise gradient for the denoiser and w
            plus the leave-one-out REINFORCE gradient for w; ``nelbo`` (detached) is the NELBO estimate.
        """
        loss_mask = counted(x, loss_mask)
        (f1, f2), (lq1, lq2) = self._two_sample_terms(denoiser, x, loss_mask, labels, generator)
        f = 0.5 * (f1 + f2)
        score = 0.5 * (f1 - f2).detach() * (lq1 - lq2)
        n = loss_mask.sum().clamp_min(1)
        return LossResult((f + score).sum() / n, f.detach().sum() / n)

    def reverse_probs(self, mu: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """p(z_s | z_t = mask): unmask to j with mu_j (alpha_{s,j} - alpha_{t,j})/(1 - alpha_{t,j}),
        else stay masked, in float64. mu: FloatTensor[..., V] -> DoubleTensor[..., V + 1].

        Caching in the sampler stays exact: with a state-dependent schedule the optimal denoiser depends
        on t, so a time-conditioned denoiser is never cached (``denoiser.time_conditioned``)."""
        w = self.w.detach().double()
        mu = mu.double()
        one_minus_t, one_minus_s = t ** w, s ** w  # 1 - alpha
        p_unmask = (one_minus_t - one_minus_s) / one_minus_t.clamp_min(1e-12)
        unmask = mu * p_unmask
        return torch.cat([unmask, 1.0 - unmask.sum(-1, keepdim=True)], dim=-1)
