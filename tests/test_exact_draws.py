"""Exact draws on large vocabularies, float64 step coefficients, MD4's clipped schedules and the
prior / reconstruction end terms, each against an exact answer."""
import math
from fractions import Fraction

import mpmath
import pytest
import torch
from scipy.stats import chisquare

from dnadiff.diffusion import GenMD4, MaskedDiffusion, get_schedule
from dnadiff.diffusion.reverse import categorical, reverse_draw, start_from_prior
from dnadiff.diffusion.schedules import ClippedSchedule


def zipf(V):
    p = 1.0 / torch.arange(1, V + 1, dtype=torch.float64)
    return p / p.sum()


def rank_bins(mu, nbins=10):
    """Token -> bin id, bins of about equal mass by rank (mu sorted decreasingly)."""
    return torch.clamp((mu.cumsum(0) - mu) * nbins, max=nbins - 1).long()


def test_large_vocabulary_step_is_drawn_exactly():
    """50,257-token Zipf mu, first step of T = 1000 (p_unmask = 1e-3): tokens whose step
    probability is below float32's 2^-24 resolution appear at their exact rate."""
    V, T, N = 50257, 1000, 1_000_000
    mu = zipf(V)
    diff = MaskedDiffusion(V, "linear")
    t, s = 1.0, 1.0 - 1.0 / T
    p = diff.unmask_probability(t, s)
    assert p == pytest.approx(1.0 / T, rel=1e-12)
    g = torch.Generator().manual_seed(0)
    draw = reverse_draw(diff, mu.float().expand(N, V), t, s, g)
    revealed = draw[draw != diff.mask_id]
    n = revealed.numel()
    assert abs(n - N * p) < 5 * math.sqrt(N * p * (1 - p))  # reveal rate
    # the old float32 CDF inversion: u = k 2^-24 * cdf[-1] for the 2^24 values of k; enumerate the
    # k that fall in the reveal region to get its exact distribution given a reveal
    cdf32 = torch.cat([mu.float() * p, torch.tensor([1.0 - p])]).cumsum(0)
    k = torch.arange(int(float(cdf32[V - 1]) * 2**24) + 2)
    old = torch.searchsorted(cdf32, (k.float() * 2.0 ** -24) * cdf32[-1], right=True)
    old = torch.bincount(old[old < V], minlength=V).double()
    old /= old.sum()
    dead = old == 0  # tokens the old code could never draw
    dead_mass = float(mu[dead].sum())
    assert dead_mass > 0.2 and 0.5 * float((old - mu).abs().sum()) > 0.2  # 22.5% of mu, TV 0.24
    k_dead = float(dead[revealed].sum())
    sd = math.sqrt(n * dead_mass * (1 - dead_mass))
    assert abs(k_dead - n * dead_mass) < 5 * sd  # the exact draw reaches them at their rate
    assert n * dead_mass > 5 * sd  # ... where the old code gave 0: this check fails on it
    bins = rank_bins(mu)
    expected = torch.zeros(10, dtype=torch.float64).index_add_(0, bins, mu)
    counts = torch.bincount(bins[revealed], minlength=10).double()
    assert chisquare(counts.numpy(), (expected * n).numpy()).pvalue > 1e-3


def test_categorical_matches_probabilities_and_ignores_zero_mass():
    probs = torch.tensor([[0.5, 0.0, 0.25, 0.25], [1e-3, 0.0, 0.0, 0.999]]).repeat(20000, 1)
    x = categorical(probs, torch.Generator().manual_seed(1)).view(20000, 2)
    for row in range(2):
        counts = torch.bincount(x[:, row], minlength=4).double()
        assert counts[1] == 0 and (row == 0 or counts[2] == 0)
        keep = probs[row] > 0
        assert chisquare(counts[keep].numpy(), (probs[row][keep].double() * 20000).numpy()).pvalue > 1e-3


def test_state_dependent_step_uses_exact_reverse_probs():
    """GenMD4 (per-token schedules): one step's draws follow reverse_probs (float64 closed form)."""
    proc = GenMD4(3, init_w=[0.5, 1.0, 3.0])
    mu = torch.tensor([0.2, 0.3, 0.5])
    t, s = 0.6, 0.3
    w = proc.w.detach().double()
    p_un = mu.double() * (t ** w - s ** w) / t ** w
    exact = torch.cat([p_un, 1 - p_un.sum(0, keepdim=True)])
    N = 40000
    draw = reverse_draw(proc, mu.expand(N, 3), t, s, torch.Generator().manual_seed(2))
    counts = torch.bincount(draw, minlength=4).double()
    assert chisquare(counts.numpy(), (exact * N).numpy()).pvalue > 1e-3


def test_step_coefficients_in_float64_at_ten_thousand_steps():
    T = 10_000
    i = torch.arange(1, T + 1, dtype=torch.float64)
    lin = MaskedDiffusion(4, "linear")
    got = lin.step_coefficient((i - 1) / T, i / T)
    exact = torch.tensor([float(Fraction(1, k)) for k in range(1, T + 1)], dtype=torch.float64)  # (t - s)/t = 1/i
    assert ((got - exact).abs() / exact).max() < 1e-10  # float32 gave 6e-4
    # cosine against 50-digit arithmetic
    mpmath.mp.dps = 50
    cos = MaskedDiffusion(4, "cosine")
    ks = [1, 2, 3, 10, 100, 1000, 5000, 9000, 9999, 10000]
    got = cos.step_coefficient(torch.tensor([(k - 1) / T for k in ks], dtype=torch.float64),
                               torch.tensor([k / T for k in ks], dtype=torch.float64))
    for k, g in zip(ks, got.tolist()):
        a = lambda x: 1 - mpmath.cos(mpmath.pi / 2 * (1 - x))  # noqa: E731
        ref = (a(mpmath.mpf(k - 1) / T) - a(mpmath.mpf(k) / T)) / (1 - a(mpmath.mpf(k) / T))
        assert abs(g - float(ref)) / float(ref) < 1e-8  # cancellation near t = 0 costs ~1e-9
    # the discrete-time training weight from float32 times keeps float32 accuracy (was 6e-4 off)
    d = MaskedDiffusion(4, "linear", num_steps=T)
    t32 = (i / T).float()
    w = d.loss_weight(t32)
    assert ((w.double() - T / (i / T) / T * 1).abs() / (1 / (i / T))).max() < 1e-6


def test_clipped_schedule_closed_form_and_weight():
    eps = 1e-4
    for name, kw in [("cosine", {}), ("linear", {}), ("polynomial", {"w": 2.0})]:
        base = get_schedule(name, **kw)
        s = get_schedule(name, clip=eps, **kw)
        assert isinstance(s, ClippedSchedule)
        t = torch.linspace(0, 1, 101, dtype=torch.float64, requires_grad=True)
        a = s.alpha(t)
        torch.testing.assert_close(a.detach(), (1 - 2 * eps) * base.alpha(t.detach()) + eps, rtol=0, atol=1e-15)
        assert a[0].item() == pytest.approx(1 - eps, abs=1e-15) and a[-1].item() == pytest.approx(eps, abs=1e-15)
        (grad,) = torch.autograd.grad(a.sum(), t)
        torch.testing.assert_close(s.dalpha(t.detach()), grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(s.weight(t.detach()), -grad / (1 - a.detach()), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,clip", [("cosine", 1e-4), ("linear", 0.05), ("loglinear", None), ("linear", None)])
def test_uniform_denoiser_nelbo_is_exactly_L_log_V(name, clip):
    """For mu = uniform, every term is log V per masked position, and the steps, the prior and the
    reconstruction add up to exactly L log V for any schedule:
    sum_i (alpha_s - alpha_t) + alpha(1) + (1 - alpha(0)) = 1. Checks the end terms' closed form."""
    V, L, B, T = 5, 32, 512, 40
    kw = {"eps": 0.05} if name == "loglinear" else {}
    diff = MaskedDiffusion(V, get_schedule(name, clip=clip, **kw))
    a0, a1 = diff.end_alphas()
    assert (a0 < 1) == bool(clip) and (a1 > 0) == (name == "loglinear" or bool(clip))
    assert float(diff.prior_nats(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx((a1 + 1 - a0) * math.log(V), rel=1e-12)

    class Uniform(torch.nn.Module):
        def forward(self, z, t):
            return torch.zeros(*z.shape, V)

    x = torch.randint(V, (B, L), generator=torch.Generator().manual_seed(0))
    nelbo = diff.nelbo(Uniform(), x, exact_steps=T, generator=torch.Generator().manual_seed(1))
    se = float(nelbo.std()) / math.sqrt(B)
    assert abs(float(nelbo.mean()) - L * math.log(V)) < 5 * se + 1e-9


def test_sampler_starts_from_the_elbo_prior():
    """Log-linear: alpha(1) = eps, so z_1 keeps a uniform token at rate eps (the prior of the ELBO)."""
    eps, V = 0.01, 4
    diff = MaskedDiffusion(V, get_schedule("loglinear", eps=eps))
    z = torch.full((2000, 100), V)
    z[:, 0] = 2  # a fixed token is never touched
    out = start_from_prior(diff, z, torch.Generator().manual_seed(3))
    assert (out[:, 0] == 2).all()
    kept = out[:, 1:][out[:, 1:] != V]
    n = 2000 * 99
    assert abs(kept.numel() - n * eps) < 5 * math.sqrt(n * eps)
    counts = torch.bincount(kept, minlength=V).double()
    assert chisquare(counts.numpy()).pvalue > 1e-3
    assert torch.equal(start_from_prior(MaskedDiffusion(V, "linear"), z), z)


def test_exact_discrete_sum_uses_float64_grid_coefficients():
    """The exact discrete-time NELBO at T = 1e4 weights step i by exactly 1/i (linear schedule);
    float32 grid times would be off by up to ~6e-4."""
    T = 10_000
    seen = []

    class Recording(MaskedDiffusion):
        def masked_nats(self, denoiser, x, t, weight, loss_mask=None, labels=None, generator=None):
            assert t.dtype == torch.float32  # the denoiser still sees float32 times
            seen.append(float(weight[0]))
            return torch.zeros(x.shape[0])

    Recording(4, "linear").discrete_nelbo_sum(None, torch.zeros(1, 3, dtype=torch.long), T)
    got = torch.tensor(seen, dtype=torch.float64)
    exact = 1.0 / torch.arange(1, T + 1, dtype=torch.float64)
    assert ((got - exact).abs() / exact).max() < 1e-6  # float32 storage of an exact float64 value
