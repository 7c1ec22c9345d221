"""Sequence classification head: pooling that ignores padding, RC-invariant read-outs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dnadiff.data.tokenizer import PAD, encode_batch
from dnadiff.errors import UserError
from dnadiff.models import CaduceusDenoiser
from dnadiff.models.heads import SequenceClassifier, pool
from dnadiff.rc import reverse_complement, reverse_complement_valid


def test_pooling_by_hand():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).view(2, 4, 2)
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert torch.equal(pool(hidden, valid, "mean"), torch.tensor([[2.0, 3.0], [9.0, 10.0]]))
    assert torch.equal(pool(hidden, valid, "first"), torch.tensor([[0.0, 1.0], [8.0, 9.0]]))
    assert torch.equal(pool(hidden, valid, "last"), torch.tensor([[4.0, 5.0], [10.0, 11.0]]))


def test_reverse_complement_of_the_valid_prefix():
    ids, valid = encode_batch(["ACGGT", "AAC"])
    rc = reverse_complement_valid(ids, valid)
    expected, _ = encode_batch(["ACCGT", "GTT"])
    assert torch.equal(rc, expected)
    assert (rc[1, 3:] == PAD).all()


class TokenFeatures(nn.Module):
    """Features that depend on each position's token only (so padding effects are visible)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 5)

    def features(self, tokens):
        return self.embed(tokens)


def test_mean_pooling_ignores_padding():
    head = SequenceClassifier(TokenFeatures(), num_classes=3, pooling="mean")
    ids, valid = encode_batch(["ACGTAC", "ACG"], length=8)
    short, short_valid = encode_batch(["ACG"])
    assert torch.allclose(head(ids, valid)[1], head(short, short_valid)[0], atol=1e-6)
    ids2 = ids.clone()
    ids2[1, 3:] = 0  # other tokens in the padded region, still marked invalid
    assert torch.allclose(head(ids2, valid), head(ids, valid), atol=1e-6)


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
def test_ps_classifier_is_rc_invariant(pooling):
    backbone = randomize(CaduceusDenoiser(d_model=16, n_layer=2, variant="ps"))
    head = randomize(SequenceClassifier(backbone, num_classes=2, pooling=pooling)).eval()
    x = torch.randint(0, 5, (3, 30))
    valid = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        out, out_rc = head(x, valid), head(reverse_complement(x), valid)
    assert (out - out_rc).abs().max() < 1e-5
    assert out.shape == (3, 2)


@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
def test_conjoined_ph_classifier_is_rc_invariant_with_padding(pooling):
    backbone = randomize(CaduceusDenoiser(d_model=16, n_layer=2, variant="ph"))
    ids, valid = encode_batch(["ACGTTGCAAGGCTTA", "GGCATNACG", "TTTACG"])
    head = randomize(SequenceClassifier(backbone, num_classes=2, pooling=pooling))
    rc_ids = reverse_complement_valid(ids, valid)
    with torch.no_grad():
        train_gap = (head(ids, valid) - head(rc_ids, valid)).abs().max()  # default: conjoined in eval only
        head.eval()
        out, out_rc = head(ids, valid), head(rc_ids, valid)
        head.conjoin = False
        plain_gap = (head(ids, valid) - head(rc_ids, valid)).abs().max()
    assert train_gap > 1e-4 and plain_gap > 1e-4
    assert (out - out_rc).abs().max() < 1e-5


def test_unknown_pooling_is_a_user_error():
    with pytest.raises(UserError, match="unknown pooling"):
        SequenceClassifier(TokenFeatures(), num_classes=2, pooling="max")
