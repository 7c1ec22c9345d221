"""GenMD4 (Shi et al. 2024): learnable, state-dependent masking schedules.

Token value i is kept with probability alpha_{t,i} = 1 - t^{w_i}, one learnable exponent w_i > 0
per vocabulary entry. With a_i(t) = -alpha'_{t,i}/(1 - alpha_{t,i}) = w_i / t, the continuous-time
NELBO of a sequence x is (a per-step KL expanded to first order in dt):

    NELBO(x) = E_t E_{z_t} sum_{n masked} [ a_{x_n}(t) (-log mu_n[x_n]) + sum_j mu_n[j] a_j(t) - a_{x_n}(t) ]

which reduces to the polynomial schedule's w/t * CE when all w_i are equal. z_t depends on w, so
the gradient for w has a score-function part; it is estimated with REINFORCE leave-one-out from
two forward samples at the same t:  1/2 (f_1 - f_2) (grad log q(z^1) - grad log q(z^2)).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .denoiser import call_denoiser


class GenMD4(nn.Module):
    """State-dependent masked diffusion with learnable exponents w (FloatTensor[V], via softplus).

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
        self.last_sample_stats: dict = {}

    @property
    def w(self) -> torch.Tensor:
        """Exponents w: FloatTensor[V] (> 0)."""
        return F.softplus(self.raw_w)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Keep probability per token value: t FloatTensor[B] -> FloatTensor[B, V]."""
        return 1.0 - t[:, None].pow(self.w)

    def sample_t(self, batch: int, device=None, generator=None) -> torch.Tensor:
        """Times in (0, 1]: FloatTensor[B] (stratified when ``antithetic``)."""
        if self.antithetic:
            u = torch.rand(1, device=device, generator=generator)
            return 1.0 - (u + torch.arange(batch, device=device) / batch) % 1.0
        return 1.0 - torch.rand(batch, device=device, generator=generator)

    def q_sample(self, x, t, mask=None, generator=None) -> torch.Tensor:
        """z_t ~ q(z_t | x): x LongTensor[B, L], t FloatTensor[B] -> LongTensor[B, L]."""
        keep_p = self.alpha(t).detach().gather(1, x.clamp(0, self.vocab_size - 1))
        keep = torch.rand(x.shape, device=x.device, generator=generator) < keep_p
        if mask is not None:
            keep = keep | ~mask
        return torch.where(keep, x, torch.full_like(x, self.mask_id))

    def log_q(self, z, x, t, mask) -> torch.Tensor:
        """log q(z_t | x) summed over counted positions: FloatTensor[B] (differentiable in w)."""
        w_x = self.w[x.clamp(0, self.vocab_size - 1)]  # [B, L]
        log_t = torch.log(t)[:, None]
        masked = z == self.mask_id
        log_masked = w_x * log_t
        log_kept = torch.log(-torch.expm1(log_masked).clamp_max(-1e-12))  # log(1 - t^w)
        per = torch.where(masked, log_masked, log_kept)
        return (per * mask).sum(-1)

    def integrand(self, logp, x, z, t, mask) -> torch.Tensor:
        """The NELBO integrand f(z_t, t) per sequence: FloatTensor[B] (nats; see module doc)."""
        a = self.w[None, :] / t[:, None]  # [B, V]
        masked = (z == self.mask_id) & mask
        xs = torch.where(masked, x, torch.zeros_like(x))
        a_x = a.gather(1, xs)  # [B, L]
        ce = -logp.gather(-1, xs.unsqueeze(-1)).squeeze(-1)
        mix = (logp.exp() * a[:, None, :]).sum(-1)  # sum_j mu_j a_j
        per = a_x * ce + mix - a_x
        return (per * masked).sum(-1)

    def _two_sample_terms(self, denoiser, x, mask, labels, generator):
        t = self.sample_t(x.shape[0], x.device, generator)
        fs, lqs = [], []
        for _ in range(2):
            z = self.q_sample(x, t, mask, generator)
            logp = call_denoiser(denoiser, z, t, labels, self.vocab_size)
            fs.append(self.integrand(logp, x, z, t, mask))
            lqs.append(self.log_q(z, x, t, mask))
        return fs, lqs

    def loss(self, denoiser, x, mask=None, labels=None, generator=None):
        """Surrogate loss and true NELBO, both per counted token.

        Returns:
            (surrogate, nelbo): scalar tensors. ``surrogate.backward()`` gives the pathwise gradient
            for the denoiser and w plus the leave-one-out REINFORCE gradient for w;
            ``nelbo`` (detached) is the NELBO estimate to report.
        """
        mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        (f1, f2), (lq1, lq2) = self._two_sample_terms(denoiser, x, mask, labels, generator)
        f = 0.5 * (f1 + f2)
        score = 0.5 * (f1 - f2).detach() * (lq1 - lq2)
        n = mask.sum().clamp_min(1)
        return (f + score).sum() / n, f.detach().sum() / n

    @torch.no_grad()
    def nelbo(self, denoiser, x, num_t: int = 16, mask=None, labels=None, generator=None) -> torch.Tensor:
        """Per-sequence NELBO in nats: FloatTensor[B], ``num_t`` stratified draws of t."""
        mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        u = torch.rand(x.shape[0], device=x.device, generator=generator)
        total = torch.zeros(x.shape[0], device=x.device)
        for k in range(num_t):
            t = 1.0 - (u + k / num_t) % 1.0
            z = self.q_sample(x, t, mask, generator)
            total += self.integrand(call_denoiser(denoiser, z, t, labels, self.vocab_size), x, z, t, mask)
        return total / num_t

    def reverse_probs(self, mu: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """p(z_s | z_t = mask): unmask to j with mu_j (alpha_{s,j} - alpha_{t,j})/(1 - alpha_{t,j}),
        else stay masked, in float64. mu: FloatTensor[..., V] -> DoubleTensor[..., V + 1]."""
        w = self.w.detach().double()
        mu = mu.double()
        one_minus_t, one_minus_s = t ** w, s ** w  # 1 - alpha
        p_unmask = (one_minus_t - one_minus_s) / one_minus_t.clamp_min(1e-12)
        unmask = mu * p_unmask
        return torch.cat([unmask, 1.0 - unmask.sum(-1, keepdim=True)], dim=-1)

    def sample(self, denoiser, num: int, length: int, steps: int = 128, sampler: str = "cached", **kwargs):
        """Generate LongTensor[num, length]; same options as :func:`dnadiff.diffusion.sampling.sample`.

        Caching stays exact: with a state-dependent schedule the optimal denoiser depends on t, so
        a time-conditioned denoiser is never cached (``denoiser.time_conditioned``).
        """
        from .sampling import sample

        return sample(self, denoiser, num=num, length=length, steps=steps, sampler=sampler, **kwargs)
