"""One training loop for the small CNNs of the evaluation side: the Genomic Benchmarks CNN baseline
(:class:`dnadiff.finetuning.baselines.CNNBaseline`) and the feature network of the sample metrics
(:class:`dnadiff.eval.embedding.SequenceEmbedder`)."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn


def fit_cross_entropy(model: nn.Module, inputs: Sequence[torch.Tensor], targets: torch.Tensor, epochs: int,
                      batch_size: int, lr: float, seed: int, min_batch: int = 1,
                      select: Callable[[nn.Module], float] | None = None) -> nn.Module:
    """Train ``model(*inputs[batch]) -> logits [b, K]`` with Adam on the cross-entropy to ``targets``
    (LongTensor[S]); every input is a tensor with S rows. Each epoch visits the S rows once in an order drawn
    from ``seed``; a last batch smaller than ``min_batch`` is skipped (batch norm needs two rows).

    ``select(model) -> score`` (e.g. a validation accuracy), when given, is called after each epoch and the
    weights of the best-scoring epoch (the first of equals) are kept. Returns ``model`` in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    best_score, best_state = float("-inf"), None
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < min_batch:
                continue
            loss = nn.functional.cross_entropy(model(*(x[batch] for x in inputs)), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if select is not None:
            score = select(model)
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()
