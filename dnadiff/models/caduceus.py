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
from dnadiff.models.checkpointing import run_blocks
from dnadiff.models.conditioning import Conditioned
from dnadiff.models.config import CaduceusConfig
from dnadiff.models.rcps import RCPSEmbedding, rcps_logits, rcps_mixer
from dnadiff.rc import COMPLEMENT, conjoin, random_rc, rc_logits

VARIANTS = ("ph", "ps")


class CaduceusBlock(nn.Module):
    """RMSNorm + BiMamba mixer; parameters ``norm.weight`` and ``mixer.mamba_{fwd,rev}.*``.

    For "ps" the hidden states are [forward strand | RC strand] (2 * d_model channels) and the mixer
    runs on both strands (``rcps_mixer``); ``swap_halves`` is the fused add-norm order (see ``rcps_add_norm``).
    """

    def __init__(self, d_model: int, eps: float, variant: str = "ph", swap_halves: bool = False, **mamba_kwargs):
        super().__init__()
        self.d_model, self.eps, self.variant, self.swap_halves = d_model, eps, variant, swap_halves
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.mixer = BiMamba(d_model, **mamba_kwargs)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-norm residual block in mamba-ssm's fused order: residual' = hidden + residual (hidden at the
        first block, ``residual`` None), hidden' = mixer(norm(residual')).

        hidden, residual: FloatTensor[B, L, H]; lengths: LongTensor[B] valid lengths of right-padded rows
        (or None). Returns (hidden', residual'), both [B, L, H].
        """
        residual = self.add(hidden, residual)
        return self.mix(residual, lengths), residual

    def add(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The residual sum this block normalises: hidden + residual (for "ps" with ``swap_halves`` its two
        halves swapped, see :func:`rcps_add_norm`): [B, L, H] -> [B, L, H]."""
        return residual_sum(hidden, residual, self.variant == "ps" and self.swap_halves)

    def mix(self, residual: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mixer(norm(residual)), the block's output hidden state: [B, L, H] -> [B, L, H]."""
        if self.variant == "ps":
            d = self.d_model
            s1, s2 = residual.chunk(2, dim=-1)
            normed = torch.cat([F.rms_norm(s1, (d,), self.norm.weight, self.eps),
                                F.rms_norm(s2, (d,), self.norm.weight.flip(0), self.eps)], dim=-1)
            return rcps_mixer(self.mixer, normed, lengths)
        return self.mixer(F.rms_norm(residual, (self.d_model,), self.norm.weight, self.eps), lengths)


def residual_sum(hidden: torch.Tensor, residual: torch.Tensor | None, swap_halves: bool = False) -> torch.Tensor:
    """hidden + residual (hidden alone when residual is None), halves swapped when ``swap_halves`` (the
    fused add-norm order of "ps", as in :func:`rcps_add_norm`): [B, L, H] -> [B, L, H]."""
    s = hidden if residual is None else hidden + residual
    if swap_halves:
        s1, s2 = s.chunk(2, dim=-1)
        s = torch.cat([s2, s1], dim=-1)
    return s


class CaduceusBackbone(nn.Module):
    """Token ids [B, L] -> final-normed hidden states [B, L, H] (H = d_model, or 2 * d_model for "ps").

    ``checkpoint_every`` = k > 0 checkpoints the blocks in groups of k while autograd records
    (:mod:`dnadiff.models.checkpointing`): the backward keeps only each group's input (the running
    residual sum, H values a token) instead of every block's activations, and runs the group again.
    """

    #: activation checkpointing: 0 off, k > 0 groups of k blocks (set by ``set_activation_checkpointing``)
    checkpoint_every: int = 0

    def __init__(self, embed_size: int, d_model: int, n_layer: int, variant: str = "ph",
                 complement_map: Sequence[int] = COMPLEMENT, norm_eps: float = 1e-5,
                 fused_add_norm: bool = True, **mamba_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise UserError(f"unknown Caduceus variant {variant!r}: use 'ph' or 'ps'")
        self.variant, self.d_model, self.eps = variant, d_model, norm_eps
        if variant == "ps":
            if len(complement_map) != embed_size:
                raise UserError(f"complement map has {len(complement_map)} entries for {embed_size} tokens: "
                                "give one complement id per token")
            self.embedding = RCPSEmbedding(embed_size, d_model, complement_map)
        else:
            self.embedding = nn.Embedding(embed_size, d_model)
        swap = variant == "ps" and fused_add_norm  # see rcps_add_norm
        self.layers = nn.ModuleList(CaduceusBlock(d_model, norm_eps, variant, swap, **mamba_kwargs)
                                    for _ in range(n_layer))
        self.norm_f = nn.RMSNorm(d_model, eps=norm_eps)
        self.reset_parameters(n_layer)

    @property
    def swap_halves(self) -> bool:
        """The fused add-norm order of the "ps" blocks (False for "ph"); settable on the whole stack."""
        return bool(self.layers) and self.layers[0].swap_halves

    @swap_halves.setter
    def swap_halves(self, value: bool) -> None:
        for layer in self.layers:
            layer.swap_halves = bool(value)

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
        # the stack as one running residual sum s (mamba-ssm's fused add-norm order, the same operations):
        # s_0 = add_0(embedding), s_{i+1} = add_{i+1}(mix_i(s_i), s_i), output norm_f(s_n); one tensor a block
        # boundary is all a checkpointed group keeps
        n = len(self.layers)
        swaps = [layer.variant == "ps" and layer.swap_halves for layer in self.layers] + [False]

        def step(i, s):
            return (residual_sum(self.layers[i].mix(s, lengths), s, swaps[i + 1]),)

        if n == 0:
            s = hidden
        else:
            (s,) = run_blocks(range(n), (residual_sum(hidden, None, swaps[0]),), step, self.checkpoint_every)
        if self.variant == "ps":
            d = self.d_model
            s1, s2 = s.chunk(2, dim=-1)
            return torch.cat([F.rms_norm(s1, (d,), self.norm_f.weight, self.eps),
                              F.rms_norm(s2, (d,), self.norm_f.weight.flip(0), self.eps)], dim=-1)
        return self.norm_f(s)

    def logits(self, hidden: torch.Tensor, num_outputs: int | None = None) -> torch.Tensor:
        """Tied LM head over the first ``num_outputs`` tokens (all by default): [B, L, H] -> [B, L, V']."""
        weight = self.embedding.weight
        num_outputs = num_outputs or weight.shape[0]
        if self.variant == "ps":
            return rcps_logits(hidden, weight, self.embedding.complement[:num_outputs])
        return F.linear(hidden, weight[:num_outputs])


class CaduceusDenoiser(Conditioned):
    """Caduceus as a diffusion denoiser: (z_t [B, L], t [B], labels [B] | None) -> logits [B, L, num_outputs].

    Built from a :class:`CaduceusConfig` (or its fields as keywords). ``time_conditioning`` adds an
    embedding of t, ``num_classes`` > 0 a label embedding (null label id ``num_classes``, used when labels
    is None); for "ps" such a vector v enters as [v, flip(v)], which keeps exact RC equivariance.
    ``conjoin`` ("ph" only) averages f(x) and rc(f(rc(x))) in eval mode; ``rc_aug`` ("ph")
    reverse-complements a random half of the batch in training (and maps the logits back).
    """

    def __init__(self, config: CaduceusConfig | None = None, **kwargs):
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("give a CaduceusConfig or its fields as keywords, not both")
        self.config = c = config if config is not None else CaduceusConfig(**kwargs)
        self.num_outputs = c.num_outputs
        self.conjoin, self.rc_aug = c.conjoin, c.rc_aug
        self.register_buffer("complement", torch.tensor(c.complement_map, dtype=torch.long), persistent=False)
        self.backbone = CaduceusBackbone(c.embed_size, c.d_model, c.n_layer, c.variant, c.complement_map,
                                         d_state=c.d_state, d_conv=c.d_conv, expand=c.expand, kernels=c.kernels)
        self.init_conditioning(c.d_model, c.time_conditioning, c.num_classes, num_frequencies=64)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z_t: LongTensor[B, L]; t: FloatTensor[B]; labels: LongTensor[B] or None -> FloatTensor[B, L, num_outputs]."""
        extra = self.strand_conditioning(t, labels)

        def logits(ids):
            return self.backbone.logits(self.backbone(ids, extra), self.num_outputs)

        if self.backbone.variant == "ph" and self.training and self.rc_aug:
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
        return self.backbone(tokens, self.strand_conditioning(t, None), lengths)

    def strand_conditioning(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning vector added at every position: [B, H] (for "ps" [c, flip(c)]), or None."""
        extra = self.conditioning(t, labels)
        if extra is not None and self.backbone.variant == "ps":
            extra = torch.cat([extra, extra.flip(-1)], dim=-1)
        return extra
