"""Reverse complement, in one place: the complement map of the token ids, the reverse complement of
token ids, of the valid prefix of right-padded batches, of DNA strings and of per-position logits,
random RC of a batch (augmentation) and conjoining (averaging a function of x and of RC(x)), the RC policy
of each model variant (:func:`rc_policy`: who augments, who conjoins, who is equivariant), and the
valid-length flip of right-padded hidden states (row b valid on ``0 .. lengths[b] - 1``: position
l < lengths[b] maps to ``lengths[b] - 1 - l``, padding stays at the end, so a causal scan over the
flipped row never carries a pad into a valid position).

Token ids are those of :mod:`dnadiff.data.tokenizer` (A=0 C=1 G=2 T=3 MASK=4 N=5 PAD=6); a model
with its own complement map passes it as ``complement`` (LongTensor[V'], its own inverse).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dnadiff.alphabet import COMPLEMENT, MASK, PAD, A, C, G, N, T  # noqa: F401

_STRING_COMPLEMENT = str.maketrans("ACGT", "TGCA")


@dataclass(frozen=True)
class RCPolicy:
    """What a model does about the reverse complement, derived from its variant in one place (:func:`rc_policy`).

    ``augment``: training sequences are reverse-complemented with probability 1/2 (pretraining's
    ``data.rc_aug`` stays on, fine-tuning augments). ``conjoin``: inference averages the outputs of x and of
    RC(x) (classifier predictions, classifier guidance, scoring ``strands="both"``, embeddings).
    ``equivariant``: RC-equivariant by parameter sharing (Caduceus-PS): neither is needed, heads and
    embeddings pool the two channel halves invariantly.
    """

    variant: str | None
    augment: bool
    conjoin: bool
    equivariant: bool


#: Caduceus-Ph, Caduceus-PS, and a model without RC symmetry of its own (``None``: transformers), treated as Ph
POLICIES = {"ph": RCPolicy("ph", augment=True, conjoin=True, equivariant=False),
            "ps": RCPolicy("ps", augment=False, conjoin=False, equivariant=True),
            None: RCPolicy(None, augment=True, conjoin=True, equivariant=False)}


def rc_policy(variant: str | None) -> RCPolicy:
    """The :class:`RCPolicy` of a Caduceus variant (``"ph"``, ``"ps"``) or of a model without one (None)."""
    if variant not in POLICIES:
        raise ValueError(f"unknown Caduceus variant {variant!r}: use ph or ps")
    return POLICIES[variant]


def _complement(complement: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if complement is None:
        return torch.tensor(COMPLEMENT, dtype=torch.long, device=like.device)
    return complement.to(like.device)


def reverse_complement(ids: torch.Tensor, complement: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse complement along the last axis: LongTensor[..., L] -> LongTensor[..., L]."""
    return _complement(complement, ids)[ids].flip(-1).to(ids.dtype)


def reverse_complement_valid(tokens: torch.Tensor, valid: torch.Tensor, complement: torch.Tensor | None = None
                             ) -> torch.Tensor:
    """Reverse complement of each row's valid prefix, padding kept where it was.

    Args:
        tokens: LongTensor[B, L] right-padded; valid: BoolTensor[B, L], a prefix of each row (its length
            is the row's sequence length). Returns LongTensor[B, L].
    """
    flipped = flip_valid(tokens, valid.long().sum(1), dim=1)
    return torch.where(valid, _complement(complement, tokens)[flipped], tokens)


def reverse_complement_str(seq: str) -> str:
    """Reverse complement of a DNA string (upper-cased; letters other than A/C/G/T, e.g. N, stay as they are)."""
    return seq.upper().translate(_STRING_COMPLEMENT)[::-1]


def rc_logits(logits: torch.Tensor, complement: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position outputs of the RC strand back onto the forward strand: flip L and permute the outputs
    by the complement. logits: FloatTensor[B, L, V] (V <= len(complement)) -> FloatTensor[B, L, V]."""
    return logits.flip(-2)[..., _complement(complement, logits)[: logits.shape[-1]]]


def random_rc(tokens: torch.Tensor, flip: torch.Tensor, valid: torch.Tensor | None = None,
              complement: torch.Tensor | None = None) -> torch.Tensor:
    """RC augmentation: the rows where ``flip`` (BoolTensor[B]) is True reverse-complemented (only their
    valid prefix when ``valid`` BoolTensor[B, L] is given): LongTensor[B, L] -> LongTensor[B, L]."""
    rc = reverse_complement(tokens, complement) if valid is None else reverse_complement_valid(tokens, valid, complement)
    return torch.where(flip[:, None], rc, tokens)


def conjoin(fn: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, valid: torch.Tensor | None = None,
            complement: torch.Tensor | None = None, per_position: bool = False) -> torch.Tensor:
    """Post-hoc RC conjoining (Caduceus-Ph): (fn(x) + back(fn(RC(x)))) / 2.

    Args:
        fn: tokens LongTensor[B, L] -> outputs; per-sequence outputs ([B, ...]) are averaged as they are,
            per-position logits ([B, L, V], ``per_position=True``) are first mapped back with :func:`rc_logits`.
        valid: BoolTensor[B, L] valid prefixes of a right-padded batch (per-sequence outputs only).
    """
    if per_position and valid is not None:
        raise ValueError("conjoin: per-position outputs of right-padded batches are not supported")
    out = fn(tokens)
    rc = reverse_complement(tokens, complement) if valid is None else reverse_complement_valid(tokens, valid, complement)
    out_rc = fn(rc)
    return (out + (rc_logits(out_rc, complement) if per_position else out_rc)) / 2


def valid_flip_index(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """Source index LongTensor[B, L] of the valid-length flip: ``lengths[b] - 1 - l`` for l < lengths[b], else l.

    It is its own inverse (flipping twice restores the row)."""
    pos = torch.arange(L, device=lengths.device)
    lengths = lengths.to(torch.long)[:, None]
    return torch.where(pos < lengths, lengths - 1 - pos, pos)


def flip_valid(x: torch.Tensor, lengths: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Flip each row of ``x`` (batch on dim 0, positions on ``dim``) within its valid length.

    x: [B, ..., L, ...]; lengths: LongTensor[B] or None (all rows full: a plain flip along ``dim``).
    Returns a tensor of the shape of ``x``.
    """
    dim = dim % x.dim()
    L = x.shape[dim]
    if lengths is None or bool((lengths == L).all()):
        return x.flip(dim)
    index = valid_flip_index(lengths, L)  # [B, L]
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], L
    return x.gather(dim, index.view(shape).expand(x.shape))
