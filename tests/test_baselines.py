"""k-mer logistic regression and the Genomic Benchmarks CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dnadiff.data.genomic_benchmarks import load_task
from dnadiff.eval.classification import classification_metrics
from dnadiff.eval.sequence_metrics import sparse_kmer_counts as kmer_counts
from dnadiff.finetuning.baselines import CNNBaseline, GBCNN, KmerLogReg
from dnadiff.finetuning.cv import stratified_folds


def test_kmer_counts_exact():
    counts = kmer_counts(["ACGTACGT", "AANAA"], k=2).toarray()
    col = lambda s: sum("ACGT".index(ch) * 4 ** (len(s) - 1 - i) for i, ch in enumerate(s))
    assert counts.shape == (2, 16)
    assert counts[0, col("AC")] == 2 and counts[0, col("CG")] == 2 and counts[0, col("GT")] == 2
    assert counts[0, col("TA")] == 1 and counts[0].sum() == 7  # L - k + 1 windows
    assert counts[1, col("AA")] == 2 and counts[1].sum() == 2  # windows with N are skipped
    assert kmer_counts(["ACGTAC"], k=6).toarray()[0, col("ACGTAC")] == 1


@pytest.fixture(scope="module")
def nontata(shared_data):
    data = load_task("human_nontata_promoters", data=shared_data / "genomic_benchmarks" / "human_nontata_promoters.test.tsv")
    tr, va = stratified_folds(data.train.labels, 5, 0, data.class_names)[0]
    rng = np.random.default_rng(0)  # the file is sorted by label: draw, do not slice
    return data.train.subset(rng.choice(tr, 1500, replace=False)), data.train.subset(rng.choice(va, 600, replace=False))


def test_kmer_logreg_learns_real_promoters(nontata):
    train, val = nontata
    model = KmerLogReg(k=6).fit(train.seqs, train.labels, 2)
    probs = model.predict_proba(val.seqs)
    assert probs.shape == (len(val), 2) and np.allclose(probs.sum(1), 1)
    m = classification_metrics(val.labels, probs)
    assert m["accuracy"] > 0.75 and m["auroc"] > 0.8  # published k-mer-level baselines ~0.85 on full data


def test_cnn_first_conv_is_conv_of_embedding():
    model = GBCNN(num_classes=3, input_len=60)
    tokens = torch.randint(0, 7, (4, 60))
    reference = model.conv1(model.embeddings(tokens).transpose(1, 2))
    folded = model.first_conv(tokens)
    assert torch.allclose(folded, reference, atol=1e-5)
    grads = torch.autograd.grad(folded.square().sum(), [model.conv1.weight, model.embeddings.weight])
    ref_grads = torch.autograd.grad(reference.square().sum(), [model.conv1.weight, model.embeddings.weight])
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert model(tokens).shape == (4, 3)


def test_cnn_learns_real_promoters(nontata):
    train, val = nontata
    cnn = CNNBaseline(2, input_len=251, epochs=3, seed=0).fit(train.seqs[:800], train.labels[:800], val.seqs, val.labels)
    m = classification_metrics(val.labels, cnn.predict_proba(val.seqs))
    assert m["accuracy"] > 0.65
