"""Bidirectional Mamba (Caduceus' BiMamba): a forward pass plus a pass over the flipped sequence.

The two directions share ``in_proj`` and ``out_proj`` (tied as in Caduceus, so both keys appear in
the state dict) and their outputs are added. Because both projections are linear, position-wise and
shared, they run once: out = out_proj(y_fwd + flip(y_rev)) with y_* the gated SSM outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from dnadiff.models.checkpointing import recompute
from dnadiff.models.mamba import Mamba
from dnadiff.rc import flip_valid


class BiMamba(nn.Module):
    """[B, L, d_model] -> [B, L, d_model]; ``mamba_kwargs`` go to both :class:`Mamba` directions.

    ``recompute_inner`` (set with activation checkpointing): each direction's part between the projections
    is a nested checkpoint that keeps only the input projection's output ``xz`` (shared by both
    directions: the reverse one flips it inside), see :mod:`dnadiff.models.checkpointing`."""

    recompute_inner: bool = False

    def __init__(self, d_model: int, **mamba_kwargs):
        super().__init__()
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev.in_proj.weight = self.mamba_fwd.in_proj.weight
        self.mamba_rev.out_proj.weight = self.mamba_fwd.out_proj.weight

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: [B, L, d_model] -> mamba_fwd(hidden) + flip(mamba_rev(flip(hidden))), flips along L.

        With ``lengths`` (LongTensor[B], right-padded rows) each row is flipped within its valid length
        (:func:`dnadiff.rc.flip_valid`): padding stays at the end in both directions, and since the
        convolution and the scan are causal, no pad reaches a valid position's output.
        """
        xz = self.mamba_fwd.in_proj(hidden)  # [B, L, 2 * d_inner]
        y_fwd = recompute(self.mamba_fwd.ssm, xz, enabled=self.recompute_inner)
        y_rev = recompute(lambda v: flip_valid(self.mamba_rev.ssm(flip_valid(v, lengths, 1)), lengths, 1), xz,
                          enabled=self.recompute_inner)
        return self.mamba_fwd.out_proj(y_fwd + y_rev)
