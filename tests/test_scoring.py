"""Scoring against exact answers: on enumerable joints with the exact denoiser, the masked-marginal LLR and the
per-position pseudo-log-likelihood equal the true conditionals, strand averaging equals the mean of the two
strands' true conditionals, the paired ELBO difference is unbiased for log p(alt) - log p(ref) with far lower
variance than independent estimates, and the NELBO bits/base brackets -log2 p(x) / L; Caduceus-Ph scores and
embeddings averaged over strands and Caduceus-PS ones are exactly reverse-complement invariant."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dnadiff.diffusion import MaskedDiffusion
from dnadiff.rc import reverse_complement, reverse_complement_str
from dnadiff.scoring import embed, nelbo_scores, paired_elbo_difference, pseudo_log_likelihood, saturation_mutagenesis
from dnadiff.scoring.common import masked_logprobs
from toy_distribution import ExactDenoiser, random_joint, seq_index

V = 4
BASES = "ACGT"


def toy(L: int = 4, seed: int = 1, schedule: str = "linear"):
    joint = random_joint(V, L, seed=seed)
    return SimpleNamespace(denoiser=ExactDenoiser(joint, V, L), diffusion=MaskedDiffusion(V, schedule), window=L), joint


def logp(joint, x: torch.Tensor) -> float:
    return math.log(float(joint[seq_index(x[None], V)]))


def conditional(joint, x: torch.Tensor, i: int) -> np.ndarray:
    """True log p(x_i = b | x_-i) for b in A, C, G, T: float64[4]."""
    vals = []
    for b in range(V):
        y = x.clone()
        y[i] = b
        vals.append(logp(joint, y))
    vals = np.array(vals)
    return vals - np.logaddexp.reduce(vals)


def ids(seq: str) -> torch.Tensor:
    return torch.tensor([BASES.index(c) for c in seq])


def test_pseudo_log_likelihood_equals_the_true_conditionals():
    model, joint = toy()
    for seq in ("AGCT", "TTAC", "GGGA"):
        got = pseudo_log_likelihood(model, seq, batch_size=3, strands="forward")  # 2 calls for 4 positions
        want = [conditional(joint, ids(seq), i)[BASES.index(c)] for i, c in enumerate(seq)]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_pll_batches_cost_about_L_over_B_calls():
    model, _ = toy()
    model.denoiser.calls = 0
    pseudo_log_likelihood(model, "AGCT", batch_size=2, strands="forward")
    assert model.denoiser.calls == 2


def test_saturation_llr_equals_the_true_conditional_log_ratio():
    model, joint = toy(seed=3)
    sat = saturation_mutagenesis(model, sequence="CATG", context=3, strands="forward")
    for i, c in enumerate("CATG"):
        cond = conditional(joint, ids("CATG"), i)
        np.testing.assert_allclose(sat.llr[i], cond - cond[BASES.index(c)], atol=1e-5)
        assert sat.llr[i, BASES.index(c)] == 0


def test_strand_average_is_the_mean_of_both_strands_true_conditionals():
    model, joint = toy(seed=5)
    x = ids("ACGG")
    rc = reverse_complement(x)
    for i in range(4):
        got = masked_logprobs(model.denoiser, model.diffusion, x[None], torch.tensor([i]), "both")[0].double().numpy()
        fwd = conditional(joint, x, i)
        back = conditional(joint, rc, 3 - i)[[3, 2, 1, 0]]  # complement of each base, read on the RC strand
        np.testing.assert_allclose(got, (fwd + back) / 2, atol=1e-5)


class ByLength(torch.nn.Module):
    """Exact denoisers of two joints, over sequences of length L and of length L + 1 (an indel's two windows)."""

    time_conditioned = False

    def __init__(self, short: ExactDenoiser, long: ExactDenoiser):
        super().__init__()
        self.short, self.long = short, long

    def forward(self, z, t, labels=None):
        return (self.short if z.shape[1] == self.short.L else self.long)(z, t)


def _repeats(den, diffusion, parts, paired: bool, n: int = 80, num_t: int = 8) -> np.ndarray:
    g = torch.Generator().manual_seed(11)
    return np.array([paired_elbo_difference(den, diffusion, *parts, num_t=num_t, generator=g, paired=paired)[0]
                     for _ in range(n)])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_paired_elbo_difference_is_unbiased_with_lower_variance(schedule):
    model, joint = toy(seed=2, schedule=schedule)
    left, ref, alt, right = ids("A"), ids("GC"), ids("AA"), ids("T")  # a 2-base substitution
    truth = logp(joint, ids("AAAT")) - logp(joint, ids("AGCT"))
    paired = _repeats(model.denoiser, model.diffusion, (left, ref, alt, right), True)
    indep = _repeats(model.denoiser, model.diffusion, (left, ref, alt, right), False)
    for d in (paired, indep):
        assert abs(d.mean() - truth) < 4 * d.std() / math.sqrt(len(d)), (d.mean(), truth)
    assert paired.var() < 0.5 * indep.var(), (paired.var(), indep.var())


def test_paired_elbo_difference_of_an_indel_is_unbiased_with_lower_variance():
    j3, j4 = random_joint(V, 3, seed=7), random_joint(V, 4, seed=8)
    den = ByLength(ExactDenoiser(j3, V, 3), ExactDenoiser(j4, V, 4))
    diffusion = MaskedDiffusion(V, "linear")
    left, ref, alt, right = ids("C"), ids("G"), ids("TA"), ids("A")  # CGA -> CTAA (a 1-base insertion)
    truth = logp(j4, ids("CTAA")) - math.log(float(j3[seq_index(ids("CGA")[None], V)]))
    paired = _repeats(den, diffusion, (left, ref, alt, right), True)
    indep = _repeats(den, diffusion, (left, ref, alt, right), False)
    for d in (paired, indep):
        assert abs(d.mean() - truth) < 4 * d.std() / math.sqrt(len(d)), (d.mean(), truth)
    assert paired.var() < indep.var(), (paired.var(), indep.var())


def test_nelbo_bits_per_base_is_unbiased_for_the_exact_denoiser():
    model, joint = toy(seed=4)
    seqs = ["AGCT", "CCAT"]
    s = nelbo_scores(model, seqs, num_t=200, seed=0)
    assert s.num_t == 200 and list(s.bases) == [4, 4]
    for k, seq in enumerate(seqs):
        truth = -logp(joint, ids(seq)) / 4 / math.log(2)
        assert abs(s.bits_per_base[k] - truth) < 4 * s.stderr[k], (s.bits_per_base[k], truth, s.stderr[k])
    # an N position is not counted, an all-N sequence has no score
    s = nelbo_scores(model, ["NNNN"], num_t=2)
    assert s.bases[0] == 0 and math.isnan(s.bits_per_base[0])


# ------------------------------------------------------------------------------- RC symmetry on Caduceus
def caduceus(variant: str, seed: int = 0):
    from dnadiff.models.caduceus import CaduceusDenoiser

    torch.manual_seed(seed)
    den = CaduceusDenoiser(variant=variant, d_model=16, n_layer=2, embed_size=7, num_outputs=4).eval()
    return SimpleNamespace(denoiser=den, diffusion=MaskedDiffusion(V, "loglinear"), window=64)


def random_seq(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(BASES), size=n))


@pytest.mark.parametrize("variant, strands", [("ph", "both"), ("ps", "forward")])
def test_scores_are_reverse_complement_invariant(variant, strands):
    model = caduceus(variant)
    seq = random_seq(40, 1)
    sat = saturation_mutagenesis(model, sequence=seq, context=10, strands=strands)
    sat_rc = saturation_mutagenesis(model, sequence=reverse_complement_str(seq), context=10, strands=strands)
    # substitution b at i on + equals complement(b) at L-1-i on -
    np.testing.assert_allclose(sat.llr, sat_rc.llr[::-1][:, [3, 2, 1, 0]], atol=2e-4)
    assert np.abs(sat.llr).max() > 1e-3  # a random model still scores something


def test_ph_forward_strand_alone_is_not_invariant():
    model = caduceus("ph")
    seq = random_seq(40, 1)
    a = saturation_mutagenesis(model, sequence=seq, context=10, strands="forward").llr
    b = saturation_mutagenesis(model, sequence=reverse_complement_str(seq), context=10, strands="forward").llr
    assert np.abs(a - b[::-1][:, [3, 2, 1, 0]]).max() > 1e-3  # so the invariance above is the averaging's doing


@pytest.mark.parametrize("variant", ["ph", "ps"])
@pytest.mark.parametrize("layer", [None, 1])
def test_embeddings_are_reverse_complement_invariant_and_in_input_order(variant, layer):
    model = caduceus(variant)
    seqs = [random_seq(n, n) for n in (30, 12, 45, 12, 7)]
    e = embed(model, seqs, layer=layer, batch_size=2)
    e_rc = embed(model, [reverse_complement_str(s) for s in seqs], layer=layer, batch_size=3)
    np.testing.assert_allclose(e, e_rc, atol=1e-5)
    one = np.stack([embed(model, [s], layer=layer)[0] for s in seqs])  # batching and padding change nothing
    np.testing.assert_allclose(e, one, atol=1e-5)
    assert e.shape == (5, 16) and np.abs(e[0] - e[2]).max() > 1e-4


def test_transformer_embeddings_do_not_depend_on_batching():
    from dnadiff.models import build_model

    torch.manual_seed(0)
    den = build_model({"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 16, "n_layer": 1,
                       "n_head": 2, "max_len": 64}).eval()
    model = SimpleNamespace(denoiser=den, diffusion=MaskedDiffusion(V, "linear"), window=64)
    seqs = [random_seq(n, n) for n in (30, 12, 45, 12, 7)]
    e = embed(model, seqs, batch_size=8)
    np.testing.assert_allclose(e, np.stack([embed(model, [s])[0] for s in seqs]), atol=1e-5)
    np.testing.assert_allclose(e, embed(model, [reverse_complement_str(s) for s in seqs]), atol=1e-5)
