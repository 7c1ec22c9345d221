"""Unit conversions for likelihoods: nats -> bits per character / per dimension, perplexity, uniform baseline.

A NELBO summed over a set of tokens, in nats, divided by the number of tokens and by ln 2, is the
number of bits per token: bits per character (bpc) for character-level text, bits per byte for
byte-level text, bits per dimension (bpd) for images whose tokens are channel values, bits per base
for DNA. A model that knows nothing assigns each of V tokens probability 1/V: log2(V) bits.
"""
from __future__ import annotations

import math

LN2 = math.log(2.0)


def nats_to_bits(nats: float) -> float:
    """Convert nats to bits: nats / ln 2."""
    return nats / LN2


def bits_per_token(total_nats: float, num_tokens: int) -> float:
    """Bits per token from a NELBO summed over ``num_tokens`` tokens (in nats)."""
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    return total_nats / (num_tokens * LN2)


def bits_per_character(total_nats: float, num_characters: int) -> float:
    """Bits per character (bpc) of character-level text: total nats / (characters * ln 2)."""
    return bits_per_token(total_nats, num_characters)


def bits_per_dimension(total_nats: float, num_dimensions: int) -> float:
    """Bits per dimension (bpd) of images, one dimension per channel value: total nats / (dims * ln 2)."""
    return bits_per_token(total_nats, num_dimensions)


def perplexity(total_nats: float, num_tokens: int) -> float:
    """Per-token perplexity: exp(total nats / tokens)."""
    return math.exp(total_nats / num_tokens)


def uniform_bits(vocab_size: int) -> float:
    """Bits per token of the uniform distribution over ``vocab_size`` tokens: log2(V)."""
    return math.log2(vocab_size)
