"""What every scorer shares: the parts of a loaded model, the strand rule and the masked-marginal call.

A *model* here is anything with ``.denoiser`` (the denoiser module), ``.diffusion`` (its masked
diffusion process over the 4 bases) and ``.window`` (its training length), e.g.
:class:`dnadiff.generate.DNAModel` or the object ``dnadiff.load`` returns, so every checkpoint source
(model.pt, .ckpt, original Caduceus folders, hub ids) scores the same way.

Strands: ``"both"`` averages the forward-strand log-probabilities with those of the reverse complement
mapped back (Caduceus-Ph and any model without built-in RC symmetry), ``"forward"`` scores the given
strand only (exact for Caduceus-PS, which is RC-equivariant by construction), ``"auto"`` picks
``"forward"`` for PS and for a Ph model that already conjoins in eval mode, ``"both"`` otherwise.
"""
from __future__ import annotations

import torch

from dnadiff.data.tokenizer import MASK, NUM_BASES
from dnadiff.diffusion.denoiser import call_denoiser
from dnadiff.errors import UserError
from dnadiff.rc import rc_logits, rc_policy, reverse_complement

STRANDS = ("auto", "both", "forward")


def parts(model) -> tuple[torch.nn.Module, object, int]:
    """(denoiser, diffusion, window) of a loaded model; UserError for a model that is not a 4-base DNA model."""
    denoiser, diffusion = model.denoiser, model.diffusion
    if getattr(diffusion, "vocab_size", None) != NUM_BASES:
        raise UserError("this model does not have the 4-base DNA vocabulary: score with a DNA checkpoint")
    return denoiser, diffusion, int(model.window)


def device_of(module: torch.nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def variant_of(denoiser) -> str | None:
    """``"ph"`` / ``"ps"`` for a Caduceus denoiser, None for any other."""
    backbone = getattr(denoiser, "backbone", None)
    return getattr(backbone, "variant", None)


def resolve_strands(denoiser, strands: str = "auto") -> str:
    """``"both"`` or ``"forward"`` (see the module docstring); UserError for an unknown value."""
    if strands not in STRANDS:
        raise UserError(f"unknown strands {strands!r}: use auto, both or forward")
    if strands != "auto":
        return strands
    variant = variant_of(denoiser)
    if rc_policy(variant).equivariant or (variant is not None and getattr(denoiser, "conjoin", False)):
        return "forward"  # RC-symmetric already: by construction, or a Ph model conjoining in eval mode
    return "both"


def time_for_masked_fraction(diffusion, fraction: torch.Tensor) -> torch.Tensor:
    """The time t at which the schedule masks ``fraction`` of the positions on average, 1 - alpha(t) = fraction:
    FloatTensor[B] -> FloatTensor[B] (bisection in float64 on the schedule; ``fraction`` itself when the process
    has no state-independent schedule). Only time-conditioned denoisers read it."""
    schedule = getattr(diffusion, "schedule", None)
    if schedule is None:
        return fraction.float()
    target = fraction.double()
    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = (1.0 - schedule.alpha(mid)) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return ((lo + hi) / 2).float()


def strand_logprobs(denoiser, diffusion, z: torch.Tensor, t: torch.Tensor, strands: str,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
    """log mu_theta(z, t) over the 4 bases at every position, FloatTensor[B, L, 4], for noisy windows z
    LongTensor[B, L] (dnadiff ids, MASK = 4, N = 5); with ``strands="both"`` the mean of the forward log-probabilities
    and those of RC(z) mapped back onto the forward strand (one denoiser call on 2B rows)."""
    V = diffusion.vocab_size
    if strands == "forward":
        return call_denoiser(denoiser, z, t, labels, V)
    both = torch.cat([z, reverse_complement(z)])
    out = call_denoiser(denoiser, both, torch.cat([t, t]), None if labels is None else torch.cat([labels, labels]), V)
    fwd, rc = out.chunk(2)
    return (fwd + rc_logits(rc)) / 2


@torch.no_grad()
def masked_logprobs(denoiser, diffusion, windows: torch.Tensor, centers: torch.Tensor, strands: str = "forward",
                    labels: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x_c = b | the rest of the window) with position c alone masked: the masked-marginal log-probabilities.

    Args:
        windows: LongTensor[B, W] clean windows (dnadiff ids; N allowed in the context).
        centers: LongTensor[B] the masked position of each row. strands: "both" or "forward".
    Returns:
        FloatTensor[B, 4] log-probabilities of A, C, G, T at the masked position.
    """
    B, W = windows.shape
    rows = torch.arange(B, device=windows.device)
    z = windows.clone()
    z[rows, centers] = MASK
    t = time_for_masked_fraction(diffusion, torch.full((B,), 1.0 / W, device=windows.device))
    return strand_logprobs(denoiser, diffusion, z, t, strands, labels)[rows, centers]


def window_around(length: int, position: int, window: int) -> tuple[int, int]:
    """[start, end) of a span of ``min(window, length)`` positions holding ``position``, centred where it can be."""
    size = min(window, length)
    start = min(max(position - size // 2, 0), length - size)
    return start, start + size
