"""Sequence scores: the NELBO bound in bits per base (with its standard error and draw count) and the
batched pseudo-log-likelihood (each position's log-probability when it alone is masked)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dnadiff.data.tokenizer import NUM_BASES, encode
from dnadiff.scoring.common import device_of, masked_logprobs, parts, resolve_strands, window_around

LN2 = math.log(2)


@dataclass
class SequenceScores:
    """Per-sequence NELBO scores of S sequences (float64[S] arrays).

    ``bits_per_base``: the NELBO (an upper bound on -log2 p(x)) divided by the A/C/G/T bases; ``stderr``: its
    Monte-Carlo standard error (from ``num_t`` stratified draws of t and of the mask per window piece);
    ``bases``: counted bases (N is not scored; NaN scores for sequences without a base); ``num_t``: draws.
    """

    bits_per_base: np.ndarray
    stderr: np.ndarray
    bases: np.ndarray
    num_t: int


@torch.no_grad()
def nelbo_scores(model, seqs: Sequence[str], num_t: int = 8, batch_size: int = 64, seed: int = 0,
                 progress=None) -> SequenceScores:
    """NELBO of each sequence in bits per base with its standard error.

    Sequences longer than the model's window are cut into consecutive pieces of at most the window;
    the pieces' NELBOs (and their Monte-Carlo variances) add. Pieces of equal length run together in
    batches of ``batch_size``. ``progress(done_pieces, total_pieces)`` is called after each batch.

    Args:
        model: has ``.denoiser``, ``.diffusion``, ``.window`` (see :mod:`dnadiff.scoring.common`).
        seqs: S strings over A/C/G/T (other letters count as N and are not scored).
    Returns:
        :class:`SequenceScores` with float64[S] arrays.
    """
    denoiser, diffusion, window = parts(model)
    device = device_of(denoiser)
    pieces, owners = [], []
    for i, s in enumerate(seqs):
        for start in range(0, len(s), window):
            piece = s[start : start + window]
            if any(c in "ACGTacgt" for c in piece):  # a piece without a base adds nothing (and costs no call)
                pieces.append(piece)
                owners.append(i)
    generator = torch.Generator(device=device).manual_seed(seed)
    nats, var, bases = np.zeros(len(seqs)), np.zeros(len(seqs)), np.zeros(len(seqs))
    groups: dict[int, list[int]] = {}
    for j, p in enumerate(pieces):
        groups.setdefault(len(p), []).append(j)
    done = 0
    for same in groups.values():
        for start in range(0, len(same), batch_size):
            rows = same[start : start + batch_size]
            x = torch.stack([encode(pieces[j]) for j in rows]).to(device)
            counted = x < NUM_BASES
            draws = diffusion.nelbo_draws(denoiser, x, num_t=num_t, loss_mask=counted, generator=generator).double().cpu()
            who = [owners[j] for j in rows]
            np.add.at(nats, who, draws.mean(1).numpy())
            if num_t > 1:
                np.add.at(var, who, (draws.var(1) / num_t).numpy())
            np.add.at(bases, who, counted.sum(-1).cpu().numpy())
            done += len(rows)
            if progress is not None:
                progress(done, len(pieces))
    bits = np.full(len(seqs), math.nan)
    se = np.full(len(seqs), math.nan)
    ok = bases > 0
    bits[ok] = nats[ok] / bases[ok] / LN2
    if num_t > 1:
        se[ok] = np.sqrt(var[ok]) / bases[ok] / LN2
    return SequenceScores(bits, se, bases, num_t)


@torch.no_grad()
def pseudo_log_likelihood(model, seq: str, batch_size: int = 64, strands: str = "auto") -> np.ndarray:
    """Each position's log-probability (nats) of its own base when it alone is masked, the rest of the
    sequence (a window of at most the model's window around it) as context: float64[L], NaN at N positions.

    Batched: a sequence of length L costs ceil(L / batch_size) denoiser calls (twice the rows with
    ``strands="both"``). The sum over positions is the pseudo-log-likelihood.
    """
    denoiser, diffusion, window = parts(model)
    strands = resolve_strands(denoiser, strands)
    device = device_of(denoiser)
    x = encode(seq)
    out = np.full(len(seq), math.nan)
    positions = [i for i in range(len(seq)) if int(x[i]) < NUM_BASES]
    for start in range(0, len(positions), batch_size):
        rows = positions[start : start + batch_size]
        spans = [window_around(len(seq), i, window) for i in rows]
        windows = torch.stack([x[a:b] for a, b in spans]).to(device)
        centers = torch.tensor([i - a for i, (a, _) in zip(rows, spans)], device=device)
        logp = masked_logprobs(denoiser, diffusion, windows, centers, strands).double().cpu()
        out[rows] = logp[torch.arange(len(rows)), x[rows]].numpy()
    return out
