"""Caduceus (Schiff et al. 2024): bidirectional Mamba with reverse-complement symmetry, as a denoiser.

Variants: "ph" (plain BiMamba; RC symmetry by augmentation in training and post-hoc conjoining at
inference) and "ps" (RC-equivariant by parameter sharing: hidden states are 2 * d_model wide).
Pre-norm residual blocks with RMSNorm (mamba-ssm's fused add-norm order), final norm, LM head tied
to the embedding.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dnadiff.errors import UserError
from dnadiff.models.bimamba import BiMamba
from dnadiff.models.rcps import RCPSEmbedding, rcps_add_norm, rcps_logits, rcps_mixer
from dnadiff.rc import COMPLEMENT, conjoin, random_rc, rc_logits

VARIANTS = ("ph", "ps")


class CaduceusBlock(nn.Module):
    """RMSNorm + BiMamba mixer; parameters ``norm.weight`` and ``mixer.mamba_{fwd,rev}.*``."""

    def __init__(self, d_model: int, eps: float, **mamba_kwargs):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.mixer = BiMamba(d_model, **mamba_kwargs)


class CaduceusBackbone(nn.Module):
    """Token ids [B, L] -> final-normed hidden states [B, L, H] (H = d_model, or 2 * d_model for "ps")."""

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, variant: str = "ph",
                 complement_map: Sequence[int] = COMPLEMENT, norm_eps: float = 1e-5,
                 fused_add_norm: bool = True, **mamba_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise UserError(f"unknown Caduceus variant {variant!r}: use 'ph' or 'ps'")
        self.variant, self.d_model, self.eps = variant, d_model, norm_eps
        self.swap_halves = variant == "ps" and fused_add_norm  # see rcps_add_norm
        if variant == "ps":
            if len(complement_map) != vocab_size:
                raise UserError(f"complement map has {len(complement_map)} entries for {vocab_size} tokens: "
                                "give one complement id per token")
            self.embedding = RCPSEmbedding(vocab_size, d_model, complement_map)
        else:
            self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(CaduceusBlock(d_model, norm_eps, **mamba_kwargs) for _ in range(n_layer))
        self.norm_f = nn.RMSNorm(d_model, eps=norm_eps)
        self.reset_parameters(n_layer)

    def reset_parameters(self, n_layer: int) -> None:
        """Caduceus/Mamba init: embedding N(0, 0.02), out_proj kaiming-uniform / sqrt(n_layer)."""
        nn.init.normal_(self.embedding.weight, std=0.02)
        for layer in self.layers:
            out = layer.mixer.mamba_fwd.out_proj.weight
            nn.init.kaiming_uniform_(out, a=math.sqrt(5))
            with torch.no_grad():
                out /= math.sqrt(n_layer)

    def forward(self, ids: torch.Tensor, extra: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ids: [B, L] -> [B, L, H]; ``extra`` [B, H] (time/label embedding) is added at every position.

        ``lengths`` (LongTensor[B]) marks right-padded rows valid on ``0 .. lengths[b] - 1``: the outputs at
        valid positions then do not depend on the padding (nor on L), see :class:`BiMamba`."""
        hidden = self.embedding(ids)
        if extra is not None:
            hidden = hidden + extra[:, None, :]
        residual = None
        for layer in self.layers:
            hidden, residual = self.add_norm(hidden, residual, layer.norm.weight)
            hidden = rcps_mixer(layer.mixer, hidden, lengths) if self.variant == "ps" else layer.mixer(hidden, lengths)
        if self.variant == "ps":
            return rcps_add_norm(hidden, residual, self.norm_f.weight, self.eps, swap_halves=False)[0]
        return self.norm_f(hidden + residual if residual is not None else hidden)

    def add_norm(self, hidden, residual, weight):
        """(hidden, residual) -> (norm(hidden + residual), hidden + residual), per strand for "ps"."""
        if self.variant == "ps":
            return rcps_add_norm(hidden, residual, weight, self.eps, self.swap_halves)
        s = hidden if residual is None else hidden + residual
        return F.rms_norm(s, (self.d_model,), weight, self.eps), s

    def logits(self, hidden: torch.Tensor, num_outputs: int | None = None) -> torch.Tensor:
        """Tied LM head over the first ``num_outputs`` tokens (all by default): [B, L, H] -> [B, L, V']."""
        weight = self.embedding.weight
        num_outputs = num_outputs or weight.shape[0]
        if self.variant == "ps":
            return rcps_logits(hidden, weight, self.embedding.complement[:num_outputs])
        return F.linear(hidden, weight[:num_outputs])


class CaduceusDenoiser(nn.Module):
    """Caduceus as a diffusion denoiser: (z_t [B, L], t [B], labels [B] | None) -> logits [B, L, num_outputs].

    ``time_conditioning`` adds an embedding of t, ``num_classes`` > 0 a label embedding (null label id
    ``num_classes``, used when labels is None); for "ps" such a vector v enters as [v, flip(v)], which
    keeps exact RC equivariance. ``conjoin`` ("ph" only) averages f(x) and rc(f(rc(x))) in eval mode;
    ``rc_augment`` ("ph") reverse-complements a random half of the batch in training (and maps logits back).
    """

    def __init__(self, vocab_size: int = 7, num_outputs: int = 4, d_model: int = 128, n_layer: int = 4,
                 variant: str = "ph", d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 complement_map: Sequence[int] = COMPLEMENT, time_conditioning: bool = False,
                 num_classes: int = 0, kernels: str = "auto", conjoin: bool = False, rc_augment: bool = False):
        super().__init__()
        comp = torch.as_tensor(list(complement_map), dtype=torch.long)
        if (len(comp) != vocab_size or num_outputs > vocab_size or not torch.equal(comp[comp], torch.arange(vocab_size))
                or sorted(comp[:num_outputs].tolist()) != list(range(num_outputs))):
            raise UserError(f"the complement map must be its own inverse over {vocab_size} tokens and map the first "
                            f"{num_outputs} among themselves: got {comp.tolist()}")
        self.num_outputs, self.num_classes = num_outputs, num_classes
        self.time_conditioned = bool(time_conditioning)
        self.conjoin, self.rc_augment = conjoin, rc_augment
        self.register_buffer("complement", comp, persistent=False)
        self.backbone = CaduceusBackbone(vocab_size, d_model, n_layer, variant, complement_map,
                                         d_state=d_state, d_conv=d_conv, expand=expand, kernels=kernels)
        self.time_embed = nn.Sequential(nn.Linear(64, d_model), nn.SiLU(), nn.Linear(d_model, d_model)) \
            if time_conditioning else None
        self.label_embed = nn.Embedding(num_classes + 1, d_model) if num_classes > 0 else None

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z_t: LongTensor[B, L]; t: FloatTensor[B]; labels: LongTensor[B] or None -> FloatTensor[B, L, num_outputs]."""
        extra = self.conditioning(z_t, t, labels)

        def logits(ids):
            return self.backbone.logits(self.backbone(ids, extra), self.num_outputs)

        if self.backbone.variant == "ph" and self.training and self.rc_augment:
            flip = torch.rand(z_t.shape[0], device=z_t.device) < 0.5
            out = logits(random_rc(z_t, flip, complement=self.complement))
            return torch.where(flip[:, None, None], rc_logits(out, self.complement), out)
        if self.backbone.variant == "ph" and self.conjoin and not self.training:
            return conjoin(logits, z_t, complement=self.complement, per_position=True)
        return logits(z_t)

    def features(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: LongTensor[B, L] -> final-normed hidden states FloatTensor[B, L, H] (null label, t = 0).

        ``lengths`` (LongTensor[B]): rows right-padded beyond them; valid positions ignore the padding."""
        t = torch.zeros(tokens.shape[0], device=tokens.device)
        return self.backbone(tokens, self.conditioning(tokens, t, None), lengths)

    def conditioning(self, z_t, t, labels):
        """Vector [B, H] added at every position (time and/or label embedding), or None."""
        extra = None
        if self.time_embed is not None:
            extra = self.time_embed(timestep_features(t, 64))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((z_t.shape[0],), self.num_classes, dtype=torch.long, device=z_t.device)
            emb = self.label_embed(labels)
            extra = emb if extra is None else extra + emb
        if extra is not None and self.backbone.variant == "ps":
            extra = torch.cat([extra, extra.flip(-1)], dim=-1)
        return extra


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: [B] -> [B, dim]."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    args = 1000.0 * t.float()[:, None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
