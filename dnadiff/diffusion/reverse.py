"""Building blocks shared by every sampler: time grids, the denoiser's sampling distribution,
exact categorical and reverse-step draws, the prior start and final decoding, a per-row
cache of denoiser outputs and the counts of a sampling run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .denoiser import call_denoiser
from .schedules import MaskingSchedule


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
    """One exact draw per row by float64 inversion of the CDF (binary search), rows in chunks.

    Float64 uniforms have 53 random bits, so a category of probability p is drawn at rate p up
    to ~1e-16 absolute; a float32 inversion quantises u to 2^-24 and misses (or over-draws) small p.

    probs: FloatTensor[M, K] non-negative rows (not necessarily normalised) -> LongTensor[M] in 0..K-1.
    """
    M, K = probs.shape
    out = torch.empty(M, dtype=torch.long, device=probs.device)
    chunk = max(1, (1 << 22) // max(K, 1))
    for i in range(0, M, chunk):
        cdf = probs[i:i + chunk].double().cumsum(-1)
        u = torch.rand(cdf.shape[0], 1, device=probs.device, generator=generator, dtype=torch.float64) * cdf[:, -1:]
        out[i:i + chunk] = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(K - 1)
    return out


@runtime_checkable
class SharedSchedule(Protocol):
    """What the samplers use beyond :class:`~dnadiff.diffusion.process.DiffusionProcess` when every
    token value shares one schedule alpha(t) (MaskedDiffusion; not GenMD4): the reveal of a masked
    position is then independent of its token, which gives two-stage exact draws, lazy denoiser
    calls, hitting times (first-hitting) and ReMDM's remasking posterior."""

    schedule: MaskingSchedule

    def unmask_probability(self, t: float, s: float) -> float:
        """P(a position masked at t is unmasked at s < t), float64."""

    def end_alphas(self) -> tuple[float, float]:
        """(alpha(0), alpha(1)) in float64."""


def state_independent(process) -> bool:
    """True when the process implements :class:`SharedSchedule` (MaskedDiffusion, not GenMD4)."""
    return isinstance(process, SharedSchedule)


def reverse_draw(process, mu: torch.Tensor, t: float, s: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact draw of z_s at positions masked at z_t: LongTensor[M] of tokens or the mask id.

    mu: FloatTensor[M, V] denoiser probabilities at those positions (an expanded tensor is fine).
    State-independent schedules: Bernoulli(p_unmask) in float64, then the token from mu for the
    revealed positions only. Otherwise: float64 inversion of ``process.reverse_probs``.
    """
    mask_id = process.mask_id
    if state_independent(process):
        p = process.unmask_probability(t, s)
        reveal = torch.rand(mu.shape[0], device=mu.device, generator=generator, dtype=torch.float64) < p
        out = torch.full((mu.shape[0],), mask_id, dtype=torch.long, device=mu.device)
        if reveal.any():
            out[reveal] = categorical(mu[reveal], generator)
        return out
    probs = process.reverse_probs(mu, t, s)
    draw = categorical(probs, generator)
    return torch.where(draw == probs.shape[-1] - 1, torch.full_like(draw, mask_id), draw)


def start_from_prior(process, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z_1 ~ p(z_1) at the masked positions of z: each becomes a uniform real token with
    probability alpha(1) (0 for every schedule but the log-linear and clipped ones). LongTensor[N, L]."""
    if not state_independent(process):
        return z
    a1 = process.end_alphas()[1]
    if a1 <= 0:
        return z
    masked = z == process.mask_id
    keep = (torch.rand(z.shape, device=z.device, generator=generator, dtype=torch.float64) < a1) & masked
    uniform = torch.randint(process.vocab_size, z.shape, device=z.device, generator=generator)
    return torch.where(keep, uniform, z)


def decode_remaining(process, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions still masked after the last step (t = 0) get a uniform token: the decoder of the
    reconstruction term when alpha(0) < 1 (clipped schedules). LongTensor[N, L]."""
    masked = z == process.mask_id
    if not masked.any():
        return z
    uniform = torch.randint(process.vocab_size, z.shape, device=z.device, generator=generator)
    return torch.where(masked, uniform, z)


@dataclass
class SampleStats:
    """What a sampling run cost: pass one as ``stats=`` to :func:`~dnadiff.diffusion.sampling.sample` and read it
    afterwards (the only way the core reports them). The counts are added to, so one object can total several
    calls (batches); ``steps``, ``sampler`` and ``cached`` are those of the last call.

    Attributes:
        denoiser_calls: batched denoiser calls (a classifier-free-guided call, conditional and null rows in one
            batch, counts once).
        rows_evaluated: sequences (rows) those calls evaluated, summed over the calls.
        classifier_calls, classifier_rows: calls of classifier guidance's ``log_prob`` and the candidate rows
            they scored (:mod:`.guidance`).
        steps: the ``steps`` sampled with (None: first-hitting with one reveal per call).
        sampler: the sampler's name.
        cached: whether denoiser outputs could be reused (a time-agnostic denoiser and a caching sampler).
    """

    denoiser_calls: int = 0
    rows_evaluated: int = 0
    classifier_calls: int = 0
    classifier_rows: int = 0
    steps: int | None = None
    sampler: str | None = None
    cached: bool | None = None


class MuCache:
    """Denoiser probabilities per row, recomputed only for rows that need it.

    ``get(z, t, need)`` evaluates the rows where ``need`` (BoolTensor[N]) is True at times ``t``
    (float or FloatTensor[N]) and returns mu FloatTensor[N, L, V] (stale rows keep their last value).
    Counts ``denoiser_calls`` and ``rows_evaluated`` into ``stats`` (a :class:`SampleStats` or None).
    """

    def __init__(self, process, denoiser, labels, guidance, null_label, temperature, top_p,
                 stats: SampleStats | None):
        self.process, self.denoiser, self.labels = process, denoiser, labels
        self.opts = dict(guidance=guidance, null_label=null_label, temperature=temperature, top_p=top_p)
        self.stats = stats if stats is not None else SampleStats()
        self.mu = None

    def get(self, z: torch.Tensor, t, need: torch.Tensor | None = None) -> torch.Tensor:
        N = z.shape[0]
        if need is not None and not bool(need.all()):
            rows = need.nonzero().squeeze(-1)
            if rows.numel() == 0:
                return self.mu
        else:
            rows = None
        zz = z if rows is None else z[rows]
        if isinstance(t, torch.Tensor):
            tt = t if rows is None else t[rows]
            tt = tt.to(device=z.device, dtype=torch.float32)
        else:
            tt = torch.full((zz.shape[0],), float(t), device=z.device)
        lab = None if self.labels is None else (self.labels if rows is None else self.labels[rows])
        new_mu = denoiser_probs(self.process, self.denoiser, zz, tt, lab, **self.opts)
        if rows is None:
            self.mu = new_mu
        else:
            if self.mu is None:
                self.mu = torch.zeros(N, *new_mu.shape[1:], device=z.device, dtype=new_mu.dtype)
            self.mu[rows] = new_mu
        self.stats.denoiser_calls += 1
        self.stats.rows_evaluated += int(zz.shape[0])
        return self.mu


def device_of(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")
