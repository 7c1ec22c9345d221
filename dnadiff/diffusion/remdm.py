"""ReMDM remasking sampler (Wang et al. 2025, "Remasking discrete diffusion models with
inference-time scaling"): generated tokens may be masked again, so more steps than positions
keep improving the sample.

Step t -> s (alpha_t = alpha(t) <= alpha_s = alpha(s)) with remasking rate sigma_t:

    z_t = token x (generated):  stay x with probability 1 - sigma_t, back to the mask with sigma_t;
    z_t = mask:                 unmask to j with probability mu_j (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t),
                                stay masked with (1 - alpha_s - sigma_t alpha_t) / (1 - alpha_t),

valid for 0 <= sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t). This non-Markovian forward
process has the same marginals q(z_t | x) as masked diffusion for every such sigma (so the
model's training is unchanged); sigma = 0 is the ancestral step. Strategies and the published
defaults (kuleshov-group/remdm scripts, used with top-p 0.9 and 1024 steps for L = 1024):

* ``cap``:     sigma_t = min(eta, sigma_max), eta = 0.008;
* ``rescale``: sigma_t = eta * sigma_max, eta = 0.015;
* ``loop``:    eta = 0.02, t_on = 0.55, t_off = 0.05, alpha_on = 0.9: on (t_on, 1] an ancestral
  path from alpha = 0 to alpha_on (alpha linear in t), on (t_off, t_on] alpha is held at alpha_on
  and every step remasks with sigma = eta (tokens are revised), on [0, t_off] an ancestral path
  from alpha_on to 1. ``loop`` uses this alpha path instead of the process's schedule (as ReMDM
  does; the denoiser should be time-agnostic).

Fixed positions (prefix, template) are never remasked. With the exact joint posterior every sigma
gives the data distribution; with a real denoiser's factorised mu, positions revealed in the same
step are drawn independently, and remasking keeps such steps frequent however many steps are
used, so ReMDM is not an exact sampler of the model for eta > 0 (it trades that for revising
tokens). eta = 0 gives the ancestral sampler's step exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .reverse import (MuCache, SampleStats, categorical, decode_remaining, start_from_prior, state_independent,
                      time_grid)

STRATEGIES = ("cap", "rescale", "loop")
DEFAULT_ETA = {"cap": 0.008, "rescale": 0.015, "loop": 0.02}


@dataclass
class ReMDMOptions:
    """ReMDM settings; ``eta`` None means the published default of the strategy."""

    strategy: str = "loop"
    eta: float | None = None
    t_on: float = 0.55
    t_off: float = 0.05
    alpha_on: float = 0.9

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown ReMDM strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if self.eta is None:
            self.eta = DEFAULT_ETA[self.strategy]
        if self.eta < 0:
            raise ValueError(f"ReMDM eta must be >= 0, got {self.eta}")
        if not 0 <= self.t_off < self.t_on <= 1 or not 0 < self.alpha_on < 1:
            raise ValueError("ReMDM loop needs 0 <= t_off < t_on <= 1 and 0 < alpha_on < 1")
        if self.strategy == "loop" and self.eta > (1 - self.alpha_on) / self.alpha_on:
            raise ValueError(f"ReMDM loop eta must be <= (1 - alpha_on) / alpha_on = {(1 - self.alpha_on) / self.alpha_on:.4g}")


def sigma_max(alpha_t: float, alpha_s: float) -> float:
    """Largest valid remasking probability min(1, (1 - alpha_s) / alpha_t) (1 when alpha_t = 0)."""
    return 1.0 if alpha_t <= 0 else min(1.0, (1.0 - alpha_s) / alpha_t)


def remdm_step(alpha_t: float, alpha_s: float, sigma: float) -> tuple[float, float]:
    """(remask probability of a generated token, unmask probability of a masked position) of one step."""
    if alpha_t >= 1.0:
        return sigma, 1.0
    return sigma, (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)


def loop_alpha(t: float, opts: ReMDMOptions) -> float:
    """ReMDM-loop's alpha path: 0 -> alpha_on on [t_on, 1], alpha_on on [t_off, t_on], alpha_on -> 1 on [0, t_off]."""
    if t >= opts.t_on:
        return (1.0 - t) * opts.alpha_on / (1.0 - opts.t_on) if opts.t_on < 1 else opts.alpha_on
    if t >= opts.t_off:
        return opts.alpha_on
    return 1.0 - t * (1.0 - opts.alpha_on) / opts.t_off


def step_schedule(process, steps: int, opts: ReMDMOptions) -> list[tuple[float, float, float]]:
    """Per step k of the uniform grid: (t_k, remask probability, unmask probability), in float64."""
    ts = time_grid(steps, "uniform")
    out = []
    for t, s in zip(ts[:-1], ts[1:]):
        if opts.strategy == "loop":
            if opts.t_off < t <= opts.t_on:
                a = opts.alpha_on
                out.append((t, *remdm_step(a, a, opts.eta)))
            else:
                out.append((t, *remdm_step(loop_alpha(t, opts), loop_alpha(s, opts), 0.0)))
            continue
        a = process.schedule.alpha(torch.tensor([t, s], dtype=torch.float64))
        a_t, a_s = float(a[0]), float(a[1])
        cap = sigma_max(a_t, a_s)
        sigma = min(opts.eta, cap) if opts.strategy == "cap" else opts.eta * cap
        out.append((t, *remdm_step(a_t, a_s, sigma if a_t > 0 else 0.0)))
    return out


@torch.no_grad()
def remdm_window(process, denoiser, z: torch.Tensor, steps: int, options: ReMDMOptions | None = None,
                 cached: bool = True, labels=None, guidance: float = 0.0, null_label=None, temperature: float = 1.0,
                 top_p: float = 1.0, generator: torch.Generator | None = None,
                 stats: SampleStats | None = None) -> torch.Tensor:
    """ReMDM on a partially masked batch z: LongTensor[N, L] -> LongTensor[N, L] with no mask left.

    Positions not masked on entry are fixed. ``cached``: reuse mu for rows whose state did not
    change (time-agnostic denoisers only).
    """
    if not state_independent(process):
        raise ValueError("ReMDM needs a state-independent schedule (not GenMD4): use ancestral")
    opts = options or ReMDMOptions()
    mask_id = process.mask_id
    free = z == mask_id
    z = start_from_prior(process, z, generator)
    cache = MuCache(process, denoiser, labels, guidance, null_label, temperature, top_p, stats)
    N = z.shape[0]
    stale = torch.ones(N, dtype=torch.bool, device=z.device)
    for t, remask_p, unmask_p in step_schedule(process, steps, opts):
        is_masked = z == mask_id
        generated = free & ~is_masked
        u = torch.rand(z.shape, device=z.device, dtype=torch.float64, generator=generator)
        remask = generated & (u < remask_p)
        reveal = is_masked & (u < unmask_p)
        if not (remask.any() or reveal.any()):
            continue
        new_z = z.clone()
        if reveal.any():
            need = reveal.any(-1) & (stale if cached else torch.ones_like(stale))
            mu = cache.get(z, t, need) if need.any() else cache.mu
            stale &= ~need
            new_z[reveal] = categorical(mu[reveal], generator)
        new_z[remask] = mask_id
        stale |= (new_z != z).any(-1)
        z = new_z
    return decode_remaining(process, z, generator)
