"""Sequence quality metrics against hand-computed answers, and on real DHS sequences."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dnadiff.eval.sequence_metrics import (
    KmerClassifier, gc_fractions, gc_wasserstein, js_divergence, kmer_counts, kmer_spectrum_js,
    nearest_neighbour_identity, per_sequence_kmer_counts, report,
)


def test_kmer_counts_by_hand():
    # ACGT -> AC(1) CG(6) GT(11); AANC -> AA(0) only (AN, NC skipped); no k-mer spans the two sequences
    expected = np.zeros(16, dtype=np.int64)
    expected[[0, 1, 6, 11]] = 1
    np.testing.assert_array_equal(kmer_counts(["ACGT", "AANC"], 2), expected)
    np.testing.assert_array_equal(kmer_counts(["acgt"], 4), np.eye(256, dtype=np.int64)[0 * 64 + 1 * 16 + 2 * 4 + 3])
    per = per_sequence_kmer_counts(["ACGT", "AANC", "A", ""], 1)
    np.testing.assert_array_equal(per, [[1, 1, 1, 1], [2, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_js_divergence_by_hand():
    assert js_divergence([1, 0, 0, 0], [0, 1, 0, 0]) == pytest.approx(1.0)  # disjoint support: 1 bit
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4)
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    assert js_divergence([1, 1], [2, 0]) == pytest.approx(0.5 * kl_p + 0.5 * kl_q)
    assert js_divergence([3, 1], [1, 3]) == pytest.approx(js_divergence([1, 3], [3, 1]))  # symmetric


def test_kmer_spectrum_js_zero_for_identical_sets_and_hand_value():
    seqs = ["ACGTTGCA", "GGGCCCAT", "TTTTAAAA"]
    assert all(v == 0.0 for v in kmer_spectrum_js(seqs, list(reversed(seqs))).values())
    js = kmer_spectrum_js(["AC"], ["AA"], ks=(1, 2))
    assert js[1] == pytest.approx(0.311278124459)  # the (1/2,1/2) vs (1,0) case above
    assert js[2] == pytest.approx(1.0)  # AC vs AA: disjoint 2-mers


def test_gc_content_and_wasserstein_by_hand():
    np.testing.assert_allclose(gc_fractions(["GCGC", "ATAT", "ACNN", "NN"]), [1.0, 0.0, 0.5, np.nan])
    assert gc_wasserstein(["AAAA", "GGGG"], ["ACAC", "GTGT"]) == pytest.approx(0.5)  # {0,1} vs {.5,.5}
    assert gc_wasserstein(["AAAA"], ["AAAC", "AACC"]) == pytest.approx((0.25 + 0.5) / 2)
    assert gc_wasserstein(["ACGT", "AAAA"], ["AAAA", "ACGT"]) == 0.0


def test_nearest_neighbour_identity_exact():
    train = ["ACGA", "CCCC"]
    # ACGT vs ACGA: 3/4; AAAA vs ACGA: 2/4 (pos 0, 3); TCGT is the reverse complement of ACGA: 1.0
    got = nearest_neighbour_identity(["ACGT", "AAAA", "TCGT"], train)
    np.testing.assert_allclose(got, [0.75, 0.5, 1.0])
    np.testing.assert_allclose(nearest_neighbour_identity(["TCGT"], train, both_strands=False), [0.5])  # .CG.
    np.testing.assert_allclose(nearest_neighbour_identity(["ANNA"], ["AAAA"]), [0.5])  # N never matches
    rng = np.random.default_rng(0)
    many = ["".join(rng.choice(list("ACGT"), 30)) for _ in range(50)]
    brute = [max(sum(a == b for a, b in zip(g, t)) / 30 for t in many[10:]) for g in many[:10]]
    np.testing.assert_allclose(nearest_neighbour_identity(many[:10], many[10:], both_strands=False, chunk=7), brute)
    with pytest.raises(ValueError, match="one length"):
        nearest_neighbour_identity(["ACG"], ["ACGT"])


def test_report_on_identical_sets_and_real_dhs(shared_data):
    from dnadiff.data.dhs import load_dhs

    dhs = load_dhs(shared_data / "dna_diffusion" / "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz")
    test = dhs.subset("test")
    real = test.sequences[:300]
    same = report(real, real, train=real)
    assert same["kmer_js_mean"] == 0.0 and same["gc_wasserstein"] == 0.0
    assert same["nn_identity_mean"] == 1.0 and same["exact_copies"] == 300

    # real chr1 sequences against real chr2 (validation) ones: close spectra, no copies
    rng = np.random.default_rng(0)
    other = [dhs.subset("validation").sequences[i] for i in rng.choice(4053, 600, replace=False)]
    figures = report(real, other, train=other)
    assert 0 < figures["kmer_js"][1] < figures["kmer_js"][6] < 0.1
    assert figures["gc_wasserstein"] < 0.05
    assert figures["exact_copies"] == 0 and figures["nn_identity_max"] < 0.9

    # shuffled-base decoys (same composition, destroyed order) are further away at k >= 2
    decoys = ["".join(rng.permutation(list(s))) for s in real]
    decoy = report(decoys, other)
    assert decoy["kmer_js"][1] < 0.01 and decoy["kmer_js"][3] > figures["kmer_js"][3]


def test_kmer_classifier_recognises_dhs_cell_types(shared_data):
    from dnadiff.data.dhs import load_dhs

    dhs = load_dhs(shared_data / "dna_diffusion" / "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz")
    train, test = dhs.subset("training"), dhs.subset("test")
    rng = np.random.default_rng(0)
    keep = rng.choice(len(train.labels), 4000, replace=False)
    classifier = KmerClassifier(ks=(1, 2, 3, 4)).fit([train.sequences[i] for i in keep], train.labels[keep])
    accuracy = classifier.accuracy(test.sequences, test.labels)
    assert accuracy > 0.45  # chance is 0.25 for the four balanced cell types
    figures = report(test.sequences[:200], test.sequences[200:], classifier=classifier, requested=test.labels[:200])
    assert figures["chance"] == 0.25
    assert figures["class_accuracy"] == pytest.approx(classifier.accuracy(test.sequences[:200], test.labels[:200]))
