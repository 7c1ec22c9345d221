"""Samplers for masked diffusion: ancestral, cached, semi-autoregressive blocks, guidance.

All samplers walk a time grid 1 = t_0 > t_1 > ... > t_T = 0. At each step every masked
position independently unmasks to token j or stays masked with the probabilities of the
process's ``reverse_probs(mu, t, s)``; unmasked and fixed positions are never touched.

*cached*: when the denoiser is not time-conditioned (``denoiser.time_conditioned`` is False),
mu depends on z_t only, so a row whose tokens did not change since its last evaluation reuses
it: the samples have exactly the ancestral distribution, with at most min(T, L) + 1 denoiser
calls instead of T.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .denoiser import call_denoiser


def time_grid(steps: int, grid: str = "uniform") -> list[float]:
    """Decreasing times t_0 = 1 > ... > t_T = 0 (``steps`` + 1 values).

    ``uniform``: t_k = 1 - k/T. ``cosine``: t_k = cos(pi/2 * k/T), short steps early (few tokens
    revealed per step at the start), as when sampling with MD4's cosine schedule.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if grid == "uniform":
        return [1.0 - k / steps for k in range(steps)] + [0.0]
    if grid == "cosine":
        return [math.cos(0.5 * math.pi * k / steps) for k in range(steps)] + [0.0]
    raise ValueError(f"unknown time grid {grid!r}; use 'uniform' or 'cosine'")


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose mass reaches ``top_p``, renormalised.

    probs: FloatTensor[..., V] -> FloatTensor[..., V].
    """
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(-1, descending=True)
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # always keeps the most likely token
    kept = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return kept / kept.sum(-1, keepdim=True)


def denoiser_probs(process, denoiser, z: torch.Tensor, t: torch.Tensor, labels=None, guidance: float = 0.0,
                   null_label: int | None = None, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Sampling distribution mu over real tokens: FloatTensor[B, L, V].

    With class labels and ``guidance`` w > 0 (classifier-free guidance):
    log mu = (1 + w) log mu(. | y) - w log mu(. | null), renormalised; then temperature and top-p.
    """
    V = process.vocab_size
    if labels is not None and guidance != 0.0:
        null = torch.full_like(labels, null_label)
        both = call_denoiser(denoiser, torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, null]), V)
        cond, uncond = both.chunk(2)
        logp = (1.0 + guidance) * cond - guidance * uncond
    else:
        logp = call_denoiser(denoiser, z, t, labels, V)
    probs = F.softmax(logp / temperature, dim=-1)
    return top_p_filter(probs, top_p)


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row by inversion of the CDF (much faster than torch.multinomial for short rows).

    probs: FloatTensor[M, K] (rows sum to 1 up to rounding) -> LongTensor[M] in 0..K-1.
    """
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, device=probs.device, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
    return (cdf <= u).sum(-1).clamp_max(probs.shape[-1] - 1)


def _device_of(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.no_grad()
def sample_window(process, denoiser, z: torch.Tensor, steps: int, cached: bool, grid: str = "uniform",
                  labels=None, guidance: float = 0.0, null_label=None, temperature: float = 1.0,
                  top_p: float = 1.0, generator: torch.Generator | None = None, stats: dict | None = None) -> torch.Tensor:
    """Run the reverse process on a partially masked batch z: LongTensor[N, L] -> LongTensor[N, L].

    Positions not equal to the mask id stay as they are. ``stats`` (if given) accumulates
    ``denoiser_calls`` (batched calls) and ``rows_evaluated``.
    """
    ts = time_grid(steps, grid)
    N = z.shape[0]
    mask_id = process.mask_id
    mu = None
    stale = torch.ones(N, dtype=torch.bool, device=z.device)  # rows whose cached mu is out of date
    for k in range(steps):
        t, s = ts[k], ts[k + 1]
        is_masked = z == mask_id
        active = is_masked.any(-1)
        if not active.any():
            break
        need = active & stale if cached else active
        if need.any():
            rows = need.nonzero().squeeze(-1)
            tt = torch.full((rows.numel(),), t, device=z.device)
            lab = None if labels is None else labels[rows]
            new_mu = denoiser_probs(process, denoiser, z[rows], tt, lab, guidance, null_label, temperature, top_p)
            if mu is None:
                mu = torch.zeros(N, *new_mu.shape[1:], device=z.device, dtype=new_mu.dtype)
            mu[rows] = new_mu
            stale[rows] = False
            if stats is not None:
                stats["denoiser_calls"] = stats.get("denoiser_calls", 0) + 1
                stats["rows_evaluated"] = stats.get("rows_evaluated", 0) + int(rows.numel())
        probs = process.reverse_probs(mu[is_masked], t, s)  # [M, V+1]; last column = stay masked
        draw = categorical(probs, generator)
        draw = torch.where(draw == probs.shape[-1] - 1, torch.full_like(draw, mask_id), draw)
        new_z = z.clone()
        new_z[is_masked] = draw
        stale |= (new_z != z).any(-1)
        z = new_z
    return z


@torch.no_grad()
def sample(process, denoiser, num: int, length: int, steps: int = 128, sampler: str = "cached",
           grid: str = "uniform", temperature: float = 1.0, top_p: float = 1.0,
           fixed: torch.Tensor | None = None, fixed_mask: torch.Tensor | None = None,
           labels: torch.Tensor | None = None, guidance: float = 0.0, null_label: int | None = None,
           max_context: int | None = None, block: int | None = None,
           generator: torch.Generator | None = None, device=None, time_conditioned: bool | None = None,
           return_stats: bool = False):
    """Generate sequences: LongTensor[num, length] (and a stats dict if ``return_stats``).

    Args:
        process: a MaskedDiffusion (or GenMD4) object.
        denoiser: module mapping (z_t LongTensor[B, L], t FloatTensor[B]) -> logits [B, L, V].
        steps: T reverse steps per window. sampler: ``"cached"`` or ``"ancestral"``.
        grid: ``"uniform"`` or ``"cosine"`` time grid.
        temperature, top_p: applied to mu before each draw.
        fixed: LongTensor[num, length] tokens to keep; fixed_mask: BoolTensor[num, length] where
            they apply (prefix, suffix, any infill pattern). Fixed positions never change.
        labels: LongTensor[num] class ids; guidance: classifier-free guidance weight w (needs
            ``null_label``, the id of the unconditional label).
        max_context: the model's context; longer ``length`` is generated in semi-autoregressive
            windows of this size, each conditioned on the previous ``max_context - block`` tokens.
        block: new tokens per window after the first (default max_context // 2).
        time_conditioned: override ``denoiser.time_conditioned`` (default True when absent, i.e.
            caching only when the denoiser declares it is safe).
    """
    if sampler not in ("cached", "ancestral"):
        raise ValueError(f"unknown sampler {sampler!r}; use 'cached' or 'ancestral'")
    if guidance != 0.0 and (labels is None or null_label is None):
        raise ValueError("classifier-free guidance needs labels and null_label")
    if time_conditioned is None:
        time_conditioned = bool(getattr(denoiser, "time_conditioned", True))
    cached = sampler == "cached" and not time_conditioned
    device = torch.device(device) if device is not None else _device_of(denoiser)
    was_training = getattr(denoiser, "training", False)
    if hasattr(denoiser, "eval"):
        denoiser.eval()

    z = torch.full((num, length), process.mask_id, dtype=torch.long, device=device)
    if fixed is not None:
        fm = torch.ones_like(z, dtype=torch.bool) if fixed_mask is None else fixed_mask.to(device)
        z = torch.where(fm, fixed.to(device), z)
    if labels is not None:
        labels = labels.to(device)
    stats: dict = {"denoiser_calls": 0, "rows_evaluated": 0, "steps": steps, "sampler": sampler, "cached": cached}
    opts = dict(steps=steps, cached=cached, grid=grid, guidance=guidance, null_label=null_label,
                temperature=temperature, top_p=top_p, generator=generator, stats=stats)
    try:
        if max_context is None or length <= max_context:
            z = sample_window(process, denoiser, z, labels=labels, **opts)
        else:
            block = block or max(1, max_context // 2)
            if not 0 < block <= max_context:
                raise ValueError("block must be in 1..max_context")
            start = 0
            while True:
                window = slice(start, start + max_context)
                z[:, window] = sample_window(process, denoiser, z[:, window].clone(), labels=labels, **opts)
                if start + max_context >= length:
                    break
                start = min(start + block, length - max_context)
    finally:
        if was_training and hasattr(denoiser, "train"):
            denoiser.train()
    process.last_sample_stats = stats
    return (z, stats) if return_stats else z
