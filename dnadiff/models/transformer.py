"""A small bidirectional transformer denoiser, usable for DNA, text and pixels.

In the spirit of MDLM's DiT and MD4's text network, written nanoGPT-style:

    tokens -> embedding -> n_layer x [norm -> self-attention (rotary, non-causal) -> +
                                       norm -> MLP (4x, GELU) -> +] -> final norm -> linear -> logits

Options:
- ``time_conditioning=True``: adaLN as in DiT. A conditioning vector ``c`` (an MLP of a sinusoidal
  embedding of ``t``) regresses a shift, a scale and a gate for each sub-layer and a shift and a
  scale for the final norm; the regressions start at zero, so each block starts as the identity.
- ``num_classes > 0``: a label embedding with ``num_classes + 1`` rows (row ``num_classes`` is the
  null label of classifier-free guidance) is added to ``c``; without time conditioning ``c`` is
  the label embedding alone.

Without either, ``c`` does not exist and the norms are plain LayerNorms. The output layer starts
at zero, so an untrained model predicts the uniform distribution over the ``num_outputs`` tokens.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dnadiff.models.checkpointing import run_blocks
from dnadiff.models.conditioning import Conditioned
from dnadiff.models.config import TransformerConfig


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of rotary position embeddings.

    Returns:
        cos, sin: FloatTensor[length, head_dim], the rotation of each (pair of) channel(s) at each position,
        laid out for :func:`apply_rotary` (the two halves of the head dimension form the pairs).
    """
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # [length, head_dim/2]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys by their position: x FloatTensor[B, H, L, D], cos/sin [L, D] -> [B, H, L, D]."""
    first, second = x.chunk(2, dim=-1)
    rotated_half = torch.cat([-second, first], dim=-1)
    return x * cos.to(x.dtype) + rotated_half * sin.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x [B, L, D], shift/scale [B, D] -> x * (1 + scale) + shift."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with rotary positions: [B, L, D] -> [B, L, D]."""

    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)  # 3 x [B,H,L,Dh]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=False)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """One transformer block; with a conditioning vector c [B, D] its norms and residuals are adaLN-modulated."""

    def __init__(self, d_model: int, n_head: int, dropout: float, conditioned: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=not conditioned)
        self.attn = SelfAttention(d_model, n_head, dropout)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=not conditioned)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)
        self.ada = None
        if conditioned:  # shift, scale, gate for attention and for the MLP, starting at zero
            self.ada = nn.Linear(d_model, 6 * d_model)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if self.ada is None:
            x = x + self.drop(self.attn(self.norm1(x), cos, sin))
            return x + self.drop(self.mlp(self.norm2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        x = x + gate1[:, None, :] * self.drop(self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin))
        return x + gate2[:, None, :] * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2)))


class DiffusionTransformer(Conditioned):
    """Bidirectional transformer denoiser (the dnadiff denoiser contract), built from a
    :class:`TransformerConfig` (or its fields as keywords):

        embed_size: rows of the token embedding: every id that may appear in ``z_t``, the mask id
            ``num_outputs`` included (e.g. 7 for DNA, V + 2 for text/pixels with a PAD id).
        num_outputs: V, the number of real tokens the logits range over.
        d_model, n_layer, n_head: width, depth, attention heads (``d_model`` divisible by ``n_head``,
            head dimension even for the rotary embeddings).
        max_len: longest sequence (length of the rotary tables).
        time_conditioning: condition on t through adaLN.
        num_classes: > 0 adds a label embedding with null id ``num_classes``.
        dropout: dropout on attention weights and residual branches.
    """

    #: activation checkpointing of the blocks: 0 off, k > 0 groups of k (dnadiff.models.checkpointing)
    checkpoint_every: int = 0

    def __init__(self, config: TransformerConfig | None = None, **kwargs):
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("give a TransformerConfig or its fields as keywords, not both")
        self.config = c = config if config is not None else TransformerConfig(**kwargs)
        self.embed_size, self.num_outputs, self.max_len = c.embed_size, c.num_outputs, c.max_len
        conditioned = c.time_conditioning or c.num_classes > 0

        self.embed = nn.Embedding(c.embed_size, c.d_model)
        self.init_conditioning(c.d_model, c.time_conditioning, c.num_classes, num_frequencies=256)
        cos, sin = rotary_tables(c.max_len, c.d_model // c.n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_head, c.dropout, conditioned) for _ in range(c.n_layer))
        self.final_norm = nn.LayerNorm(c.d_model, elementwise_affine=not conditioned)
        self.final_ada = None
        if conditioned:
            self.final_ada = nn.Linear(c.d_model, 2 * c.d_model)
            nn.init.zeros_(self.final_ada.weight)
            nn.init.zeros_(self.final_ada.bias)
        self.head = nn.Linear(c.d_model, c.num_outputs)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _hidden(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Final-normed hidden states: z_t LongTensor[B, L] -> FloatTensor[B, L, d_model]."""
        B, L = z_t.shape
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len={self.max_len}")
        c = self.conditioning(t, labels)
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        x = self.embed(z_t)
        (x,) = run_blocks(self.blocks, (x,), lambda block, h: (block(h, cos, sin, c),), self.checkpoint_every)
        x = self.final_norm(x)
        if self.final_ada is not None:
            shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        return x

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise: z_t LongTensor[B, L] (mask id = num_outputs), t FloatTensor[B], labels LongTensor[B] or None
        -> logits FloatTensor[B, L, num_outputs] over the real tokens."""
        return self.head(self._hidden(z_t, t, labels))

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states of clean tokens (t = 0, null label) for classification heads:
        LongTensor[B, L] -> FloatTensor[B, L, d_model]."""
        t = torch.zeros(tokens.shape[0], device=tokens.device)
        return self._hidden(tokens, t, None)
