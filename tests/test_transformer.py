"""DiffusionTransformer: exact attention and rotary arithmetic, bidirectionality, conditioning, the denoiser contract."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dnadiff.models.transformer import DiffusionTransformer, SelfAttention, apply_rotary, rotary_tables


def _randomize(model: nn.Module) -> nn.Module:
    """Give every zero-initialised parameter (head, adaLN) random values so that all paths matter."""
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.2)
    return model


def tiny(**kwargs) -> DiffusionTransformer:
    spec = dict(vocab_size=7, num_outputs=4, d_model=32, n_layer=2, n_head=4, max_len=64)
    spec.update(kwargs)
    return DiffusionTransformer(**spec).eval()


def test_untrained_model_predicts_uniform_and_has_denoiser_shapes():
    model = tiny()
    z = torch.randint(0, 7, (3, 20))
    logits = model(z, torch.rand(3))
    assert logits.shape == (3, 20, 4)
    assert torch.equal(logits, torch.zeros_like(logits))  # zero head -> log-softmax = -log 4 everywhere
    assert model.time_conditioned is False


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rotary_tables(40, 8)
    q, k = torch.randn(8), torch.randn(8)
    rotated = lambda v, pos: apply_rotary(v.view(1, 1, 1, 8), cos[pos : pos + 1], sin[pos : pos + 1]).view(8)
    for m, n in [(3, 1), (12, 10), (39, 37)]:  # all offsets 2
        assert torch.allclose(rotated(q, m) @ rotated(k, n), rotated(q, 2) @ rotated(k, 0), atol=1e-5)
    assert torch.allclose(rotated(q, 17).norm(), q.norm(), atol=1e-5)  # a rotation keeps the norm
    assert torch.equal(rotated(q, 0), q)  # position 0 is the identity


def test_attention_matches_a_hand_written_softmax_attention():
    torch.manual_seed(1)
    attn = SelfAttention(d_model=16, n_head=2, dropout=0.0)
    x = torch.randn(2, 5, 16)
    cos, sin = rotary_tables(5, 8)
    q, k, v = attn.qkv(x).split(16, dim=-1)
    heads = lambda a: a.view(2, 5, 2, 8).transpose(1, 2)
    q, k, v = apply_rotary(heads(q), cos, sin), apply_rotary(heads(k), cos, sin), heads(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)  # no causal mask
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(attn(x, cos, sin), expected, atol=1e-5)


def test_every_position_sees_both_directions_and_positions_matter():
    model = _randomize(tiny())
    z = torch.randint(0, 4, (1, 12))
    out = model(z, torch.zeros(1))
    last_changed, first_changed = z.clone(), z.clone()
    last_changed[0, -1] = (z[0, -1] + 1) % 4
    first_changed[0, 0] = (z[0, 0] + 1) % 4
    assert not torch.allclose(model(last_changed, torch.zeros(1))[0, 0], out[0, 0])  # left sees right
    assert not torch.allclose(model(first_changed, torch.zeros(1))[0, -1], out[0, -1])  # right sees left
    # without positions attention is permutation-equivariant; rotary positions break that
    flipped = model(z.flip(1), torch.zeros(1)).flip(1)
    assert not torch.allclose(flipped, out, atol=1e-4)


def test_time_conditioning_uses_t_and_unconditioned_model_ignores_it():
    z = torch.randint(0, 5, (2, 10))
    plain = _randomize(tiny())
    assert torch.equal(plain(z, torch.tensor([0.1, 0.2])), plain(z, torch.tensor([0.9, 0.7])))
    timed = _randomize(tiny(time_conditioning=True))
    assert timed.time_conditioned is True
    assert not torch.allclose(timed(z, torch.tensor([0.1, 0.2])), timed(z, torch.tensor([0.9, 0.7])))


def test_conditioned_blocks_start_as_identity():
    model = tiny(time_conditioning=True, num_classes=3)
    z = torch.randint(0, 5, (2, 9))
    hidden = model._hidden(z, torch.rand(2), torch.tensor([0, 2]))
    expected = nn.functional.layer_norm(model.embed(z), (32,))  # zero adaLN: every block adds 0
    assert torch.allclose(hidden, expected, atol=1e-5)


def test_labels_change_output_and_missing_labels_mean_the_null_label():
    model = _randomize(tiny(num_classes=3))
    z = torch.randint(0, 5, (2, 10))
    t = torch.rand(2)
    assert torch.equal(model(z, t), model(z, t, labels=torch.tensor([3, 3])))
    assert not torch.allclose(model(z, t, labels=torch.tensor([0, 0])), model(z, t, labels=torch.tensor([1, 1])))


def test_features_are_the_final_normed_hidden_states_of_clean_tokens():
    model = _randomize(tiny(time_conditioning=True, num_classes=2))
    z = torch.randint(0, 4, (3, 16))
    feats = model.features(z)
    assert feats.shape == (3, 16, 32)
    assert torch.allclose(model.head(feats), model(z, torch.zeros(3), labels=torch.full((3,), 2)), atol=1e-6)


def test_gradients_reach_every_parameter():
    model = tiny(time_conditioning=True, num_classes=2).train()
    z = torch.randint(0, 5, (2, 8))
    _randomize(model)
    model(z, torch.rand(2), labels=torch.tensor([0, 1])).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(vocab_size=4, num_outputs=4), "must exceed"), (dict(d_model=30, n_head=4), "heads of even size")],
)
def test_invalid_shapes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="max_len"):
        tiny(max_len=8)(torch.zeros(1, 9, dtype=torch.long), torch.zeros(1))


def test_runs_in_bfloat16_weights_and_under_autocast():
    model = _randomize(tiny(time_conditioning=True, num_classes=2))
    z = torch.randint(0, 5, (2, 12))
    t = torch.rand(2)
    reference = model(z, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(z, t)
    low = model.to(torch.bfloat16)(z, t)
    assert mixed.dtype == low.dtype == torch.bfloat16
    assert torch.allclose(mixed.float(), reference, atol=0.1) and torch.allclose(low.float(), reference, atol=0.15)
