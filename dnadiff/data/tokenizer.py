"""DNA tokenizer: bases to token ids and back (reverse complement: :mod:`dnadiff.rc`).

dnadiff's DNA vocabulary (:mod:`dnadiff.alphabet`; the diffusion vocabulary is the first ``NUM_BASES`` ids):

    A=0  C=1  G=2  T=3   | MASK=4 (= diffusion mask id, V)  N=5  PAD=6

The diffusion core sees ``vocab_size = 4`` (A, C, G, T): N and PAD positions are
excluded from the loss through the position mask, and the sampler never generates
them. Embedding tables are ``EMBED_SIZE = 7`` wide. Lower case (soft-masked repeats)
is upper-cased and every IUPAC ambiguity code (and any other letter) becomes N.
"""
from __future__ import annotations

import numpy as np
import torch

from dnadiff.alphabet import ALPHABET, EMBED_SIZE, MASK, NUM_BASES, PAD, A, C, G, N, T  # noqa: F401 (re-exported)

ID_TO_CHAR = np.frombuffer(b"ACGT?NP", dtype=np.uint8)  # MASK prints as '?', PAD as 'P'

# byte -> id lookup: everything that is not A/C/G/T (any case) is N.
_LUT = np.full(256, N, dtype=np.int64)
for _i, _ch in enumerate(ALPHABET):
    _LUT[ord(_ch)] = _i
    _LUT[ord(_ch.lower())] = _i

#: original Caduceus (Hugging Face) character vocabulary ids for our ids.
CADUCEUS_IDS = {A: 7, C: 8, G: 9, T: 10, N: 11, MASK: 3, PAD: 4}


def encode(seq: str | bytes) -> torch.Tensor:
    """Encode a DNA string into token ids.

    Args:
        seq: a string of length L (any case; non-ACGT letters become N).
    Returns:
        LongTensor[L] of ids in {A, C, G, T, N}.
    """
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    return torch.from_numpy(_LUT[np.frombuffer(seq, dtype=np.uint8)])


def encode_batch(seqs: list[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode and right-pad a list of sequences.

    Returns:
        ids: LongTensor[B, L] (PAD beyond each sequence; longer ones truncated to ``length``),
        valid: BoolTensor[B, L], True on real (non-PAD) positions.
    """
    length = length or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        e = encode(s[:length])
        ids[i, : len(e)] = e
    return ids, ids != PAD


def decode(ids: torch.Tensor) -> str:
    """Decode LongTensor[L] of ids into a string (MASK as '?', PAD as 'P')."""
    arr = ids.detach().cpu().numpy().astype(np.int64)
    return ID_TO_CHAR[arr].tobytes().decode("ascii")


def decode_batch(ids: torch.Tensor) -> list[str]:
    """Decode LongTensor[B, L] into B strings (PAD stripped)."""
    return [decode(row).replace("P", "") for row in ids]


def to_caduceus_ids(ids: torch.Tensor) -> torch.Tensor:
    """Map dnadiff ids to the original Caduceus character-tokenizer ids (same shape)."""
    lut = torch.zeros(EMBED_SIZE, dtype=ids.dtype, device=ids.device)
    for ours, theirs in CADUCEUS_IDS.items():
        lut[ours] = theirs
    return lut[ids]
