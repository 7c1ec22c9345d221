"""Sequence classification on top of a denoiser's ``features``: pooling that ignores padding and
reverse-complement symmetric read-outs (RC-invariant pooling for Caduceus-PS, conjoined x / rc(x) for Ph)."""
from __future__ import annotations

import torch
import torch.nn as nn

from dnadiff.errors import UserError
from dnadiff.rc import conjoin as conjoined

POOLINGS = ("mean", "first", "last")


def pool(hidden: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """Pool [B, L, H] over valid positions (BoolTensor[B, L], a prefix of each row) -> [B, H].

    "mean": mean over valid positions; "first": first valid position; "last": last valid position.
    """
    if how == "mean":
        w = valid.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)
    index = torch.zeros_like(valid[:, 0], dtype=torch.long) if how == "first" else \
        (valid.long().sum(1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


class SequenceClassifier(nn.Module):
    """Backbone features -> pooled -> linear score: forward(tokens [B, L], valid [B, L]) -> logits [B, C].

    For a Caduceus-PS backbone ([B, L, 2d] features) the score reads both strands (forward half, and the
    channel-flipped RC half pooled in RC order) and averages: exactly RC-invariant. Any other backbone
    is conjoined, averaging the scores of x and of the RC of its valid part: ``conjoin`` True always,
    False never, None (default) post hoc, i.e. in eval mode only (Caduceus-Ph's recipe).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: str = "mean", conjoin: bool | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        self.backbone, self.pooling, self.conjoin = backbone, pooling, conjoin
        inner = getattr(backbone, "backbone", None)
        self.rcps = getattr(inner, "variant", None) == "ps"
        self.length_aware = hasattr(inner, "variant")  # a Caduceus backbone takes lengths
        if inner is not None and hasattr(inner, "d_model"):
            width = inner.d_model
        else:  # any other denoiser: read the feature width off a one-token input
            with torch.no_grad():
                width = backbone.features(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
        self.score = nn.Linear(width, num_classes)
        nn.init.normal_(self.score.weight, std=0.02)
        nn.init.zeros_(self.score.bias)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """tokens: LongTensor[B, L] (dnadiff ids, PAD outside ``valid``); valid: BoolTensor[B, L] -> [B, C]."""
        def logits(ids):
            return self.strand_logits(self.features(ids, valid), valid)

        conjoin = (not self.training) if self.conjoin is None else self.conjoin
        return conjoined(logits, tokens, valid) if conjoin and not self.rcps else logits(tokens)

    def features(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, L, H]; a length-aware backbone (Caduceus) gets each row's valid length, so
        padding never changes a valid position (other backbones see the padded rows as they are)."""
        if self.length_aware:
            return self.backbone.features(tokens, valid.long().sum(1))
        return self.backbone.features(tokens)

    def strand_logits(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if not self.rcps:
            return self.score(pool(hidden, valid, self.pooling))
        fwd, rc = hidden.chunk(2, dim=-1)
        rc_order = {"mean": "mean", "first": "last", "last": "first"}[self.pooling]
        return (self.score(pool(fwd, valid, self.pooling)) + self.score(pool(rc.flip(-1), valid, rc_order))) / 2
