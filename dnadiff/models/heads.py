"""Sequence classification on top of a denoiser's ``features``: pooling that ignores padding and
reverse-complement symmetric read-outs (RC-invariant pooling for Caduceus-PS, conjoined x / rc(x) for Ph)."""
from __future__ import annotations

import torch
import torch.nn as nn

from dnadiff.data.tokenizer import COMPLEMENT
from dnadiff.errors import UserError

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


def reverse_complement_valid(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse complement of each row's valid prefix, padding kept where it was: [B, L] -> [B, L]."""
    comp = torch.tensor(COMPLEMENT, device=tokens.device)
    lengths = valid.long().sum(1, keepdim=True)
    pos = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    source = torch.where(valid, lengths - 1 - pos, pos)
    return torch.where(valid, comp[tokens.gather(1, source)], tokens)


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
        logits = self.strand_logits(self.backbone.features(tokens), valid)
        conjoin = (not self.training) if self.conjoin is None else self.conjoin
        if conjoin and not self.rcps:
            rc = self.strand_logits(self.backbone.features(reverse_complement_valid(tokens, valid)), valid)
            logits = (logits + rc) / 2
        return logits

    def strand_logits(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if not self.rcps:
            return self.score(pool(hidden, valid, self.pooling))
        fwd, rc = hidden.chunk(2, dim=-1)
        rc_order = {"mean": "mean", "first": "last", "last": "first"}[self.pooling]
        return (self.score(pool(fwd, valid, self.pooling)) + self.score(pool(rc.flip(-1), valid, rc_order))) / 2
