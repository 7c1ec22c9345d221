"""Samplers for masked diffusion: the shared machinery, ancestral and cached; the dispatcher.

*ancestral* walks a time grid 1 = t_0 > t_1 > ... > t_T = 0. At each step every masked
position independently unmasks to token j or stays masked with the probabilities of the
process's reverse step; unmasked and fixed positions are never touched. Draws are exact: for a
state-independent schedule in two stages (reveal with probability p_unmask, in float64, then the
token from mu), otherwise by float64 inversion of the CDF of ``reverse_probs`` (a float32
inversion never draws tokens whose step probability is below ~6e-8).

*cached*: the same draws as the ancestral sampler (same random numbers, same samples), but the
denoiser is evaluated only where its output is used. For a state-independent schedule the reveal
of each masked position is drawn first (Bernoulli(p_unmask)); a row that reveals nothing in a
step needs no mu at all, for any denoiser, time-conditioned or not. When the denoiser is not
time-conditioned (``denoiser.time_conditioned`` is False) mu depends on z_t only, and a row whose
tokens did not change since its last evaluation also reuses it (this is what saves calls for
GenMD4's state-dependent schedules, whose reveal depends on the token). At most min(T, L) denoiser
calls per window instead of T.

The other samplers live beside this module: :mod:`.first_hitting` (exact, one call per reveal
event, no wasted steps), :mod:`.remdm` (ReMDM remasking) and :mod:`.confidence`
(confidence-ordered unmasking, not an exact sampler). All start from the process's prior
p(z_1) (all-mask unless alpha(1) > 0) and decode positions left masked at t = 0 uniformly
(only when alpha(0) < 1), as the ELBO assumes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .confidence import ConfidenceOptions, confidence_window
from .first_hitting import first_hitting_window
from .guidance import ClassifierGuidance, guided_tokens
from .remdm import ReMDMOptions, remdm_window
from .reverse import (MuCache, SampleStats, categorical, decode_remaining, denoiser_probs, device_of,  # noqa: F401
                      reverse_draw, start_from_prior, state_independent, time_grid, top_p_filter)


@torch.no_grad()
def sample_window(process, denoiser, z: torch.Tensor, steps: int, cached: bool, grid: str = "uniform",
                  labels=None, guidance: float = 0.0, null_label=None, temperature: float = 1.0,
                  top_p: float = 1.0, generator: torch.Generator | None = None, stats: SampleStats | None = None,
                  reuse: bool | None = None, guide: ClassifierGuidance | None = None) -> torch.Tensor:
    """Ancestral (``cached=False``) or cached reverse process on a partially masked batch z:
    LongTensor[N, L] -> LongTensor[N, L].

    Positions not equal to the mask id stay as they are. ``cached``: evaluate only rows that
    reveal something (state-independent schedules) and, with ``reuse`` (default: ``cached``; only
    valid for denoisers that ignore t), reuse the last mu of rows that did not change. Both paths
    consume the same random numbers, so they give the same samples. ``stats`` (a SampleStats, if
    given) accumulates ``denoiser_calls`` (batched calls) and ``rows_evaluated``. ``guide``: classifier
    guidance of the reveals (:mod:`.guidance`; state-independent schedules only).
    """
    reuse = cached if reuse is None else reuse
    ts = time_grid(steps, grid)
    N = z.shape[0]
    mask_id = process.mask_id
    z = start_from_prior(process, z, generator)
    cache = MuCache(process, denoiser, labels, guidance, null_label, temperature, top_p, stats)
    stale = torch.ones(N, dtype=torch.bool, device=z.device)  # rows whose cached mu is out of date
    is_masked = z == mask_id
    two_stage = state_independent(process)
    if guide is not None and not two_stage:
        raise ValueError("classifier guidance needs a state-independent schedule (not GenMD4)")
    for k in range(steps):
        t, s = ts[k], ts[k + 1]
        active = is_masked.any(-1)
        if not active.any():
            break
        if two_stage:
            p = process.unmask_probability(t, s)
            reveal = is_masked & (torch.rand(z.shape, device=z.device, dtype=torch.float64, generator=generator) < p)
            if cached:
                need = reveal.any(-1) & (stale if reuse else torch.ones_like(stale))
            else:
                need = active
            mu = cache.get(z, t, need) if need.any() else cache.mu
            stale &= ~need
            if reveal.any():
                probs = guided_tokens(guide, z, mu, reveal, t, stats)
                z = z.clone()
                z[reveal] = categorical(probs, generator)
                is_masked &= ~reveal
                stale |= reveal.any(-1)
            continue
        need = active & stale if (cached and reuse) else active
        mu = cache.get(z, t, need) if need.any() else cache.mu
        stale &= ~need
        draw = reverse_draw(process, mu[is_masked], t, s, generator)
        if (draw != mask_id).any():
            z = z.clone()
            z[is_masked] = draw
            was = is_masked
            is_masked = z == mask_id
            stale |= (was & ~is_masked).any(-1)
    return decode_remaining(process, z, generator)


SAMPLERS = ("cached", "ancestral", "first-hitting", "remdm", "confidence")
GRIDS = ("uniform", "cosine")
#: the options object each sampler reads (``options=`` of :func:`sample`)
SAMPLER_OPTIONS = {"remdm": ReMDMOptions, "confidence": ConfidenceOptions}


@dataclass(frozen=True)
class Decoding:
    """How the reverse steps are laid out in time and how each draw is shaped.

    Attributes:
        grid: time grid of the T steps (:func:`time_grid`): ``"uniform"`` (t_k = 1 - k/T) or ``"cosine"``
            (short steps early); ReMDM always walks the uniform grid.
        temperature: mu FloatTensor[B, L, V] becomes softmax(log mu / temperature) before each draw (> 0;
            1 samples the model as trained).
        top_p: nucleus filtering of that mu (:func:`top_p_filter`), in (0, 1]; 1 keeps every token.
    """

    grid: str = "uniform"
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self):
        if self.grid not in GRIDS:
            raise ValueError(f"unknown time grid {self.grid!r}; use 'uniform' or 'cosine'")
        if not self.temperature > 0:
            raise ValueError(f"temperature {self.temperature} must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p {self.top_p} must be in (0, 1]")


@dataclass(frozen=True, eq=False)
class Conditioning:
    """What the ``num`` sequences of ``length`` tokens are conditioned on; every part is optional.

    Attributes:
        fixed: LongTensor[num, length] (or one broadcast to it, e.g. [length]) tokens to keep.
        fixed_mask: BoolTensor[num, length] where ``fixed`` applies (prefix, suffix, any infill pattern);
            None: everywhere. Fixed positions never change.
        labels: LongTensor[num] class ids, passed to the denoiser as ``denoiser(z_t, t, labels=labels)``.
        guidance: classifier-free guidance weight w: log mu = (1 + w) log mu(. | y) - w log mu(. | null),
            renormalised (0: none; needs ``labels`` and ``null_label``).
        null_label: the id of the unconditional label.
        guide: classifier guidance (:class:`~.guidance.ClassifierGuidance`: a callable log p(y | x), gamma,
            exact or first-order form) applied at every reveal of the exact samplers (cached, ancestral,
            first-hitting); composes with ``fixed``, CFG and windows (the classifier sees the whole sequence,
            the window in its place).
    """

    fixed: torch.Tensor | None = None
    fixed_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    guidance: float = 0.0
    null_label: int | None = None
    guide: ClassifierGuidance | None = None

    def __post_init__(self):
        if self.fixed_mask is not None and self.fixed is None:
            raise ValueError("fixed_mask needs the fixed tokens (fixed)")
        if self.guidance != 0.0 and (self.labels is None or self.null_label is None):
            raise ValueError("classifier-free guidance needs labels and null_label")


@dataclass(frozen=True)
class Windows:
    """Semi-autoregressive windows, for sequences longer than the denoiser's context.

    Attributes:
        max_context: the window (the model's context), >= 1; a longer ``length`` is generated in windows of
            this size, each conditioned on the previous ``max_context - block`` tokens. A ``length`` within it
            is one window.
        block: new tokens per window after the first, in 1..max_context (None: max_context // 2, at least 1).
    """

    max_context: int
    block: int | None = None

    def __post_init__(self):
        if self.max_context < 1:
            raise ValueError("max_context must be >= 1")
        if self.block is not None and not 0 < self.block <= self.max_context:
            raise ValueError("block must be in 1..max_context")

    @property
    def stride(self) -> int:
        """New tokens per window after the first: ``block`` or its default."""
        return self.block if self.block is not None else max(1, self.max_context // 2)


@torch.no_grad()
def sample(process, denoiser, num: int, length: int, steps: int | None = 128, sampler: str = "cached", *,
           options: ReMDMOptions | ConfidenceOptions | None = None, decoding: Decoding | None = None,
           conditioning: Conditioning | None = None, windows: Windows | None = None,
           generator: torch.Generator | None = None, device=None, stats: SampleStats | None = None) -> torch.Tensor:
    """Generate sequences: LongTensor[num, length] over 0..V-1.

    Args:
        process: a MaskedDiffusion (or GenMD4: ancestral, cached and confidence only).
        denoiser: module mapping (z_t LongTensor[B, L], t FloatTensor[B]) -> logits [B, L, V]. Its
            ``time_conditioned`` attribute (True when absent) says whether mu depends on t; only a denoiser
            declaring False has its outputs reused (cached, first-hitting, remdm).
        steps: T reverse steps per window. For ``first-hitting``, None reveals one position per call (the
            continuous-time sampler) and T groups the reveals by the T-step grid.
        sampler: ``"cached"``, ``"ancestral"`` (exact, :func:`sample_window`), ``"first-hitting"`` (exact,
            :mod:`.first_hitting`), ``"remdm"`` (remasking, :mod:`.remdm`) or ``"confidence"`` (top-k
            unmasking, not exact, :mod:`.confidence`).
        options: the sampler's own settings, :class:`~.remdm.ReMDMOptions` for remdm or
            :class:`~.confidence.ConfidenceOptions` for confidence (None: their defaults).
        decoding: time grid, temperature and top-p (:class:`Decoding`; None: uniform grid, 1, 1).
        conditioning: fixed tokens, class labels with classifier-free guidance, classifier guidance
            (:class:`Conditioning`; None: unconditional).
        windows: semi-autoregressive windows beyond the model's context (:class:`Windows`; None: one window).
        generator, device: the random numbers' generator; the device (default: the denoiser's).
        stats: a :class:`~.reverse.SampleStats` to count this run's denoiser and classifier calls into.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if steps is None and sampler != "first-hitting":
        raise ValueError(f"sampler {sampler!r} needs a number of steps")
    if options is not None and not isinstance(options, SAMPLER_OPTIONS.get(sampler, ())):
        raise ValueError(f"{type(options).__name__} does not go with sampler {sampler!r}: options are "
                         "ReMDMOptions for remdm, ConfidenceOptions for confidence")
    decoding = decoding or Decoding()
    cond = conditioning or Conditioning()
    guide = cond.guide
    if guide is not None and sampler not in ("cached", "ancestral", "first-hitting"):
        raise ValueError(f"classifier guidance needs an exact sampler (cached, ancestral, first-hitting), not {sampler!r}")
    time_conditioned = bool(getattr(denoiser, "time_conditioned", True))
    cached = sampler in ("cached", "first-hitting", "remdm") and not time_conditioned  # mu may be reused
    device = torch.device(device) if device is not None else device_of(denoiser)
    was_training = getattr(denoiser, "training", False)
    if hasattr(denoiser, "eval"):
        denoiser.eval()

    z = torch.full((num, length), process.mask_id, dtype=torch.long, device=device)
    if cond.fixed is not None:
        fm = torch.ones_like(z, dtype=torch.bool) if cond.fixed_mask is None else cond.fixed_mask.to(device)
        z = torch.where(fm, cond.fixed.to(device), z)
    labels = None if cond.labels is None else cond.labels.to(device)
    stats = SampleStats() if stats is None else stats
    stats.steps, stats.sampler, stats.cached = steps, sampler, cached
    common = dict(labels=labels, guidance=cond.guidance, null_label=cond.null_label, temperature=decoding.temperature,
                  top_p=decoding.top_p, generator=generator, stats=stats)
    grid = decoding.grid
    if sampler in ("cached", "ancestral"):
        window_fn = functools.partial(sample_window, steps=steps, cached=sampler == "cached", reuse=cached, grid=grid,
                                      **common)
    elif sampler == "first-hitting":
        window_fn = functools.partial(first_hitting_window, steps=steps, grid=grid, cached=cached, **common)
    elif sampler == "remdm":
        window_fn = functools.partial(remdm_window, steps=steps, options=options or ReMDMOptions(), cached=cached,
                                      **common)
    else:
        window_fn = functools.partial(confidence_window, steps=steps, grid=grid,
                                      options=options or ConfidenceOptions(), **common)
    if guide is not None:
        plain_fn = window_fn

        def window_fn(process, denoiser, zw, left=None, right=None):
            return plain_fn(process, denoiser, zw, guide=guide.around(left, right))
    try:
        if windows is None or length <= windows.max_context:
            z = window_fn(process, denoiser, z)
        else:
            max_context, block = windows.max_context, windows.stride
            start = 0
            while True:
                window = slice(start, start + max_context)
                if guide is None:
                    z[:, window] = window_fn(process, denoiser, z[:, window].clone())
                else:
                    z[:, window] = window_fn(process, denoiser, z[:, window].clone(), z[:, :start],
                                             z[:, start + max_context:])
                if start + max_context >= length:
                    break
                start = min(start + block, length - max_context)
    finally:
        if was_training and hasattr(denoiser, "train"):
            denoiser.train()
    return z
