"""Classifier guidance for masked diffusion: steer the reveals toward a class y of a separate classifier.

At every reveal the denoiser's distribution over the V tokens at each position i being revealed is
reweighted by the classifier's probability of the target class (Nisonoff et al. 2024, "Unlocking
guidance for discrete state-space diffusion and flow models"; Schiff et al. 2024, "Simple guidance
mechanisms for discrete diffusion models"):

    p_guided(x_i = b | z_t)  proportional to  mu_i(b | z_t) * p(y | z_t with x_i = b) ** gamma

The guide is any callable ``log_prob(x, t) -> FloatTensor[M]``: log p(y | x) of M inputs given as
one-hot rows x FloatTensor[M, L, V + 1] (column V is the mask token, so a partially masked
sequence is a valid input) at times t FloatTensor[M]. Two forms:

* ``"exact"``: the classifier is evaluated on every candidate: for each position being revealed
  and each of the V tokens, the current state with that one position set to the token (the other
  masked positions stay masked). Cost per step: V x (positions revealed in the step) classifier
  rows, batched into ceil(rows / ``chunk``) calls. With gamma = 1 and the *noisy* classifier
  p(y | z) = E[p(y | x) | z] (one that reads partially masked sequences), a sampler that reveals
  one position per event (``first-hitting`` with ``steps=None``) draws exactly from p(x | y): each
  reveal is p(x_i | z, y) by Bayes and the reveal order of a state-independent schedule does not
  depend on y. The T-step samplers (ancestral, cached, first-hitting with steps) reweight each
  position revealed in a step separately given z_t, the same factorisation the unguided T-step
  sampler makes; it becomes exact as T grows (two positions rarely reveal in one step).
* ``"first-order"``: one gradient of log p(y | x) with respect to the one-hot input per step
  (one forward and one backward pass over the rows that reveal something); the candidate's log
  p(y | z with x_i = b) is replaced by its Taylor expansion log p(y | z) + g[i, b] - g[i, mask].
  Exact when log p(y | x) is linear in the one-hot input, an approximation otherwise.

``fill="x0"``: the masked positions other than the candidate are filled with the denoiser's
prediction mu (soft one-hot rows) before the classifier sees them: the fallback for a *clean*
classifier trained on unmasked sequences only. It is an approximation (E[p(y | x)] is replaced by
p(y | E[x])), not the noisy classifier.

gamma = 0 leaves mu untouched and calls nothing: the guided samplers then give exactly the unguided
draws (same random numbers). Fixed (unmasked) positions are never revealed, so never change.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reverse import SampleStats

FORMS = ("exact", "first-order")
FILLS = ("mask", "x0")


@dataclass
class ClassifierGuidance:
    """Options of classifier guidance (see the module docstring).

    Attributes:
        log_prob: (x FloatTensor[M, L', V + 1] one-hot rows, t FloatTensor[M]) -> FloatTensor[M] log p(y | x).
        gamma: the guidance strength (0: none; 1: p(x | y) with a noisy classifier; larger: sharper).
        form: ``"exact"`` (the classifier on every candidate base) or ``"first-order"`` (one gradient per step).
        fill: ``"mask"`` (the classifier reads masked positions: a noisy classifier) or ``"x0"`` (masked
            positions replaced by the denoiser's mu: the clean-classifier approximation).
        chunk: candidate rows per classifier call in the exact form.
        left, right: LongTensor[N, a] / [N, b] tokens around the window being sampled (semi-autoregressive
            windows: the classifier sees the whole sequence); set by the sampler, not by the user.
    """

    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gamma: float = 1.0
    form: str = "exact"
    fill: str = "mask"
    chunk: int = 4096
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"unknown guidance form {self.form!r}; use one of {', '.join(FORMS)}")
        if self.fill not in FILLS:
            raise ValueError(f"unknown guidance fill {self.fill!r}; use one of {', '.join(FILLS)}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma {self.gamma} must be >= 0")
        if self.chunk < 1:
            raise ValueError("chunk must be >= 1")

    def around(self, left: torch.Tensor | None, right: torch.Tensor | None) -> ClassifierGuidance:
        """The same guidance for a window with ``left`` / ``right`` context tokens (LongTensor[N, *])."""
        return dataclasses.replace(self, left=left, right=right)

    def probs(self, z: torch.Tensor, mu: torch.Tensor, reveal: torch.Tensor, t, stats: SampleStats | None = None,
              V: int | None = None) -> torch.Tensor:
        """Guided token probabilities at the revealed positions: FloatTensor[R, V], rows in ``reveal``'s order.

        z: LongTensor[N, L] the state before the reveal (mask id V); mu: FloatTensor[N, L, V]
        the denoiser's distribution; reveal: BoolTensor[N, L] the positions revealed now (R in all);
        t: float or FloatTensor[N]. ``stats`` (a :class:`~.reverse.SampleStats`) accumulates ``classifier_calls`` and
        ``classifier_rows``.
        """
        V = mu.shape[-1] if V is None else V
        base = mu[reveal]
        if self.gamma == 0 or base.shape[0] == 0:
            return base
        N = z.shape[0]
        t = t.to(device=z.device, dtype=torch.float32) if isinstance(t, torch.Tensor) \
            else torch.full((N,), float(t), device=z.device)
        rows = reveal.any(-1).nonzero().squeeze(-1)  # sequences that reveal something
        x = self._inputs(z[rows], mu[rows], V)  # [n, L, V + 1]
        sub_reveal = reveal[rows]
        stats = stats if stats is not None else SampleStats()
        if self.form == "exact":
            score = self._exact(x, sub_reveal, t[rows], rows, V, stats)  # [R, V]
        else:
            score = self._first_order(x, sub_reveal, t[rows], rows, V, stats)
        score = score.double()
        w = torch.exp(self.gamma * (score - score.max(-1, keepdim=True).values))
        guided = base.double() * w
        return (guided / guided.sum(-1, keepdim=True)).to(base.dtype)

    # -- internals ------------------------------------------------------------------------------------
    def _inputs(self, z: torch.Tensor, mu: torch.Tensor, V: int) -> torch.Tensor:
        """One-hot rows FloatTensor[n, L, V + 1] of z; with fill="x0" masked positions hold mu (mask column 0)."""
        x = F.one_hot(z, V + 1).float()
        if self.fill == "x0":
            masked = z == V
            soft = torch.cat([mu.float(), torch.zeros_like(mu[..., :1]).float()], -1)
            x = torch.where(masked[..., None], soft, x)
        return x

    def _context(self, x: torch.Tensor, rows: torch.Tensor, V: int) -> torch.Tensor:
        """x [m, Lw, V + 1] of the window -> the whole sequence [m, a + Lw + b, V + 1] (rows index left/right)."""
        parts = []
        if self.left is not None and self.left.shape[1]:
            parts.append(F.one_hot(self.left[rows], V + 1).float())
        parts.append(x)
        if self.right is not None and self.right.shape[1]:
            parts.append(F.one_hot(self.right[rows], V + 1).float())
        return torch.cat(parts, 1) if len(parts) > 1 else x

    def _call(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor, V: int, stats: SampleStats) -> torch.Tensor:
        stats.classifier_calls += 1
        stats.classifier_rows += int(x.shape[0])
        return self.log_prob(self._context(x, rows, V), t).reshape(-1)

    def _exact(self, x, reveal, t, rows, V, stats) -> torch.Tensor:
        """log p(y | candidate) for every revealed (row, position) and token: [R, V]."""
        n_idx, pos = reveal.nonzero(as_tuple=True)  # row-major: the order of mu[reveal]
        R = n_idx.shape[0]
        cand_row = n_idx.repeat_interleave(V)  # [R * V]
        cand_pos = pos.repeat_interleave(V)
        cand_tok = torch.arange(V, device=x.device).repeat(R)
        out = torch.empty(R * V, device=x.device, dtype=torch.float32)
        for i in range(0, R * V, self.chunk):
            sl = slice(i, i + self.chunk)
            cx = x[cand_row[sl]].clone()
            m = torch.arange(cx.shape[0], device=x.device)
            cx[m, cand_pos[sl]] = F.one_hot(cand_tok[sl], V + 1).float()
            out[sl] = self._call(cx, t[cand_row[sl]], rows[cand_row[sl]], V, stats).float()
        return out.view(R, V)

    def _first_order(self, x, reveal, t, rows, V, stats) -> torch.Tensor:
        """g[i, b] - g[i, mask] at the revealed positions (the Taylor estimate of the log-ratio): [R, V]."""
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            lp = self._call(xg, t, rows, V, stats)
            (g,) = torch.autograd.grad(lp.sum(), xg)
        g = g[reveal]  # [R, V + 1]
        # the change of log p when the candidate's one-hot row replaces the current row x[i]
        current = (g * x[reveal]).sum(-1, keepdim=True)
        return g[:, :V] - current


def guided_tokens(guide: ClassifierGuidance | None, z: torch.Tensor, mu: torch.Tensor, reveal: torch.Tensor, t,
                  stats: SampleStats | None = None) -> torch.Tensor:
    """The distribution to draw the revealed positions from: mu[reveal] (FloatTensor[R, V]) or its guided form."""
    if guide is None:
        return mu[reveal]
    return guide.probs(z, mu, reveal, t, stats)
