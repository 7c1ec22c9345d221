"""Field metrics (Fréchet distance, k-mer correlation, motif occurrence, floors and bootstrap
intervals) against closed forms and constructed cases; the classifier and JASPAR on real data."""
import numpy as np
import pytest

from dnadiff.eval.field_metrics import (MotifScanner, bootstrap_interval, field_report, frechet_distance,
                                        frechet_from_moments, kmer_pearson, motif_rate_pearson)
from dnadiff.eval.sequence_metrics import kmer_counts


def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # common rotation: the covariances commute
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_from_moments(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
    # non-commuting: W2^2 = Tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2), by eigendecompositions
    c1, c2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = c1 @ c1.T, c2 @ c2.T

    def sqrtm_sym(s):
        w, v = np.linalg.eigh(s)
        return v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T

    r = sqrtm_sym(s2)
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm_sym(r @ s1 @ r))
    assert frechet_from_moments(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    x = rng.normal(size=(200, 3))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + 2.0) == pytest.approx(12.0, rel=1e-9)  # shift only: ||2 * 1||^2


def test_kmer_pearson_by_hand():
    a, b = ["ACGTACGT", "AAAACCCC"], ["ACGTTTTT", "GGGGACGT"]
    pa, pb = kmer_counts(a, 3).astype(float), kmer_counts(b, 3).astype(float)
    assert pa.sum() == 12 and pb.sum() == 12
    assert kmer_pearson(a, b) == pytest.approx(np.corrcoef(pa, pb)[0, 1], rel=1e-12)
    assert kmer_pearson(a, a) == pytest.approx(1.0)


def test_motif_scanner_finds_motif_on_both_strands():
    pwm = np.full((7, 4), -4.0)
    for i, base in enumerate("GATTACA"):
        pwm[i, "ACGT".index(base)] = 1.5
    scanner = MotifScanner([("toy GATTACA", pwm), ("toy CCCC", np.log2(np.eye(4)[[1, 1, 1, 1]] * 0.97 + 0.01) + 2)],
                           threshold=0.99)
    seqs = ["TTGATTACATT", "CCTGTAATCAA", "GATTTCAGTGT", "ACCCCA"]
    pres = scanner.presence(seqs)
    assert pres[:, 0].tolist() == [True, True, False, False]  # the second holds the reverse complement
    assert pres[:, 1].tolist() == [False, False, False, True]
    assert motif_rate_pearson(pres, pres) == pytest.approx(1.0)


def test_bootstrap_interval_of_a_mean():
    x = np.random.default_rng(1).normal(size=400)
    lo, hi = bootstrap_interval(lambda i: float(x[i].mean()), len(x), n_boot=400)
    se = x.std() / 20
    assert lo < x.mean() < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_field_report_floor_and_a_bad_generator():
    rng = np.random.default_rng(2)
    probs = np.array([0.35, 0.15, 0.15, 0.35])  # AT-rich "real" sequences
    real = ["".join(rng.choice(list("ACGT"), 100, p=probs)) for _ in range(300)]
    good = ["".join(rng.choice(list("ACGT"), 100, p=probs)) for _ in range(40)]
    bad = ["".join(rng.choice(list("ACGT"), 100, p=probs[::-1] * 0 + 0.25)) for _ in range(40)]

    class KmerEmbedder:
        def embed(self, seqs):
            return np.stack([kmer_counts([s], 2) for s in seqs]).astype(float)

    rep_good = field_report(good, real, embedder=KmerEmbedder(), n_boot=50)
    rep_bad = field_report(bad, real, embedder=KmerEmbedder(), n_boot=50)
    for rep in (rep_good, rep_bad):
        assert rep["num_generated"] == 40 and rep["num_reference"] == 260
        for key in ("kmer3_pearson", "frechet"):
            e = rep[key]
            assert e["ci"][0] <= e["ci"][1] and e["floor_ci"][0] <= e["floor_ci"][1]
    # same floor (same real split), and the good generator sits near it, the bad one far from it
    assert rep_good["frechet"]["floor"] == rep_bad["frechet"]["floor"]
    assert rep_bad["frechet"]["value"] > 3 * rep_good["frechet"]["value"]
    assert rep_bad["kmer3_pearson"]["value"] < rep_good["kmer3_pearson"]["value"]
    assert rep_good["frechet"]["ci"][0] <= rep_good["frechet"]["floor_ci"][1]


@pytest.mark.slow
def test_jaspar_offline_and_cnn_embedder_on_real_dhs(shared_data, monkeypatch):
    """pyjaspar's bundled JASPAR loads with the network blocked; the CNN learns the DHS cell
    types above chance on held-out sequences; motif rates of real vs real correlate strongly."""
    import socket

    from dnadiff.data.dhs import load_dhs
    from dnadiff.eval.embedding import SequenceEmbedder
    from dnadiff.eval.field_metrics import _MOTIFS_CACHE, jaspar_motifs

    def blocked(*args, **kwargs):
        raise OSError("network blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    _MOTIFS_CACHE.clear()
    motifs = jaspar_motifs()
    assert len(motifs) > 500 and any("CTCF" in name for name, _ in motifs)
    dhs = load_dhs(shared_data / "dna_diffusion" / "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz")
    train, test = dhs.subset("training"), dhs.subset("test")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train.sequences))[:5000]
    emb = SequenceEmbedder(epochs=2).fit([train.sequences[i] for i in idx], train.labels[idx])
    held = rng.permutation(len(test.sequences))[:600]
    acc = emb.accuracy([test.sequences[i] for i in held], test.labels[held])
    assert acc > 0.35  # 4 classes: chance 0.25
    scanner = MotifScanner(motifs[:150])
    a, b = [test.sequences[i] for i in held[:300]], [test.sequences[i] for i in held[300:]]
    assert motif_rate_pearson(scanner.presence(a), scanner.presence(b)) > 0.8
