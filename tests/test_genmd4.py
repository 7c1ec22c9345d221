"""GenMD4: state-dependent schedules against exact answers (V=3, L=3)."""
import math

import numpy as np
import pytest
import torch

from dnadiff.diffusion import GenMD4, MaskedDiffusion, PolynomialSchedule
from toy_distribution import ExactDenoiser, all_sequences, random_joint

V, L = 3, 3


class ExactGenMD4Denoiser(torch.nn.Module):
    """The exact posterior under state-dependent masking: a masked position of value j was masked
    with probability t^{w_j}, so mu_n(j) ∝ sum_x p(x) [x consistent with z] prod_{m masked} t^{w_{x_m}}."""

    time_conditioned = True

    def __init__(self, joint, w):
        super().__init__()
        self.seqs = all_sequences(V, L)
        self.joint = joint
        self.w = w.double()

    def forward(self, z, t):
        masked = z == V  # [B, L]
        consistent = ((z[:, None, :] == self.seqs[None]) | masked[:, None, :]).all(-1)  # [B, S]
        log_mask_prob = self.w[self.seqs][None] * torch.log(t.double())[:, None, None]  # [B, S, L]
        weight = self.joint[None] * consistent * torch.exp((log_mask_prob * masked[:, None, :]).sum(-1))
        onehot = torch.nn.functional.one_hot(self.seqs, V).double()
        mu = torch.einsum("bs,slv->blv", weight, onehot) / weight.sum(-1)[:, None, None]
        return torch.log(mu.clamp_min(1e-300)).float()


def test_nelbo_is_tight_with_exact_state_dependent_denoiser():
    joint = random_joint(V, L, seed=3)
    proc = GenMD4(V, init_w=[0.7, 1.5, 3.0])
    den = ExactGenMD4Denoiser(joint, proc.w.detach())
    seqs = all_sequences(V, L)
    reps = 30
    g = torch.Generator().manual_seed(0)
    est = torch.stack([proc.nelbo(den, seqs, num_t=20, generator=g) for _ in range(reps)]).double()  # [reps, S]
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    z = (mean + torch.log(joint)) / se
    assert z.abs().max() < 5.0, f"worst z {z.abs().max():.2f}"


def test_equal_exponents_reduce_to_polynomial_schedule():
    proc = GenMD4(V, init_w=2.0)
    poly = MaskedDiffusion(V, PolynomialSchedule(2.0))
    t = torch.tensor([0.2, 0.5, 0.9])
    torch.testing.assert_close(proc.alpha(t), poly.schedule.alpha(t)[:, None].expand(3, V))
    x = torch.randint(0, V, (3, 7))
    z = torch.where(torch.rand(3, 7) < 0.5, torch.full_like(x, V), x)
    logp = torch.log_softmax(torch.randn(3, 7, V), -1)
    mask = torch.ones_like(x, dtype=torch.bool)
    got = proc.integrand(logp, x, z, t, mask)
    ce = -logp.gather(-1, x[..., None])[..., 0]
    expected = poly.schedule.weight(t) * (ce * (z == V)).sum(-1)
    torch.testing.assert_close(got, expected)


def exact_nelbo(proc: GenMD4, den, x: torch.Tensor, nodes: int = 64) -> torch.Tensor:
    """NELBO(x; w) by enumeration of all 2^L mask patterns and Gauss-Legendre quadrature in t = u^4
    (float64, differentiable in w)."""
    u, wq = np.polynomial.legendre.leggauss(nodes)
    u = torch.tensor((u + 1) / 2, dtype=torch.float64)
    wq = torch.tensor(wq / 2, dtype=torch.float64)
    t = u**4
    dt = 4 * u**3 * wq
    w = proc.w.double()
    total = torch.zeros((), dtype=torch.float64)
    for pattern in range(2**L):
        m = torch.tensor([(pattern >> n) & 1 for n in range(L)], dtype=torch.bool)
        z = torch.where(m, torch.full_like(x, V), x)
        w_x = w[x]
        q = torch.prod(torch.where(m, t[:, None] ** w_x, 1 - t[:, None] ** w_x), dim=1)  # [nodes]
        logp = torch.log_softmax(den(z[None].expand(nodes, -1), t.float()).double(), -1)  # [nodes, L, V]
        a = w[None, :] / t[:, None]  # [nodes, V]
        ce = -logp[:, torch.arange(L), x]
        mix = (logp.exp() * a[:, None, :]).sum(-1)
        f = ((a[:, x] * ce + mix - a[:, x]) * m).sum(-1)
        total = total + (q * f * dt).sum()
    return total


def test_leave_one_out_gradient_matches_exact_gradient():
    """E[REINFORCE-LOO + pathwise gradient] = d NELBO / d w (exact by quadrature; checked by finite differences)."""
    torch.manual_seed(0)
    proc = GenMD4(V, init_w=[1.0, 1.6, 2.4])
    den = ExactDenoiser(random_joint(V, L, seed=9), V, L)  # a fixed denoiser, not tuned to w
    x = torch.tensor([0, 2, 1])
    exact = exact_nelbo(proc, den, x)
    (g_exact,) = torch.autograd.grad(exact, proc.raw_w)
    eps = 1e-4
    fd = []
    for i in range(V):
        with torch.no_grad():
            proc.raw_w[i] += eps
            up = exact_nelbo(proc, den, x)
            proc.raw_w[i] -= 2 * eps
            down = exact_nelbo(proc, den, x)
            proc.raw_w[i] += eps
        fd.append((up - down) / (2 * eps))
    torch.testing.assert_close(g_exact, torch.stack(fd).float(), rtol=1e-3, atol=1e-4)
    # the Monte-Carlo NELBO agrees with the quadrature
    g = torch.Generator().manual_seed(1)
    xs = x.repeat(20000, 1)
    mc = proc.nelbo(den, xs, num_t=4, generator=g).double()
    assert float(mc.mean()) == pytest.approx(float(exact.detach()), abs=4 * float(mc.std()) / math.sqrt(len(mc)))
    # unbiased gradient estimate from the surrogate, with its standard error across groups
    grads = []
    for _ in range(40):
        proc.zero_grad()
        result = proc.loss(den, x.repeat(1000, 1), generator=g)
        surrogate, nelbo = result.loss, result.nelbo
        (surrogate * L).backward()  # loss is per token; NELBO(x) is per sequence
        grads.append(proc.raw_w.grad.clone())
    grads = torch.stack(grads).double()
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    z = (mean - g_exact) / se
    assert z.abs().max() < 4.0, f"gradient z-scores {z.tolist()}"
    # the score-function term matters: the pathwise part alone is visibly biased
    path = []
    for _ in range(40):
        proc.zero_grad()
        (f1, f2), _ = proc._two_sample_terms(den, x.repeat(1000, 1), torch.ones(1000, L, dtype=torch.bool), None, g)
        (0.5 * (f1 + f2)).mean().backward()
        path.append(proc.raw_w.grad.clone())
    path = torch.stack(path).double()
    z_path = (path.mean(0) - g_exact) / (path.std(0) / math.sqrt(len(path)))
    assert z_path.abs().max() > 10.0
    assert nelbo.requires_grad is False  # the reported NELBO is detached


def test_sampler_with_state_dependent_schedule_reproduces_joint():
    from toy_distribution import chi_square_pvalue, seq_index

    joint = random_joint(V, L, seed=4)
    proc = GenMD4(V, init_w=[0.5, 1.0, 2.5])
    den = ExactGenMD4Denoiser(joint, proc.w.detach())
    x = proc.sample(den, num=12000, length=L, steps=200, sampler="cached", generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(seq_index(x, V), minlength=V**L)
    assert chi_square_pvalue(counts, joint) > 1e-3
