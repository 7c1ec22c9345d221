"""Bootstrap intervals of the field figures contain their own point estimates, on real DHS sequences,
where the plain percentile interval of the same resamples does not (the resampling bias of issue 22)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import dnadiff.eval.field_metrics as fm
from dnadiff.eval.sequence_metrics import kmer_counts

DHS_FILE = "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz"


def test_recentred_interval_is_the_percentile_one_shifted_to_the_estimate():
    x = np.random.default_rng(3).exponential(size=80)
    stat = lambda i: float(np.max(x[i]))  # noqa: E731  biased under resampling: a resample's max <= the max
    lo, hi = fm.bootstrap_interval(stat, len(x), n_boot=300, seed=1, method="percentile")
    rng = np.random.default_rng(1)
    vals = np.array([stat(rng.integers(0, 80, 80)) for _ in range(300)])
    q = np.quantile(vals, [0.025, 0.5, 0.975])
    assert [lo, hi] == pytest.approx([q[0], q[2]])
    assert hi <= x.max()  # a resample's max never exceeds the max: the percentile interval sits below it
    r_lo, r_hi = fm.bootstrap_interval(stat, len(x), n_boot=300, seed=1)
    assert [r_lo, r_hi] == pytest.approx([x.max() + q[0] - q[1], x.max() + q[2] - q[1]])
    assert r_lo <= x.max() <= r_hi
    c_lo, c_hi = fm.bootstrap_interval(stat, len(x), n_boot=300, seed=1, bounds=(0.0, x.max()))
    assert c_hi == x.max() and c_lo == pytest.approx(r_lo)  # clipped to the statistic's range


@pytest.mark.slow
def test_every_reported_interval_contains_its_estimate_on_real_dhs(shared_data, monkeypatch):
    pytest.importorskip("pyjaspar")
    from dnadiff.data.dhs import load_dhs

    dhs = load_dhs(shared_data / "dna_diffusion" / DHS_FILE)
    train, test = dhs.subset("training"), dhs.subset("test")
    rng = np.random.default_rng(0)
    generated = [train.sequences[i] for i in rng.permutation(len(train.sequences))[:120]]  # a near-perfect "generator"
    real = [test.sequences[i] for i in rng.permutation(len(test.sequences))[:500]]

    class DinucleotideEmbedder:
        def embed(self, seqs):
            c = np.stack([kmer_counts([s], 2) for s in seqs]).astype(float)
            return c / c.sum(1, keepdims=True)

    scanner = fm.MotifScanner(fm.jaspar_motifs()[:80])
    rep = fm.field_report(generated, real, embedder=DinucleotideEmbedder(), scanner=scanner, n_boot=100)
    assert rep["interval_method"] == fm.INTERVAL_METHOD
    figures = [(k, e) for k, e in rep.items() if isinstance(e, dict)]
    assert [k for k, _ in figures] == ["kmer3_pearson", "frechet", "motif_rate_pearson"]
    for key, e in figures:
        for point, ci in ((e["value"], e["ci"]), (e["floor"], e["floor_ci"])):
            assert ci[0] <= point <= ci[1], (key, point, ci)
            assert ci[1] - ci[0] > 0
    # the same resamples as a plain percentile interval miss their estimates (the bug this replaces)
    monkeypatch.setattr(fm, "bootstrap_interval", functools.partial(fm.bootstrap_interval, method="percentile"))
    plain = fm.field_report(generated, real, embedder=DinucleotideEmbedder(), scanner=scanner, n_boot=100)
    missed = [k for k, e in plain.items() if isinstance(e, dict) and not e["ci"][0] <= e["value"] <= e["ci"][1]]
    assert "frechet" in missed and len(missed) >= 2
    for key, e in figures:  # same resamples, same widths: only the centre moved
        assert plain[key]["ci"][1] - plain[key]["ci"][0] == pytest.approx(e["ci"][1] - e["ci"][0], rel=1e-6, abs=1e-12)
