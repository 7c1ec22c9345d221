"""First-hitting sampler (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic
masked models and exploit inaccurate categorical sampling"): exact, with no wasted steps.

Under a state-independent schedule each position n of the forward process is masked at its own
time tau_n, and u_n = 1 - alpha(tau_n) is uniform on [0, 1). Running the reverse process means
revealing the positions in decreasing order of tau_n, each from the denoiser's distribution at
the state just before its reveal. The sampler draws every u_n up front and then makes one
denoiser call per *reveal event*:

* ``steps=None``: every position is its own event (the continuous-time reverse process; L calls
  for L masked positions, no time grid). The denoiser sees t = tau_n, found by bisection on
  alpha, so time-conditioned denoisers are sampled exactly too.
* ``steps=T``: the positions whose tau_n fall in the same step (t_{k+1}, t_k] of the T-step grid
  form one event, revealed together from one call at t_k: exactly the ancestral sampler's
  distribution, with one call per non-empty step (at most min(T, L)) and no per-step work for
  empty steps.

Sequences are batched: call j evaluates every sequence at its own j-th event (its own t). The
end points match the ELBO: positions with u_n >= 1 - alpha(1) start as uniform tokens (prior) and
those with u_n < 1 - alpha(0) are decoded uniformly at the end (clipped schedules only).
"""
from __future__ import annotations

import torch

from .guidance import guided_tokens
from .reverse import MuCache, SampleStats, categorical, state_independent, time_grid


def hitting_times(schedule, level: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """tau with 1 - alpha(tau) = level, by bisection on the decreasing alpha: float64 tensor like ``level``."""
    lo = torch.zeros_like(level, dtype=torch.float64)
    hi = torch.ones_like(level, dtype=torch.float64)
    target = 1.0 - level.double()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        later = schedule.alpha(mid) > target  # alpha(mid) still above: tau is later than mid
        lo = torch.where(later, mid, lo)
        hi = torch.where(later, hi, mid)
    return 0.5 * (lo + hi)


@torch.no_grad()
def first_hitting_window(process, denoiser, z: torch.Tensor, steps: int | None = None, grid: str = "uniform",
                         cached: bool = True, labels=None, guidance: float = 0.0, null_label=None,
                         temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
                         stats: SampleStats | None = None, guide=None) -> torch.Tensor:
    """Reveal the masked positions of z event by event: LongTensor[N, L] -> LongTensor[N, L].

    Args:
        process: a MaskedDiffusion (state-independent schedule).
        steps: None (one position per event) or T (positions grouped by the T-step ``grid``).
        cached: unused (every event changes the state, so nothing could be reused); kept for a
            uniform signature.
        guide: a :class:`~.guidance.ClassifierGuidance` reweighting each reveal (exact draws from
            p(x | y) with ``steps=None``, gamma = 1 and a noisy classifier).
    """
    del cached
    if not state_independent(process):
        raise ValueError("the first-hitting sampler needs a state-independent schedule (not GenMD4): use ancestral")
    N, L = z.shape
    mask_id, V = process.mask_id, process.vocab_size
    a0, a1 = process.end_alphas()
    masked = z == mask_id
    u = torch.rand(N, L, device=z.device, dtype=torch.float64, generator=generator)
    prior_kept = masked & (u >= 1.0 - a1)
    never = masked & (u < 1.0 - a0)
    pending = masked & ~prior_kept & ~never
    uniform = torch.randint(V, (N, L), device=z.device, generator=generator)
    z = torch.where(prior_kept, uniform, z)
    BIG = torch.iinfo(torch.long).max
    if steps is None:
        key = (-u).argsort(-1).argsort(-1)  # rank by decreasing u = decreasing tau
        times = hitting_times(process.schedule, u).float()
    else:
        ts = time_grid(steps, grid)
        levels = 1.0 - process.schedule.alpha(torch.tensor(ts, dtype=torch.float64, device=z.device))
        ascending = levels[1:].flip(0).contiguous()  # m_T <= ... <= m_1
        key = steps - torch.searchsorted(ascending, u.contiguous(), right=True)  # step k: m_{k+1} <= u < m_k
        grid_t = torch.tensor(ts, dtype=torch.float32, device=z.device)
    cache = MuCache(process, denoiser, labels, guidance, null_label, temperature, top_p, stats)
    rows = torch.arange(N, device=z.device)
    while pending.any():
        current = torch.where(pending, key, torch.full_like(key, BIG)).min(-1).values  # [N]
        active = current < BIG
        reveal = pending & (key == current[:, None])
        if steps is None:
            first = reveal.float().argmax(-1)
            t = times[rows, first]
        else:
            t = grid_t[current.clamp(0, steps - 1)]
        mu = cache.get(z, t, active)
        probs = guided_tokens(guide, z, mu, reveal, t, stats)
        z = z.clone()
        z[reveal] = categorical(probs, generator)
        pending &= ~reveal
    return torch.where(never, uniform, z)
