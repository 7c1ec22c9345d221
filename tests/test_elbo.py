"""The NELBO against exact answers on an enumerable joint distribution (V=3, L=4)."""
import math

import pytest
import torch

from dnadiff.diffusion import MaskedDiffusion, get_schedule, summarize
from toy_distribution import ExactDenoiser, all_sequences, entropy, random_joint

V, L = 3, 4


@pytest.fixture(scope="module")
def toy():
    joint = random_joint(V, L, seed=1)
    return joint, ExactDenoiser(joint, V, L), all_sequences(V, L)


SCHEDULES = [("linear", {}), ("cosine", {}), ("polynomial", {"w": 2.0}), ("geometric", {}), ("loglinear", {"eps": 1e-3})]


@pytest.mark.parametrize("name,kw", SCHEDULES)
def test_continuous_nelbo_is_tight_for_exact_denoiser(toy, name, kw):
    """Masked diffusion's continuous-time ELBO is tight for the exact denoiser: NELBO(x) = -log p(x)."""
    joint, den, seqs = toy
    diff = MaskedDiffusion(V, get_schedule(name, **kw))
    g = torch.Generator().manual_seed(0)
    draws = diff.nelbo_draws(den, seqs, num_t=600, generator=g).double()  # [81, K]
    mean = draws.mean(1)
    se = draws.std(1) / math.sqrt(draws.shape[1])
    nll = -torch.log(joint)
    # the log-linear schedule keeps alpha(1) = eps > 0: its bound carries the prior KL L*eps*log V on top
    prior = L * kw.get("eps", 0.0) * math.log(V) if name == "loglinear" else 0.0
    z = (mean - nll - prior) / se
    assert z.abs().max() < 5.0, f"worst z-score {z.abs().max():.2f}"
    # expected over the data: NELBO averages to the entropy
    expected = float((joint * mean).sum())
    assert expected == pytest.approx(entropy(joint) + prior, abs=0.03)


def test_per_sequence_mean_matches_nll_tightly_with_many_draws(toy):
    joint, den, seqs = toy
    diff = MaskedDiffusion(V, "linear")
    g = torch.Generator().manual_seed(1)
    x = seqs[[0, 40, 80]]
    est = diff.nelbo(den, x.repeat(200, 1), num_t=50, generator=g).view(200, 3).mean(0)
    torch.testing.assert_close(est.double(), -torch.log(joint[[0, 40, 80]]), atol=0.05, rtol=0)


def test_discrete_time_nelbo_upper_bounds_and_converges(toy):
    """NELBO_T >= -log p, decreasing in T; T = 1 equals the sum of the marginal entropies exactly."""
    joint, den, seqs = toy
    H = entropy(joint)
    onehot = torch.nn.functional.one_hot(seqs, V).double()
    marginals = torch.einsum("s,slv->lv", joint, onehot)
    sum_marginal_entropy = float(-(marginals * marginals.log()).sum())
    diff = MaskedDiffusion(V, "linear")
    g = torch.Generator().manual_seed(2)
    expected = {}
    for T in (1, 2, 4, 16, 128):
        reps = 40
        per = diff.nelbo(den, seqs.repeat(reps, 1), exact_steps=T, generator=g).view(reps, -1).mean(0).double()
        expected[T] = float((joint * per).sum())
    assert expected[1] == pytest.approx(sum_marginal_entropy, abs=1e-5)  # no randomness at T = 1
    values = [expected[T] for T in (1, 2, 4, 16, 128)]
    assert all(a > b - 0.01 for a, b in zip(values, values[1:])), values
    assert all(v >= H - 0.02 for v in values)
    assert values[0] - H > 0.2  # a clear gap at T = 1 on this joint
    assert values[-1] - H < 0.03


def test_discrete_objective_mc_matches_exact_sum(toy):
    joint, den, seqs = toy
    T = 4
    diff_T = MaskedDiffusion(V, "linear", num_steps=T)
    g = torch.Generator().manual_seed(3)
    mc = diff_T.nelbo(den, seqs.repeat(20, 1), num_t=64, generator=g).view(20, -1).mean(0)
    ex = MaskedDiffusion(V, "linear").nelbo(den, seqs.repeat(20, 1), exact_steps=T, generator=g).view(20, -1).mean(0)
    assert float((joint * (mc - ex).double()).sum()) == pytest.approx(0.0, abs=0.03)


def test_padding_positions_never_masked_or_counted(toy):
    joint, den, seqs = toy
    diff = MaskedDiffusion(V, "linear")
    x = seqs[:8].clone()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, -1] = False
    t = torch.full((8,), 0.999)
    for _ in range(20):
        z = diff.q_sample(x, t, mask)
        assert (z[:, -1] == x[:, -1]).all()
    # a padded-out position contributes nothing: NELBO of a fully unmasked row is 0
    zero = diff.nelbo_at(den, x, torch.full((8,), 0.5), loss_mask=torch.zeros_like(mask))
    assert torch.equal(zero, torch.zeros(8))


def test_q_sample_keeps_with_probability_alpha():
    diff = MaskedDiffusion(5, get_schedule("cosine"))
    x = torch.randint(0, 5, (4000, 50))
    t = torch.full((4000,), 0.3)
    z = diff.q_sample(x, t)
    kept = (z == x).float().mean().item()
    assert kept == pytest.approx(float(diff.schedule.alpha(torch.tensor(0.3))), abs=0.003)
    assert set(z.unique().tolist()) <= set(range(6))


def test_stratified_times_cover_unit_interval():
    diff = MaskedDiffusion(4)
    t = diff.sample_t(8, generator=torch.Generator().manual_seed(0))
    assert ((t > 0) & (t <= 1)).all()
    gaps = torch.sort(t).values.diff()
    torch.testing.assert_close(gaps, torch.full((7,), 1 / 8), atol=1e-6, rtol=0)
    diff_T = MaskedDiffusion(4, num_steps=10)
    tT = diff_T.sample_t(1000)
    assert set((tT * 10).round().long().tolist()) <= set(range(1, 11))


def test_subs_ignores_extra_mask_logit():
    """A denoiser that also emits a logit for the mask id (V + 1 columns) is handled: the mask is never predicted."""
    class WithMaskColumn(torch.nn.Module):
        def forward(self, z, t):
            out = torch.zeros(*z.shape, V + 1)
            out[..., V] = 100.0  # would dominate if not dropped
            return out

    diff = MaskedDiffusion(V)
    x = torch.zeros(2, 6, dtype=torch.long)
    per = diff.nelbo_at(WithMaskColumn(), x, torch.ones(2))  # t = 1: all masked, weight 1
    torch.testing.assert_close(per, torch.full((2,), 6 * math.log(V)))
    s = diff.sample(WithMaskColumn(), num=3, length=5, steps=4)
    assert s.max() < V


def test_summarize_ratio_estimator_by_hand():
    draws = torch.tensor([[2.0, 4.0], [6.0, 6.0]])
    n = torch.tensor([2, 4])
    rep = summarize(draws, n)
    assert rep.nats_per_token == pytest.approx((3 + 6) / 6)
    r = 1.5
    resid = torch.tensor([3 - r * 2, 6 - r * 4])
    se = math.sqrt(float((resid**2).sum()) / 2) * 2 / 6
    assert rep.nats_stderr == pytest.approx(se)
    assert rep.bits_per_token == pytest.approx(1.5 / math.log(2))
    assert rep.perplexity == pytest.approx(math.exp(1.5))
