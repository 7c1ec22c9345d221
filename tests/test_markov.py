"""Order-k Markov baseline: hand-computed entropies, back-off at N and window start, real hg38."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dnadiff.data.genome_datamodule import GenomeDataModule
from dnadiff.data.tokenizer import encode
from dnadiff.eval.markov import MarkovModel, fit_markov
from dnadiff.errors import UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def batch_of(*seqs: str) -> dict:
    tokens = torch.stack([encode(s) for s in seqs])
    return {"tokens": tokens, "loss_mask": tokens < 4}


def reference_log_prob(counts: list[np.ndarray], tokens: list[int], j: int, order: int, alpha: float) -> float:
    """Slow per-position reference: longest clean context up to ``order``, additive smoothing."""
    m = 0
    while m < order and j - m - 1 >= 0 and tokens[j - m - 1] < 4:
        m += 1
    code = sum(tokens[j - t] * 4 ** (t - 1) for t in range(1, m + 1))
    row = counts[m].reshape(-1, 4)[code]
    return math.log(row[tokens[j]] + alpha) - math.log(row.sum() + 4 * alpha)


def test_order0_gives_hand_computed_entropy():
    # A 1/2, C 1/4, G 1/8, T 1/8: entropy 1.75 bits exactly
    batch = batch_of("AAAACCGT")
    model = MarkovModel(max_order=0, alphas=(0.0,))
    model.update(batch["tokens"], batch["loss_mask"])
    score = model.score([batch])
    assert score.num_positions == 8 and score.order == 0
    assert score.bits_per_nt == pytest.approx(1.75, abs=1e-12)
    assert score.perplexity == pytest.approx(2 ** 1.75, abs=1e-12)
    # additive smoothing: (c + 1) / (8 + 4)
    model.alpha = 1.0
    expected = -(4 * math.log(5 / 12) + 2 * math.log(3 / 12) + 2 * math.log(2 / 12)) / 8
    assert model.score([batch]).nats_per_nt == pytest.approx(expected, abs=1e-12)


def test_counts_skip_contexts_across_n_and_window_start():
    batch = batch_of("ACNGT", "CAGNA")
    model = MarkovModel(max_order=2)
    model.update(batch["tokens"], batch["loss_mask"])
    order1 = model.counts[1].reshape(4, 4)  # [context base, next base]
    # pairs: A->C, G->T (N breaks C->G), then C->A, A->G in the second window (never T->C across windows)
    assert order1.sum() == 4 and order1[0, 1] == order1[2, 3] == order1[1, 0] == order1[0, 2] == 1
    order2 = model.counts[2].reshape(16, 4)  # context code = x[j-1] + 4 * x[j-2]
    assert order2.sum() == 1 and order2[0 + 4 * 1, 2] == 1  # only "CA" -> G has two clean bases before it
    assert model.counts[0].reshape(-1).tolist() == [3, 2, 2, 1]


def test_periodic_sequence_selects_a_context_order_and_backs_off_after_n():
    a = 0.01
    model, val_score = fit_markov([batch_of("ACGT" * 64)], [batch_of("ACGT" * 16)], max_order=3, alphas=(a,))
    assert model.order >= 1 and val_score.bits_per_nt < 0.05
    # order 1 by hand: position 0 has no context (p(A) = 64/256 smoothed); then 48 transitions seen
    # 64 times (A->C, C->G, G->T) and 15 seen 63 times (T->A)
    model.order = 1
    hand = -(math.log((64 + a) / (256 + 4 * a)) + 48 * math.log((64 + a) / (64 + 4 * a))
             + 15 * math.log((63 + a) / (63 + 4 * a)))
    assert model.score([batch_of("ACGT" * 16)]).total_nats == pytest.approx(hand, rel=1e-12)
    test = batch_of("ACNGTACG")
    log_p = model.log_likelihood(test["tokens"], test["loss_mask"])
    assert log_p[0, 2] == 0  # N is not scored
    assert log_p[0, 3] == pytest.approx(math.log(0.25), abs=1e-9)  # G right after N: order 0
    assert log_p[0, 4] > math.log(0.99)  # T after G: order 1 context


def test_vectorised_log_likelihood_matches_slow_reference():
    rng = np.random.default_rng(0)
    letters = np.array(list("ACGTN"))
    seqs = ["".join(letters[rng.choice(5, 40, p=[0.3, 0.2, 0.2, 0.2, 0.1])]) for _ in range(6)]
    model = MarkovModel(max_order=3, alphas=(0.5,))
    train = batch_of(*seqs[:4])
    model.update(train["tokens"], train["loss_mask"])
    test = batch_of(*seqs[4:])
    for order in range(4):
        got = model.log_likelihood(test["tokens"], test["loss_mask"], order=order, alpha=0.5)
        for b in range(2):
            tokens = test["tokens"][b].tolist()
            for j in range(40):
                want = reference_log_prob(model.counts, tokens, j, order, 0.5) if tokens[j] < 4 else 0.0
                assert got[b, j].item() == pytest.approx(want, abs=1e-12)


def test_selection_totals_equal_exact_scores(shared_data):
    dm = GenomeDataModule(shared_data / "hg38/hg38_chr2_1-2333275.fa.gz", window=256, batch_size=32)
    model = MarkovModel(max_order=4, alphas=(0.5,))
    for batch in dm.eval_dataloader("train", num_windows=256):
        model.update(batch["tokens"], batch["loss_mask"])
    val = list(dm.eval_dataloader("val", num_windows=32))
    chosen = model.select(val)
    for order in range(5):
        model.order = order
        assert model.score(val).total_nats >= chosen.total_nats - 1e-6  # the chosen order is the best
    model.order = chosen.order
    assert model.score(val).total_nats == pytest.approx(chosen.total_nats, rel=1e-12)


def test_chosen_order_beats_order_zero_on_real_hg38(shared_data):
    dm = GenomeDataModule(shared_data / "hg38/hg38_chr2_1-2333275.fa.gz", window=1024, batch_size=64)
    model, val_score = fit_markov(dm.eval_dataloader("train", num_windows=1024),
                                  dm.eval_dataloader("val", num_windows=64), max_order=8)
    test = list(dm.eval_dataloader("test", num_windows=64))
    chosen = model.score(test)
    model.order = 0
    zero = model.score(test)
    assert chosen.order >= 2 and chosen.num_positions == zero.num_positions > 60_000
    assert chosen.bits_per_nt < zero.bits_per_nt - 0.03
    assert 1.7 < chosen.bits_per_nt < 2.0 and 1.9 < zero.bits_per_nt < 2.0  # human DNA is near 1.9 bits/nt


def test_bad_use():
    with pytest.raises(UserError, match="between 0 and 12"):
        MarkovModel(max_order=13)
    with pytest.raises(UserError, match="no training counts"):
        MarkovModel(max_order=2).select([batch_of("ACGT")])
    with pytest.raises(ValueError, match="not A/C/G/T"):
        tokens = encode("ACNT")[None]
        MarkovModel().update(tokens, torch.ones_like(tokens, dtype=torch.bool))
