"""Reverse-complement parameter sharing (RCPS, Caduceus-PS): the pieces that keep a network exactly
RC-equivariant.

An RCPS hidden state has 2 * d channels, [forward half | RC half]. Its reverse complement flips the
length and the channel axes together (``rc_hidden``); every map below commutes with that flip when
the token ids are reverse-complemented (flip along L, complement each id).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dnadiff.rc import flip_valid


def rc_hidden(x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse complement of hidden states: flip length (within each row's valid ``lengths``, LongTensor[B],
    when given) and channels, [B, L, C] -> [B, L, C]."""
    return flip_valid(x, lengths, 1).flip(-1)


class RCPSEmbedding(nn.Embedding):
    """Token ids [B, L] -> [B, L, 2 * d]: cat(E[x], channel-flipped E[complement(x)])."""

    def __init__(self, num_embeddings: int, d_model: int, complement_map: Sequence[int]):
        super().__init__(num_embeddings, d_model)
        self.register_buffer("complement", torch.as_tensor(list(complement_map), dtype=torch.long),
                             persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().forward(ids), super().forward(self.complement[ids]).flip(-1)], dim=-1)


def rcps_mixer(mixer: Callable[..., torch.Tensor], x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a [B, L, d] -> [B, L, d] mixer to both strands: [B, L, 2d] -> cat(f(x1), rc(f(rc(x2)))).

    With ``lengths`` (LongTensor[B]) the RC is taken within each row's valid length and the mixer is
    called as ``mixer(h, lengths)``."""
    x1, x2 = x.chunk(2, dim=-1)
    both = torch.cat([x1, rc_hidden(x2, lengths)], dim=0)  # both strands in one batch
    out = mixer(both) if lengths is None else mixer(both, torch.cat([lengths, lengths]))
    y1, y2 = out.chunk(2, dim=0)
    return torch.cat([y1, rc_hidden(y2, lengths)], dim=-1)


def rcps_add_norm(hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
                  swap_halves: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-norm residual step on both strands: returns (RMSNorm(s) per strand, s) with s = hidden + residual.

    The RC strand is normalised with the channel-flipped weight (norm(rc(v)) = rc(v-norm with flipped
    weight)). ``swap_halves`` reproduces the original Caduceus' fused add-norm, which writes the two
    halves swapped: (s1, s2) -> (norm(s2), norm_rc(s1)) and residual (s2, s1). Both are equivariant.
    """
    s = hidden if residual is None else hidden + residual
    s1, s2 = s.chunk(2, dim=-1)
    if swap_halves:
        s1, s2 = s2, s1
        s = torch.cat([s1, s2], dim=-1)
    d = weight.shape[0]
    normed = torch.cat([F.rms_norm(s1, (d,), weight, eps), F.rms_norm(s2, (d,), weight.flip(0), eps)], dim=-1)
    return normed, s


def rcps_logits(hidden: torch.Tensor, weight: torch.Tensor, complement: torch.Tensor) -> torch.Tensor:
    """RC-equivariant LM head tied to the embedding: [B, L, 2d] -> [B, L, V'] with V' = len(complement).

    logits = h1 @ W^T + flip_channels(h2) @ W[complement]^T, W: [V, d] (only rows ``complement`` index).
    """
    h1, h2 = hidden.chunk(2, dim=-1)
    return F.linear(h1, weight[: len(complement)]) + F.linear(h2.flip(-1), weight[complement])
