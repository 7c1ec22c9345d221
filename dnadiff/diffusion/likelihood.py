"""Likelihood evaluation: NELBO in nats / bits per token and perplexity, with standard errors."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass
class LikelihoodReport:
    """Aggregate NELBO over a set of sequences (an upper bound on -log p per token)."""

    nats_per_token: float
    nats_stderr: float
    num_tokens: int
    num_sequences: int

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def bits_stderr(self) -> float:
        return self.nats_stderr / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    @property
    def perplexity_stderr(self) -> float:  # delta method
        return self.perplexity * self.nats_stderr

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(bits_per_token=self.bits_per_token, bits_stderr=self.bits_stderr,
                 perplexity=self.perplexity, perplexity_stderr=self.perplexity_stderr)
        return d


def summarize(draws: torch.Tensor, num_tokens: torch.Tensor) -> LikelihoodReport:
    """Per-token NELBO and its standard error from per-sequence Monte-Carlo draws.

    Args:
        draws: FloatTensor[B, K] NELBO draws (nats) per sequence. num_tokens: Long/FloatTensor[B].
    The estimate is sum_b mean_k draws / sum_b n_b. Its standard error treats sequences as the
    sampling unit (ratio estimator; includes the Monte-Carlo noise of t and z); with a single
    sequence it falls back to the Monte-Carlo error of its K draws.
    """
    draws = draws.double()
    n = num_tokens.double()
    y = draws.mean(1)
    total = n.sum()
    r = y.sum() / total
    B, K = draws.shape
    if B > 1:
        resid = y - r * n
        se = math.sqrt(float((resid**2).sum()) / (B * (B - 1))) * B / float(total)
    else:
        se = float(draws.std(1).sum() / math.sqrt(K) / total) if K > 1 else float("nan")
    return LikelihoodReport(float(r), se, int(total), B)


@torch.no_grad()
def evaluate(process, denoiser, batches, num_t: int = 8, exact_steps: int | None = None,
             generator: torch.Generator | None = None) -> LikelihoodReport:
    """NELBO over an iterable of batches (dicts with ``tokens`` [B, L], optional ``loss_mask``
    [B, L] and ``labels`` [B]); ``exact_steps`` uses the exact discrete-time sum instead."""
    all_draws, all_n = [], []
    device = next(denoiser.parameters()).device
    for batch in batches:
        x = batch["tokens"].to(device)
        loss_mask = batch.get("loss_mask")
        loss_mask = torch.ones_like(x, dtype=torch.bool) if loss_mask is None else loss_mask.to(device)
        labels = batch.get("labels")
        labels = None if labels is None else labels.to(device)
        if exact_steps is not None:
            d = process.nelbo(denoiser, x, loss_mask=loss_mask, labels=labels, exact_steps=exact_steps, generator=generator)[:, None]
        else:
            d = process.nelbo_draws(denoiser, x, num_t=num_t, loss_mask=loss_mask, labels=labels, generator=generator)
        all_draws.append(d.cpu())
        all_n.append(loss_mask.sum(-1).cpu())
    if not all_draws:
        raise ValueError("no batches to evaluate")
    width = max(d.shape[1] for d in all_draws)
    return summarize(torch.cat([d.expand(-1, width) if d.shape[1] == 1 else d for d in all_draws]), torch.cat(all_n))
