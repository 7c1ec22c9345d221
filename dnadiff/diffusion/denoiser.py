"""The denoiser contract of the core: how a process calls a denoiser and reads its output.

A denoiser is any module called as ``denoiser(z_t, t)`` (or with ``labels=``) returning logits
whose first V columns are the real tokens (extra columns, e.g. the mask, are dropped: SUBS
parameterization) or a tuple whose first element is such logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def call_denoiser(denoiser, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Run the denoiser and return float32 log-probabilities over the V real tokens.

    Args:
        z: LongTensor[B, L] noisy tokens (mask id = V). t: FloatTensor[B]. labels: LongTensor[B] or None.
    Returns:
        FloatTensor[B, L, V] log mu_theta(z, t).
    """
    out = denoiser(z, t) if labels is None else denoiser(z, t, labels=labels)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return F.log_softmax(out[..., :vocab_size].float(), dim=-1)
