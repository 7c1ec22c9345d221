"""Samplers driven by exact denoisers reproduce exact distributions (chi-square at fixed seeds)."""
import pytest
import torch

from dnadiff.diffusion import Conditioning, Decoding, MaskedDiffusion, SampleStats, Windows, time_grid, top_p_filter
from dnadiff.diffusion.sampling import denoiser_probs
from toy_distribution import ExactDenoiser, all_sequences, chi_square_pvalue, markov_joint, random_joint, seq_index

V, L = 3, 4


@pytest.fixture(scope="module")
def toy():
    joint = random_joint(V, L, seed=7, concentration=0.7)
    return joint, ExactDenoiser(joint, V, L)


def histogram(samples, V):
    return torch.bincount(seq_index(samples, V), minlength=V ** samples.shape[1])


@pytest.mark.parametrize("sampler", ["ancestral", "cached"])
def test_sampler_reproduces_joint(toy, sampler):
    joint, den = toy
    diff = MaskedDiffusion(V, "linear")
    g = torch.Generator().manual_seed(11)
    N, T = 12000, 400  # T >> L: two positions rarely unmask in the same step
    stats = SampleStats()
    x = diff.sample(den, num=N, length=L, steps=T, sampler=sampler, generator=g, stats=stats)
    assert x.min() >= 0 and x.max() < V
    p = chi_square_pvalue(histogram(x, V), joint)
    assert p > 1e-3, f"chi-square p = {p:.2e}"
    if sampler == "cached":
        assert stats.rows_evaluated <= N * (min(T, L) + 1)
        assert stats.denoiser_calls <= T
    else:
        assert stats.denoiser_calls > T // 2  # every step calls the denoiser until all are unmasked


def test_one_step_sampler_gives_product_of_marginals(toy):
    """With T = 1 every position unmasks at once, independently: exactly the product of marginals."""
    joint, den = toy
    seqs = all_sequences(V, L)
    onehot = torch.nn.functional.one_hot(seqs, V).double()
    marg = torch.einsum("s,slv->lv", joint, onehot)
    product = torch.prod(marg[torch.arange(L), seqs], dim=1)
    x = MaskedDiffusion(V).sample(den, num=12000, length=L, steps=1, generator=torch.Generator().manual_seed(3))
    assert chi_square_pvalue(histogram(x, V), product) > 1e-3
    assert chi_square_pvalue(histogram(x, V), joint) < 1e-6  # and visibly not the joint


def test_cached_sampler_calls_denoiser_less():
    joint = random_joint(V, L, seed=2)
    diff = MaskedDiffusion(V)
    for sampler in ("cached", "ancestral"):
        den = ExactDenoiser(joint, V, L)
        diff.sample(den, num=1, length=L, steps=256, sampler=sampler)
        if sampler == "cached":
            assert den.calls <= min(256, L) + 1
            cached_calls = den.calls
        else:
            # ancestral calls at every step until the last mask is gone (here, well past L steps)
            assert den.calls > 3 * cached_calls
    # a time-conditioned denoiser: no reuse, but a row is evaluated only in steps where it reveals
    # something; the same random numbers as ancestral, so exactly the same samples
    runs = []
    for sampler in ("cached", "ancestral"):
        den = ExactDenoiser(joint, V, L)
        den.time_conditioned = True  # declared time-conditioned: its outputs are never reused
        x = diff.sample(den, num=2, length=L, steps=64, sampler=sampler, generator=torch.Generator().manual_seed(9))
        runs.append((den.calls, x))
    assert runs[0][0] <= min(64, 2 * L) < runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    for seed in range(5):  # and with reuse (time-agnostic): still the ancestral samples
        a = diff.sample(ExactDenoiser(joint, V, L), num=50, length=L, steps=32, sampler="cached",
                        generator=torch.Generator().manual_seed(seed))
        b = diff.sample(ExactDenoiser(joint, V, L), num=50, length=L, steps=32, sampler="ancestral",
                        generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a, b)


def test_infilling_keeps_fixed_and_matches_conditional(toy):
    joint, den = toy
    diff = MaskedDiffusion(V)
    N = 12000
    fixed = torch.tensor([2, 0, 0, 1]).repeat(N, 1)
    fixed_mask = torch.tensor([True, False, False, True]).repeat(N, 1)
    x = diff.sample(den, num=N, length=L, steps=300, conditioning=Conditioning(fixed=fixed, fixed_mask=fixed_mask),
                    generator=torch.Generator().manual_seed(5))
    assert (x[:, 0] == 2).all() and (x[:, 3] == 1).all()
    seqs = all_sequences(V, L)
    consistent = (seqs[:, 0] == 2) & (seqs[:, 3] == 1)
    cond = torch.where(consistent, joint, torch.zeros_like(joint))
    cond = cond / cond.sum()
    counts = histogram(x, V)
    assert counts[~consistent].sum() == 0
    assert chi_square_pvalue(counts[consistent], cond[consistent]) > 1e-3


def test_class_conditioning_and_guidance():
    j0, j1 = random_joint(V, L, seed=20), random_joint(V, L, seed=21)
    uncond = 0.5 * (j0 + j1)
    den = ExactDenoiser(uncond, V, L, class_joints=[j0, j1])
    diff = MaskedDiffusion(V)
    N = 12000
    labels = torch.ones(N, dtype=torch.long)
    x = diff.sample(den, num=N, length=L, steps=300, conditioning=Conditioning(labels=labels),
                    generator=torch.Generator().manual_seed(8))
    assert chi_square_pvalue(histogram(x, V), j1) > 1e-3
    # guidance formula on one state: log mu = (1 + w) log mu(.|y) - w log mu(.|null), renormalised
    z = torch.full((1, L), V)
    t = torch.ones(1)
    w = 2.0
    got = denoiser_probs(diff, den, z, t, labels[:1], guidance=w, null_label=2)
    lc = den(z, t, labels=labels[:1]).log_softmax(-1)
    lu = den(z, t, labels=torch.tensor([2])).log_softmax(-1)
    torch.testing.assert_close(got, ((1 + w) * lc - w * lu).softmax(-1))
    with pytest.raises(ValueError, match="null_label"):
        Conditioning(labels=labels[:2], guidance=1.0)


def test_semi_autoregressive_blocks_follow_markov_chain():
    """Beyond the context: windows of 4 with blocks of 2, an exact Markov-chain denoiser of length 4.
    Generated sequences of length 10 must follow the chain (transition counts at every position)."""
    P0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    P = torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)
    # stationary start so every window has the same law
    evals, evecs = torch.linalg.eig(P.T)
    pi = evecs[:, evals.real.argmax()].real
    pi = pi / pi.sum()
    den = ExactDenoiser(markov_joint(pi, P, 4), V, 4)
    diff = MaskedDiffusion(V)
    N = 20000
    x = diff.sample(den, num=N, length=10, steps=100, windows=Windows(4, block=2),
                    generator=torch.Generator().manual_seed(4))
    assert x.shape == (N, 10)
    for n in (4, 6, 8):  # transitions generated in later windows
        pair = x[:, n] * V + x[:, n + 1]
        counts = torch.bincount(pair, minlength=V * V)
        expected = (pi[:, None] * P).flatten()
        assert chi_square_pvalue(counts, expected) > 1e-3
    # prefix stays fixed across windows
    fixed = torch.zeros(4, 10, dtype=torch.long)
    fm = torch.zeros(4, 10, dtype=torch.bool)
    fm[:, :3] = True
    y = diff.sample(den, num=4, length=10, steps=50, windows=Windows(4), conditioning=Conditioning(fixed, fm))
    assert (y[:, :3] == 0).all()


def test_top_p_and_temperature_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    torch.testing.assert_close(top_p_filter(probs, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(top_p_filter(probs, 0.5), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(top_p_filter(probs, 1.0), probs)

    class Fixed(torch.nn.Module):
        time_conditioned = False

        def forward(self, z, t):
            return torch.log(probs).expand(*z.shape, 4)

    diff = MaskedDiffusion(4)
    got = denoiser_probs(diff, Fixed(), torch.full((1, 2), 4), torch.ones(1), temperature=0.5)
    expected = probs**2 / (probs**2).sum()
    torch.testing.assert_close(got[0, 0], expected[0])
    # top-p 0.5 makes the sampler deterministic here
    s = diff.sample(Fixed(), num=5, length=7, steps=3, decoding=Decoding(top_p=0.5))
    assert (s == 0).all()


def test_time_grids():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    g = time_grid(8, "cosine")
    assert g[0] == 1.0 and g[-1] == 0.0 and all(a > b for a, b in zip(g, g[1:]))
    assert g[0] - g[1] < g[-2] - g[-1]  # short steps first
    with pytest.raises(ValueError):
        time_grid(4, "bogus")


class RowRecording(torch.nn.Module):
    """An exact, time-agnostic denoiser that reads its ``labels`` as row ids and keeps (ids, z) of every call."""

    time_conditioned = False

    def __init__(self, joint):
        super().__init__()
        self.inner = ExactDenoiser(joint, V, L)
        self.seen = []

    def forward(self, z, t, labels):
        self.seen.append((labels.clone(), z.clone()))
        return self.inner(z, t)


def test_sample_stats_count_exactly():
    """Ancestral calls the denoiser at every step while a position is masked, on the rows with a mask; cached,
    with a time-agnostic denoiser and the same random numbers, exactly once per step in which some row reveals a
    token, on exactly the rows that reveal something. The reveal steps are read off the ancestral trajectory,
    rebuilt from the rows it evaluated (a row not evaluated has no mask left: it holds its final tokens)."""
    joint = random_joint(V, L, seed=3)
    diff = MaskedDiffusion(V, "linear")
    for N, T in ((50, 16), (2, 64)):
        rows = Conditioning(labels=torch.arange(N))  # the row ids reach the denoiser
        anc, anc_stats = RowRecording(joint), SampleStats()
        x = diff.sample(anc, num=N, length=L, steps=T, sampler="ancestral", conditioning=rows,
                        generator=torch.Generator().manual_seed(1), stats=anc_stats)
        states = []  # z_t before each step that called the denoiser, every row
        for ids, z in anc.seen:
            full = x.clone()
            full[ids] = z
            assert torch.equal(ids, (full == V).any(-1).nonzero().squeeze(-1))  # exactly the rows with a mask
            states.append(full)
        assert (states[-1] == V).any() and len(states) <= T  # it stopped once no mask was left
        if N == 50:
            assert len(states) == T  # 200 positions: some stays masked until the last step
        assert anc_stats.denoiser_calls == len(states) and anc_stats.rows_evaluated == anc.inner.rows
        assert anc_stats.rows_evaluated == sum(int((z == V).any(-1).sum()) for z in states)
        assert (anc_stats.steps, anc_stats.sampler, anc_stats.cached) == (T, "ancestral", False)
        revealing = [(b != a).any(-1) for a, b in zip(states, states[1:] + [x])]  # BoolTensor[N] per step
        cached, stats = RowRecording(joint), SampleStats()
        y = diff.sample(cached, num=N, length=L, steps=T, sampler="cached", conditioning=rows,
                        generator=torch.Generator().manual_seed(1), stats=stats)
        assert torch.equal(x, y)
        expected = [r.nonzero().squeeze(-1) for r in revealing if r.any()]
        assert len(cached.seen) == len(expected)
        assert all(torch.equal(ids, e) for (ids, _), e in zip(cached.seen, expected))
        assert stats.denoiser_calls == len(expected) and stats.rows_evaluated == sum(len(e) for e in expected)
        assert (stats.steps, stats.sampler, stats.cached, stats.classifier_calls, stats.classifier_rows) == \
            (T, "cached", True, 0, 0)
        if N == 2:
            assert stats.denoiser_calls <= N * L < T
    # one object totals several calls; classifier-free guidance evaluates 2 rows per row in one call
    N, T = 50, 16
    den = ExactDenoiser(joint, V, L, class_joints=[joint, joint])
    total = SampleStats()
    for seed in (2, 3):
        diff.sample(den, num=N, length=L, steps=T, sampler="ancestral", generator=torch.Generator().manual_seed(seed),
                    stats=total, conditioning=Conditioning(labels=torch.zeros(N, dtype=torch.long), guidance=1.0,
                                                           null_label=2))
    assert total.denoiser_calls == den.calls == 2 * T and den.rows == 2 * total.rows_evaluated


def test_sample_options_are_checked():
    with pytest.raises(ValueError, match="top_p"):
        Decoding(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Decoding(temperature=0.0)
    with pytest.raises(ValueError, match="grid"):
        Decoding(grid="log")
    with pytest.raises(ValueError, match="block"):
        Windows(4, block=5)
    with pytest.raises(ValueError, match="fixed"):
        Conditioning(fixed_mask=torch.ones(2, L, dtype=torch.bool))
    assert Windows(5).stride == 2 and Windows(1).stride == 1 and Windows(8, 3).stride == 3
    from dnadiff.diffusion import ConfidenceOptions, ReMDMOptions

    den = ExactDenoiser(random_joint(V, L, seed=1), V, L)
    with pytest.raises(ValueError, match="ReMDMOptions does not go with sampler 'confidence'"):
        MaskedDiffusion(V).sample(den, num=2, length=L, steps=4, sampler="confidence", options=ReMDMOptions())
    with pytest.raises(ValueError, match="ConfidenceOptions does not go with sampler 'cached'"):
        MaskedDiffusion(V).sample(den, num=2, length=L, steps=4, options=ConfidenceOptions())
