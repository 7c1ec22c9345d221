"""First-hitting, ReMDM and confidence samplers against exact answers on enumerable joints."""
import pytest
import torch

from dnadiff.diffusion import Conditioning, MaskedDiffusion, SampleStats, Windows, get_schedule
from dnadiff.diffusion.confidence import ConfidenceOptions, reveal_counts
from dnadiff.diffusion.first_hitting import hitting_times
from dnadiff.diffusion.remdm import ReMDMOptions, sigma_max, step_schedule
from dnadiff.diffusion.sampling import SAMPLERS
from toy_distribution import ExactDenoiser, all_sequences, chi_square_pvalue, random_joint, seq_index

V, L = 3, 4


@pytest.fixture(scope="module")
def toy():
    joint = random_joint(V, L, seed=7, concentration=0.7)
    return joint, ExactDenoiser(joint, V, L)


def histogram(x):
    return torch.bincount(seq_index(x, V), minlength=V ** x.shape[1])


@pytest.mark.parametrize("time_conditioned", [False, True])
def test_first_hitting_one_position_per_call_is_exact(toy, time_conditioned):
    joint, _ = toy
    den = ExactDenoiser(joint, V, L)
    den.time_conditioned = time_conditioned
    N = 12000
    stats = SampleStats()
    x = MaskedDiffusion(V, "cosine").sample(den, num=N, length=L, steps=None, sampler="first-hitting",
                                            generator=torch.Generator().manual_seed(1), stats=stats)
    assert chi_square_pvalue(histogram(x), joint) > 1e-3
    assert stats.denoiser_calls == L and den.rows == N * L  # one reveal per call, batched, no waste


def test_first_hitting_grouped_by_grid_is_the_ancestral_distribution(toy):
    """steps=1: all positions hit in the one step, so the draw is the product of marginals (as ancestral)."""
    joint, den = toy
    seqs = all_sequences(V, L)
    marg = torch.einsum("s,slv->lv", joint, torch.nn.functional.one_hot(seqs, V).double())
    product = torch.prod(marg[torch.arange(L), seqs], dim=1)
    st = SampleStats()
    x = MaskedDiffusion(V).sample(den, num=12000, length=L, steps=1, sampler="first-hitting",
                                  generator=torch.Generator().manual_seed(2), stats=st)
    assert chi_square_pvalue(histogram(x), product) > 1e-3 and st.denoiser_calls == 1
    st = SampleStats()
    x = MaskedDiffusion(V).sample(den, num=12000, length=L, steps=400, sampler="first-hitting",
                                  generator=torch.Generator().manual_seed(3), stats=st)
    assert chi_square_pvalue(histogram(x), joint) > 1e-3 and st.denoiser_calls <= L


def test_hitting_times_invert_the_schedule():
    level = torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name in ("linear", "cosine", "geometric"):
        sch = get_schedule(name)
        tau = hitting_times(sch, level)
        torch.testing.assert_close(1 - sch.alpha(tau), level, rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", ["cap", "rescale", "loop"])
def test_remdm_step_probabilities_closed_form(strategy):
    """Every step keeps the masked-diffusion marginal: alpha_t (1 - sigma) + (1 - alpha_t) p_unmask
    = alpha_s, with 0 <= sigma <= sigma_max; eta = 0 is the ancestral step."""
    diff = MaskedDiffusion(4, "loglinear")
    T = 200
    opts = ReMDMOptions(strategy=strategy)
    sched = step_schedule(diff, T, opts)
    ts = [1 - k / T for k in range(T + 1)]
    for k, (t, remask, unmask) in enumerate(sched):
        if strategy == "loop":
            from dnadiff.diffusion.remdm import loop_alpha
            a_t, a_s = (opts.alpha_on, opts.alpha_on) if opts.t_off < t <= opts.t_on else (loop_alpha(t, opts), loop_alpha(ts[k + 1], opts))
            expected_sigma = opts.eta if opts.t_off < t <= opts.t_on else 0.0
        else:
            a_t = float(diff.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
            a_s = float(diff.schedule.alpha(torch.tensor(ts[k + 1], dtype=torch.float64)))
            cap = sigma_max(a_t, a_s)
            expected_sigma = min(opts.eta, cap) if strategy == "cap" else opts.eta * cap
            assert remask <= cap + 1e-15
        assert remask == pytest.approx(expected_sigma, abs=1e-15)
        assert 0 <= unmask <= 1 + 1e-12
        assert a_t * (1 - remask) + (1 - a_t) * unmask == pytest.approx(a_s, abs=1e-12)
    assert any(r > 0 for _, r, _ in sched)
    if strategy != "loop":
        zero = step_schedule(diff, T, ReMDMOptions(strategy=strategy, eta=0.0))
        for k, (t, remask, unmask) in enumerate(zero):
            assert remask == 0 and unmask == pytest.approx(diff.unmask_probability(t, ts[k + 1]), rel=1e-12)
    assert ReMDMOptions("cap").eta == 0.008 and ReMDMOptions("rescale").eta == 0.015
    assert (ReMDMOptions().eta, ReMDMOptions().t_on, ReMDMOptions().t_off, ReMDMOptions().alpha_on) == (0.02, 0.55, 0.05, 0.9)


def test_remdm_eta_zero_samples_the_joint_and_remasking_revises(toy):
    joint, den = toy
    diff = MaskedDiffusion(V, "linear")
    x = diff.sample(den, num=12000, length=L, steps=400, sampler="remdm", options=ReMDMOptions("cap", eta=0.0),
                    generator=torch.Generator().manual_seed(4))
    assert chi_square_pvalue(histogram(x), joint) > 1e-3
    # with remasking, more steps than positions: no mask left, and tokens get revised (more calls than L + 1)
    den2 = ExactDenoiser(joint, V, L)
    st = SampleStats()
    x = diff.sample(den2, num=64, length=L, steps=16 * L, sampler="remdm", stats=st,
                    generator=torch.Generator().manual_seed(5))
    assert (x < V).all() and st.denoiser_calls > L + 1


def test_confidence_reveals_most_confident_first_and_respects_blocks():
    """A denoiser whose position n gives token 0 probability conf[n]: one reveal per step goes in
    decreasing margin, and with blocks of 2 the left block comes first."""
    conf = torch.tensor([0.5, 0.9, 0.7, 0.95])

    class Sure(torch.nn.Module):
        time_conditioned = False

        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, z, t):
            self.seen.append(z.clone())
            p = torch.stack([conf, (1 - conf) * 0.6, (1 - conf) * 0.4], -1)
            return p.log().expand(z.shape[0], -1, -1)

    diff = MaskedDiffusion(V)
    den = Sure()
    x = diff.sample(den, num=1, length=L, steps=L, sampler="confidence", options=ConfidenceOptions(score="margin"))
    order = [int((a != b).nonzero()[0, 1]) for a, b in zip(den.seen, den.seen[1:])]
    assert order == [3, 1, 2] and (x < V).all()
    den = Sure()
    diff.sample(den, num=1, length=L, steps=L, sampler="confidence",
                options=ConfidenceOptions(score="margin", block_length=2))
    order = [int((a != b).nonzero()[0, 1]) for a, b in zip(den.seen, den.seen[1:])]
    assert order == [1, 0, 3]
    assert reveal_counts(torch.tensor([7, 2]), 3).tolist() == [[3, 2, 2], [1, 1, 0]]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_keeps_fixed_positions_with_guidance(sampler):
    j0, j1 = random_joint(V, L, seed=20), random_joint(V, L, seed=21)
    den = ExactDenoiser(0.5 * (j0 + j1), V, L, class_joints=[j0, j1])
    N = 200
    fixed = torch.tensor([2, 0, 0, 1]).repeat(N, 1)
    fm = torch.tensor([True, False, False, True]).repeat(N, 1)
    for diff in (MaskedDiffusion(V, "linear"), MaskedDiffusion(V, get_schedule("loglinear", eps=0.2)),
                 MaskedDiffusion(V, get_schedule("cosine", clip=0.2))):
        x = diff.sample(den, num=N, length=L, steps=3 * L if sampler != "first-hitting" else None, sampler=sampler,
                        conditioning=Conditioning(fixed, fm, labels=torch.ones(N, dtype=torch.long), guidance=1.5,
                                                  null_label=2), generator=torch.Generator().manual_seed(6))
        assert (x[:, 0] == 2).all() and (x[:, 3] == 1).all() and (x >= 0).all() and (x < V).all()
    # and beyond the context, in semi-autoregressive windows
    x = MaskedDiffusion(V).sample(den, num=8, length=10, steps=8, sampler=sampler, windows=Windows(4),
                                  conditioning=Conditioning(torch.zeros(8, 10, dtype=torch.long),
                                                            torch.arange(10).repeat(8, 1) < 3))
    assert (x[:, :3] == 0).all() and (x < V).all()
