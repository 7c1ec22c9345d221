"""Sequence embeddings: one reverse-complement-invariant vector per sequence from a denoiser's hidden states.

Hidden states are those of the clean sequence (t = 0, null label), padding-free (right-padded rows with
their valid lengths: a length-aware Caduceus backbone never lets padding reach a valid position), mean-pooled
over the sequence. RC invariance: Caduceus-PS pools its forward half and its channel-flipped RC half and
averages them (exactly invariant by parameter sharing); every other model (Caduceus-Ph, transformers)
averages the pooled vectors of the sequence and of its reverse complement.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dnadiff.data.tokenizer import encode_batch
from dnadiff.errors import UserError
from dnadiff.rc import rc_policy, reverse_complement_valid
from dnadiff.models.heads import pool
from dnadiff.scoring.common import device_of, parts, variant_of


def num_layers(denoiser) -> int | None:
    """Number of blocks of a Caduceus denoiser (None for other denoisers)."""
    backbone = getattr(denoiser, "backbone", None)
    layers = getattr(backbone, "layers", None)
    return None if layers is None or variant_of(denoiser) is None else len(layers)


def check_layer(denoiser, layer: int | None) -> int | None:
    """The number of blocks; UserError when ``layer`` is not one of 0..n_layer (or a layer is asked of a non-Caduceus model)."""
    n = num_layers(denoiser)
    if layer is None:
        return n
    if n is None:
        raise UserError("--layer needs a Caduceus model (this denoiser exposes its last hidden state only): drop --layer")
    if not 0 <= layer <= n:
        raise UserError(f"layer {layer} is out of range: this model has layers 0 (embedding) to {n} (last, the default)")
    return n


def hidden_states(denoiser, tokens: torch.Tensor, lengths: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """Hidden states FloatTensor[B, L, H] of clean tokens LongTensor[B, L] (right-padded, valid ``lengths`` LongTensor[B]).

    ``layer`` None (or the number of blocks): the final-normed output of the backbone; 0: the embedding; k in
    1..n_layer-1: the residual stream after block k (Caduceus only). H is 2 * d_model for Caduceus-PS.
    """
    n = check_layer(denoiser, layer)
    if layer is None or layer == n:
        if variant_of(denoiser) is not None:
            return denoiser.features(tokens, lengths)
        return denoiser.features(tokens)
    backbone = denoiser.backbone
    t = torch.zeros(tokens.shape[0], device=tokens.device)
    extra = denoiser.strand_conditioning(t, None)
    hidden = backbone.embedding(tokens)
    if extra is not None:
        hidden = hidden + extra[:, None, :]
    residual = None
    for block in backbone.layers[:layer]:
        hidden, residual = block(hidden, residual, lengths)
    return hidden if residual is None else hidden + residual


def pooled(denoiser, tokens: torch.Tensor, valid: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """RC-invariant mean-pooled vectors FloatTensor[B, D] of right-padded tokens [B, L] (valid BoolTensor[B, L]).

    D = d_model for Caduceus (PS: the two halves averaged in the same orientation), else the feature width."""
    lengths = valid.long().sum(1)
    if rc_policy(variant_of(denoiser)).equivariant:
        h = hidden_states(denoiser, tokens, lengths, layer)
        fwd, rc = h.chunk(2, dim=-1)
        return (pool(fwd, valid, "mean") + pool(rc.flip(-1), valid, "mean")) / 2
    fwd = pool(hidden_states(denoiser, tokens, lengths, layer), valid, "mean")
    rc_tokens = reverse_complement_valid(tokens, valid)
    rc = pool(hidden_states(denoiser, rc_tokens, lengths, layer), valid, "mean")
    return (fwd + rc) / 2


@torch.no_grad()
def embed(model, seqs: Sequence[str], layer: int | None = None, batch_size: int = 64, max_tokens: int = 65_536) -> np.ndarray:
    """One RC-invariant vector per sequence: float32[S, D], rows in the order of ``seqs``.

    Sequences run in length-sorted batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens,
    each padded to its own longest sequence only (bounded memory; a non-Caduceus backbone, which would see the
    padding, gets batches of equal lengths). ``layer``: see :func:`hidden_states`.
    """
    denoiser, _, _ = parts(model)
    device = device_of(denoiser)
    seqs = list(seqs)
    if any(len(s) == 0 for s in seqs):
        raise UserError("an empty sequence cannot be embedded: remove it from the input")
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list = [None] * len(seqs)
    i = 0
    while i < len(order):
        longest = len(seqs[order[min(i + batch_size, len(order)) - 1]])
        rows = order[i : i + max(1, min(batch_size, max_tokens // longest))]
        if variant_of(denoiser) is None:  # a backbone without lengths would see the padding: equal lengths only
            rows = [j for j in rows if len(seqs[j]) == len(seqs[rows[0]])]
        tokens, valid = encode_batch([seqs[j] for j in rows])
        vec = pooled(denoiser, tokens.to(device), valid.to(device), layer).float().cpu().numpy()
        for j, v in zip(rows, vec):
            out[j] = v
        i += len(rows)
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)
