"""Classifier guidance of the exact samplers on an enumerable joint: exact answers.

The toy: a random joint p(x) over V**L sequences, the exact denoiser, and an exact classifier
p(y = 1 | x) defined on every enumerated sequence. Its noisy form p(y | z) = E[p(y | x) | z] reads
partially masked states. With gamma = 1 the guided samplers draw from p(x | y) (chi-square on the
enumerated counts), gamma = 0 gives the unguided draws, fixed positions never change, and the
first-order form equals the exact one for a classifier linear in the one-hot input.
"""
import pytest
import torch
from toy_distribution import (
    ExactDenoiser,
    all_sequences,
    chi_square_pvalue,
    random_joint,
    seq_index,
)

from dnadiff.diffusion import ClassifierGuidance, Conditioning, MaskedDiffusion, SampleStats, Windows

V, L = 3, 4


class NoisyExactClassifier:
    """log p(y | x) for one-hot rows x [M, L, V + 1] (mask column V): E[p(y | x) | unmasked tokens of x]."""

    def __init__(self, joint, p_y):
        seqs, states = all_sequences(V, L), all_sequences(V + 1, L)
        unmasked = states < V
        consistent = ((states[:, None, :] == seqs[None]) | ~unmasked[:, None, :]).all(-1)  # [(V+1)**L, S]
        w = joint.double() * consistent
        self.table = torch.log((w * p_y.double()).sum(-1) / w.sum(-1)).float()  # log p(y | z) of every state
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return self.table[seq_index(x.argmax(-1), V + 1)]


@pytest.fixture(scope="module")
def toy():
    joint = random_joint(V, L, seed=3, concentration=0.8)
    g = torch.Generator().manual_seed(5)
    p_y = torch.sigmoid(3 * torch.randn(V ** L, generator=g, dtype=torch.float64))  # p(y = 1 | x)
    posterior = joint * p_y
    return joint, p_y, posterior / posterior.sum()


def histogram(x):
    return torch.bincount(seq_index(x, V), minlength=V ** L)


@pytest.mark.parametrize("sampler,steps", [("first-hitting", None), pytest.param("ancestral", 200, marks=pytest.mark.slow),
                                          pytest.param("cached", 200, marks=pytest.mark.slow)])
def test_gamma_one_draws_from_the_class_posterior(toy, sampler, steps):
    joint, p_y, posterior = toy
    clf = NoisyExactClassifier(joint, p_y)
    guide = ClassifierGuidance(clf, gamma=1.0, form="exact")
    stats = SampleStats()
    x = MaskedDiffusion(V, "linear").sample(ExactDenoiser(joint, V, L), num=6000, length=L, steps=steps,
                                            sampler=sampler, conditioning=Conditioning(guide=guide), stats=stats,
                                                   generator=torch.Generator().manual_seed(1))
    counts = histogram(x)
    assert chi_square_pvalue(counts, posterior) > 1e-3
    assert chi_square_pvalue(counts, joint) < 1e-6  # visibly not the unguided joint
    assert stats.classifier_calls == clf.calls > 0
    assert stats.classifier_rows == 6000 * L * V  # V candidates per revealed position, once each


def test_gamma_zero_is_the_unguided_sampler(toy):
    joint, p_y, _ = toy
    clf = NoisyExactClassifier(joint, p_y)
    diff = MaskedDiffusion(V, "linear")
    for sampler, steps in [("first-hitting", None), ("ancestral", 50), ("cached", 50)]:
        a = diff.sample(ExactDenoiser(joint, V, L), num=300, length=L, steps=steps, sampler=sampler,
                        conditioning=Conditioning(guide=ClassifierGuidance(clf, gamma=0.0)),
                        generator=torch.Generator().manual_seed(2))
        b = diff.sample(ExactDenoiser(joint, V, L), num=300, length=L, steps=steps, sampler=sampler,
                        generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
    assert clf.calls == 0
    x = diff.sample(ExactDenoiser(joint, V, L), num=8000, length=L, steps=None, sampler="first-hitting",
                    conditioning=Conditioning(guide=ClassifierGuidance(clf, gamma=0.0)),
                    generator=torch.Generator().manual_seed(4))
    assert chi_square_pvalue(histogram(x), joint) > 1e-3


def test_fixed_positions_never_change_and_the_rest_follow_the_conditional(toy):
    joint, p_y, posterior = toy
    clf = NoisyExactClassifier(joint, p_y)
    fixed = torch.tensor([[2, 0, 0, 1]]).expand(6000, -1)
    fm = torch.tensor([[True, False, False, True]]).expand(6000, -1)
    x = MaskedDiffusion(V, "linear").sample(ExactDenoiser(joint, V, L), num=6000, length=L, steps=None,
                                            sampler="first-hitting",
                                            conditioning=Conditioning(fixed, fm,
                                                                      guide=ClassifierGuidance(clf, gamma=1.0)),
                                            generator=torch.Generator().manual_seed(6))
    assert torch.equal(x[:, 0], fixed[:, 0]) and torch.equal(x[:, 3], fixed[:, 3])
    seqs = all_sequences(V, L)
    consistent = (seqs[:, 0] == 2) & (seqs[:, 3] == 1)
    cond = posterior * consistent
    counts = histogram(x)
    assert counts[~consistent].sum() == 0
    assert chi_square_pvalue(counts[consistent], (cond / cond.sum())[consistent]) > 1e-3


def test_windows_let_the_classifier_see_the_whole_sequence():
    """Semi-autoregressive windows: the guide gets the whole sequence (window in place), fixed stay fixed."""
    seen = []

    def lp(x, t):
        seen.append(x.shape[1])
        return (x[:, :, 0].sum(-1)).float()  # favours token 0 anywhere

    n, length = 200, 9
    fixed = torch.zeros(n, length, dtype=torch.long)
    fixed[:, 4] = 2
    fm = torch.zeros(n, length, dtype=torch.bool)
    fm[:, 4] = True
    den = ExactDenoiser(random_joint(V, 3, seed=1), V, 3)
    guide = ClassifierGuidance(lp, gamma=3.0, form="first-order")
    x = MaskedDiffusion(V, "linear").sample(den, num=n, length=length, steps=20, sampler="cached",
                                            windows=Windows(3, block=2),
                                            conditioning=Conditioning(fixed, fm, guide=guide),
                                            generator=torch.Generator().manual_seed(0))
    assert set(seen) == {length}
    assert (x[:, 4] == 2).all()
    u = MaskedDiffusion(V, "linear").sample(den, num=n, length=length, steps=20, sampler="cached",
                                            windows=Windows(3, block=2), conditioning=Conditioning(fixed, fm),
                                            generator=torch.Generator().manual_seed(0))
    assert (x == 0).float().mean() > (u == 0).float().mean() + 0.2


def test_first_order_equals_exact_for_a_linear_classifier():
    g = torch.Generator().manual_seed(9)
    W = torch.randn(L, V + 1, generator=g)
    lp = lambda x, t: (x * W).sum((-1, -2))  # log p(y | x) linear in the one-hot input
    N = 64
    z = torch.randint(V + 1, (N, L), generator=g)
    mu = torch.softmax(torch.randn(N, L, V, generator=g), -1)
    reveal = (z == V) & (torch.rand(N, L, generator=g) < 0.7)
    for fill in ("mask", "x0"):
        exact = ClassifierGuidance(lp, gamma=1.7, form="exact", fill=fill, chunk=7)
        first = ClassifierGuidance(lp, gamma=1.7, form="first-order", fill=fill)
        se, sf = SampleStats(), SampleStats()
        pe = exact.probs(z, mu, reveal, 0.5, se)
        pf = first.probs(z, mu, reveal, 0.5, sf)
        torch.testing.assert_close(pe, pf, rtol=1e-5, atol=1e-6)
        # the closed form: mu * exp(gamma * W[i, b]), renormalised
        want = mu[reveal] * torch.exp(1.7 * W[reveal.nonzero()[:, 1], :V])
        torch.testing.assert_close(pe, want / want.sum(-1, keepdim=True), rtol=1e-5, atol=1e-6)
        R = int(reveal.sum())
        assert se.classifier_rows == R * V and se.classifier_calls == -(-R * V // 7)
        assert sf.classifier_calls == 1 and sf.classifier_rows == int(reveal.any(-1).sum())


def test_guidance_refuses_inexact_samplers(toy):
    joint, p_y, _ = toy
    guide = ClassifierGuidance(NoisyExactClassifier(joint, p_y))
    for sampler in ("remdm", "confidence"):
        with pytest.raises(ValueError, match="exact sampler"):
            MaskedDiffusion(V, "linear").sample(ExactDenoiser(joint, V, L), num=2, length=L, steps=4, sampler=sampler,
                                                conditioning=Conditioning(guide=guide))
    with pytest.raises(ValueError, match="form"):
        ClassifierGuidance(guide.log_prob, form="second-order")
