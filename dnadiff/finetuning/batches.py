"""Batches of fine-tuning with bounded memory: an effective batch run as micro-batches, each padded only
to its own longest sequence, and length-sorted inference batches.

The configured batch (e.g. 256) stays the optimiser's batch: its examples are sorted by length and cut
into micro-batches of at most ``micro`` examples; each micro-batch's loss is its summed cross-entropy
divided by the whole batch size, so the accumulated gradient equals the full-batch mean gradient (the
backbone is length-aware, so padding changes nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dnadiff.seeds import step_generator
from dnadiff.data.tokenizer import encode_batch

#: default working-set budget of one micro-batch: tokens x d_model x n_layer (activation memory of the
#: backbone grows with this product). 470k (118 x 4) at 251 bp -> 33 sequences (about 1.5 GB of peak RSS
#: on the CPU), at 593 bp -> 14.
MICRO_BUDGET = 4_000_000
#: inference keeps no activations for a backward pass: a larger budget per batch.
INFERENCE_BUDGET = 4 * MICRO_BUDGET


def default_micro_batch(batch_size: int, max_length: int, d_model: int, n_layer: int,
                        budget: int = MICRO_BUDGET) -> int:
    """Micro-batch size (sequences) keeping tokens x d_model x n_layer within ``budget``, in [1, batch_size]."""
    per_sequence = max(1, max_length) * max(1, d_model) * max(1, n_layer)
    return int(max(1, min(batch_size, budget // per_sequence)))


@dataclass
class MicroBatch:
    """tokens LongTensor[b, l] (PAD beyond each row), valid BoolTensor[b, l], labels LongTensor[b],
    index LongTensor[b] (positions in the dataset); l is the longest row of this micro-batch."""

    tokens: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


def length_sorted(index: np.ndarray, seqs: list[str], max_length: int) -> np.ndarray:
    """``index`` reordered by decreasing (cut) sequence length (stable)."""
    lengths = np.array([min(len(seqs[i]), max_length) for i in index])
    return np.asarray(index)[np.argsort(-lengths, kind="stable")]


def make_micro_batches(index: np.ndarray, seqs: list[str], labels: np.ndarray, max_length: int,
                       micro: int) -> list[MicroBatch]:
    """The examples ``index`` sorted by length and cut into micro-batches of at most ``micro`` rows,
    each padded to its own longest row (at most ``max_length``)."""
    order = length_sorted(index, seqs, max_length)
    out = []
    for start in range(0, len(order), micro):
        rows = order[start : start + micro]
        tokens, valid = encode_batch([seqs[i][:max_length] for i in rows])
        out.append(MicroBatch(tokens, valid, torch.as_tensor(labels[rows], dtype=torch.long),
                              torch.as_tensor(rows, dtype=torch.long)))
    return out


def inference_batches(index: np.ndarray, seqs: list[str], labels: np.ndarray, max_length: int,
                      budget_tokens: int) -> list[np.ndarray]:
    """Index chunks for inference, length-sorted, each holding at most ``budget_tokens`` padded tokens."""
    order = length_sorted(index, seqs, max_length)
    chunks, start = [], 0
    while start < len(order):
        longest = max(1, min(len(seqs[order[start]]), max_length))
        size = max(1, budget_tokens // longest)
        chunks.append(order[start : start + size])
        start += size
    return chunks


class RankBatches:
    """Batch sampler of one process: epoch e shuffles 0..N-1 with seed (seed, e), identically on every rank,
    cuts the order into global batches of ``batch_size`` and yields this rank's share of each
    (``batch[rank::world]``). A last global batch with fewer examples than processes is dropped, so every
    rank takes the same number of optimiser steps. One process: plain shuffled batches."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0

    @staticmethod
    def steps(n: int, batch_size: int, world: int = 1) -> int:
        """Optimiser steps per epoch."""
        full, rest = divmod(n, batch_size)
        return full + (1 if rest >= world else 0)

    def __len__(self) -> int:
        return self.steps(self.n, self.batch_size, self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = step_generator(self.seed, self.epoch, stream="epoch")
        self.epoch += 1
        order = torch.randperm(self.n, generator=g).tolist()
        for step in range(len(self)):
            yield order[step * self.batch_size : (step + 1) * self.batch_size][self.rank :: self.world]


class TrainCollate:
    """DataLoader collate: a list of dataset indices (this process's share of one effective batch) ->
    ``{"micro": [MicroBatch...], "size": b}`` (b: the rows of this share)."""

    def __init__(self, seqs: list[str], labels: np.ndarray, max_length: int, micro: int):
        self.seqs, self.labels, self.max_length, self.micro = seqs, np.asarray(labels), max_length, micro

    def __call__(self, index: list[int]) -> dict:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return {"micro": make_micro_batches(index, self.seqs, self.labels, self.max_length, self.micro),
                "size": len(index)}


class InferenceCollate:
    """DataLoader collate for pre-chunked inference: an index chunk -> one :class:`MicroBatch`."""

    def __init__(self, seqs: list[str], labels: np.ndarray, max_length: int):
        self.seqs, self.labels, self.max_length = seqs, np.asarray(labels), max_length

    def __call__(self, chunk: list[np.ndarray]) -> MicroBatch:
        (rows,) = chunk
        return make_micro_batches(rows, self.seqs, self.labels, self.max_length, len(rows))[0]


def small_data_batch(num_train: int, batch_size: int, min_steps: int = 20, floor: int = 8) -> int:
    """Batch giving about ``min_steps`` optimiser steps per epoch when ``batch_size`` gives fewer:
    ``max(floor, num_train // min_steps)`` (never above ``batch_size``); ``batch_size`` otherwise."""
    if math.ceil(num_train / batch_size) >= min_steps:
        return batch_size
    return int(min(batch_size, max(floor, num_train // min_steps)))
