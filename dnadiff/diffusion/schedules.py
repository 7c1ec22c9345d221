"""Masking schedules: alpha(t) = probability that a token is still unmasked at time t.

Every schedule is a tiny object with ``alpha(t)``, ``dalpha(t)`` (d alpha / dt) and the
continuous-time ELBO weight ``weight(t) = -alpha'(t) / (1 - alpha(t))`` (>= 0; MD4 writes it
with the opposite sign). All schedules run from alpha(0) = 1 (clean data) down to alpha(1) = 0
(all masked), except MDLM's log-linear, which stops at alpha(1) = eps; the ELBO adds the
matching prior term for that case (see ``MaskedDiffusion``).

The linear, cosine, polynomial and geometric schedules are MD4's with its epsilon set to 0.
MD4 itself clips alpha to [eps, 1 - eps] (eps = 1e-4): alpha_eps(t) = (1 - 2 eps) alpha(t) + eps,
and adds a reconstruction term for the positions still masked at t = 0. That form is
:class:`ClippedSchedule` (``get_schedule("cosine", clip=1e-4)``); ``MaskedDiffusion`` adds both
end terms (prior at t = 1, reconstruction at t = 0) and its samplers start from the same prior
and finish with the same decoder, so bound and sampler describe one generative model.

Shapes: ``t`` is any FloatTensor (typically [B]); the outputs have the same shape.
"""
from __future__ import annotations

import math

import torch


class MaskingSchedule:
    """Base class. Subclasses define ``alpha`` and ``dalpha``; ``weight`` may be overridden
    with a numerically better closed form."""

    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight -alpha'(t) / (1 - alpha(t)) (non-negative)."""
        return -self.dalpha(t) / (1.0 - self.alpha(t)).clamp_min(1e-12)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class LinearSchedule(MaskingSchedule):
    """alpha(t) = 1 - t; weight 1 / t."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def dalpha(self, t):
        return -torch.ones_like(t)

    def weight(self, t):
        return 1.0 / t


class CosineSchedule(MaskingSchedule):
    """MD4's cosine: alpha(t) = 1 - cos(pi/2 (1 - t)); weight pi/2 * tan(pi/2 (1 - t))."""

    name = "cosine"

    def alpha(self, t):
        return 1.0 - torch.cos(0.5 * math.pi * (1.0 - t))

    def dalpha(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * (1.0 - t))

    def weight(self, t):
        return 0.5 * math.pi * torch.tan(0.5 * math.pi * (1.0 - t))


class PolynomialSchedule(MaskingSchedule):
    """alpha(t) = 1 - t**w; weight w / t. ``w = 1`` is the linear schedule."""

    name = "polynomial"

    def __init__(self, w: float = 2.0):
        if w <= 0:
            raise ValueError(f"polynomial exponent must be > 0, got {w}")
        self.w = float(w)

    def alpha(self, t):
        return 1.0 - t.pow(self.w)

    def dalpha(self, t):
        return -self.w * t.pow(self.w - 1.0)

    def weight(self, t):
        return self.w / t


class GeometricSchedule(MaskingSchedule):
    """MD4's geometric schedule, rescaled to hit the end points exactly.

    sigma(t) = sigma_min^(1-t) sigma_max^t,  a(t) = exp(-sigma(t)),
    alpha(t) = (a(t) - a(1)) / (a(0) - a(1)), so alpha(0) = 1 and alpha(1) = 0.
    """

    name = "geometric"

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 10.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def _sigma(self, t):
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def alpha(self, t):
        a0, a1 = math.exp(-self.sigma_min), math.exp(-self.sigma_max)
        return (torch.exp(-self._sigma(t)) - a1) / (a0 - a1)

    def dalpha(self, t):
        a0, a1 = math.exp(-self.sigma_min), math.exp(-self.sigma_max)
        sigma = self._sigma(t)
        dsigma = sigma * math.log(self.sigma_max / self.sigma_min)
        return -torch.exp(-sigma) * dsigma / (a0 - a1)

    def weight(self, t):
        # -alpha' / (1 - alpha) = exp(-s) s' / (exp(-sigma_min) - exp(-s)) = s' / expm1(s - sigma_min)
        sigma = self._sigma(t)
        dsigma = sigma * math.log(self.sigma_max / self.sigma_min)
        return dsigma / torch.expm1(sigma - self.sigma_min).clamp_min(1e-30)


class LogLinearSchedule(MaskingSchedule):
    """MDLM's log-linear noise: sigma(t) = -log(1 - (1 - eps) t), so alpha(t) = 1 - (1 - eps) t.

    alpha(1) = eps > 0: the prior p(z_1) keeps each position with probability eps as a uniform
    real token (mask otherwise); the ELBO's prior term n_tokens * eps * log V is its KL, and the
    samplers draw z_1 from this same prior (MDLM's code starts from all-mask and drops the term;
    here bound and sampler agree). The weight is exactly 1 / t, as in MDLM (dsigma / expm1(sigma)).
    """

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        if not 0 <= eps < 1:
            raise ValueError("need 0 <= eps < 1")
        self.eps = float(eps)

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t):
        return -(1.0 - self.eps) * torch.ones_like(t)

    def weight(self, t):
        return 1.0 / t


class ClippedSchedule(MaskingSchedule):
    """MD4's clipped form of a schedule: alpha_eps(t) = (1 - 2 eps) alpha(t) + eps, in [eps, 1 - eps].

    alpha_eps(0) = 1 - eps: a position is still masked at t = 0 with probability eps, and the
    generative model decodes it uniformly over the V tokens (MD4's reconstruction term,
    n_tokens * eps * log V). alpha_eps(1) = eps: the prior at t = 1 keeps a position with
    probability eps as a uniform token (prior term n_tokens * eps * log V).
    """

    def __init__(self, base: MaskingSchedule, eps: float = 1e-4):
        if not 0 < eps < 0.5:
            raise ValueError(f"clip eps must be in (0, 0.5), got {eps}")
        self.base = base
        self.eps = float(eps)
        self.name = f"{base.name}-clipped"

    def alpha(self, t):
        return (1.0 - 2.0 * self.eps) * self.base.alpha(t) + self.eps

    def dalpha(self, t):
        return (1.0 - 2.0 * self.eps) * self.base.dalpha(t)

    def weight(self, t):
        # -(1-2e) a' / ((1-2e)(1-a) + e): no closed form shared with the base, computed directly
        return -self.dalpha(t) / (1.0 - self.alpha(t))


SCHEDULES = {
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "polynomial": PolynomialSchedule,
    "geometric": GeometricSchedule,
    "loglinear": LogLinearSchedule,
}


def get_schedule(name: str | MaskingSchedule, clip: float | None = None, **kwargs) -> MaskingSchedule:
    """Build a schedule by name (``linear``, ``cosine``, ``polynomial``, ``geometric``, ``loglinear``).

    ``clip=eps`` wraps it in MD4's clipped form :class:`ClippedSchedule` (MD4 uses eps = 1e-4).
    """
    if isinstance(name, MaskingSchedule):
        schedule = name
    else:
        try:
            cls = SCHEDULES[name]
        except KeyError:
            raise ValueError(f"unknown masking schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
        schedule = cls(**kwargs)
    return ClippedSchedule(schedule, clip) if clip else schedule
