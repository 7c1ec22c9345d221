"""dnadiff's DNA alphabet, the ground floor every DNA module builds on (the tokenizer, reverse complement,
models, scoring):

    A=0  C=1  G=2  T=3   | MASK=4 (= diffusion mask id, V)  N=5  PAD=6

The diffusion core sees ``vocab_size = NUM_BASES = 4``; embedding tables are ``EMBED_SIZE = 7`` wide.
``COMPLEMENT[i]`` is the complement of id i (A<->T, C<->G; MASK, N and PAD are their own).
"""
from __future__ import annotations

A, C, G, T = 0, 1, 2, 3
NUM_BASES = 4
MASK = 4
N = 5
PAD = 6
EMBED_SIZE = 7
ALPHABET = "ACGT"
COMPLEMENT = [T, G, C, A, MASK, N, PAD]
