"""Time and label conditioning, shared by the denoisers (Caduceus, transformer).

The conditioning vector c [B, d] is ``TimeEmbedding(t)`` (an MLP of sinusoidal features of t) when
the model is time-conditioned, plus a label embedding with ``num_classes + 1`` rows when it is
class-conditional (row ``num_classes`` is the null label of classifier-free guidance, used when no
labels are given); None for an unconditioned model.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from dnadiff.migrations import upgrade_state_keys

TIME_SCALE = 1000.0  # t in [0, 1] is embedded as t * TIME_SCALE, a useful range for sinusoids


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: FloatTensor[B] -> FloatTensor[B, dim] ([cos | sin] of
    t * TIME_SCALE at dim/2 frequencies max_period^(-k/(dim/2)))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = TIME_SCALE * t.float()[:, None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimeEmbedding(nn.Sequential):
    """t FloatTensor[B] in [0, 1] -> FloatTensor[B, d_model]: sinusoidal features of t, then the MLP
    Linear(num_frequencies, d_model), SiLU, Linear(d_model, d_model) (parameters ``0.*`` and ``2.*``)."""

    def __init__(self, d_model: int, num_frequencies: int = 256):
        super().__init__(nn.Linear(num_frequencies, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.num_frequencies = num_frequencies

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.num_frequencies)
        return super().forward(features.to(self[0].weight.dtype))


class Conditioned(nn.Module):
    """Base of a denoiser conditioned on t and/or a class label: sets ``time_embed`` (or None),
    ``label_embed`` (or None), ``num_classes`` and ``time_conditioned``; :meth:`conditioning` gives c."""

    def init_conditioning(self, d_model: int, time_conditioning: bool, num_classes: int, num_frequencies: int) -> None:
        self.num_classes = int(num_classes)
        self.time_conditioned = bool(time_conditioning)
        self.time_embed = TimeEmbedding(d_model, num_frequencies) if self.time_conditioned else None
        self.label_embed = nn.Embedding(self.num_classes + 1, d_model) if self.num_classes > 0 else None
        self._register_load_state_dict_pre_hook(lambda state, prefix, *args: upgrade_state_keys(state, prefix))

    def conditioning(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """c: FloatTensor[B, d_model] (time and/or label embedding) or None. t: FloatTensor[B];
        labels: LongTensor[B] or None (the null label ``num_classes``)."""
        c = None
        if self.time_embed is not None:
            c = self.time_embed(t)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=self.label_embed.weight.device)
            emb = self.label_embed(labels)
            c = emb if c is None else c + emb
        return c
