"""Original Caduceus checkpoints (Hugging Face CaduceusForMaskedLM): load, match the reference outputs
of the original code, save back, convert into dnadiff's vocabulary."""
from __future__ import annotations

import json

import pytest
import torch

from dnadiff.data.tokenizer import CADUCEUS_IDS, encode, to_caduceus_ids
from dnadiff.rc import COMPLEMENT
from dnadiff.errors import UserError
from dnadiff.checkpoints.huggingface import denoiser_from_original, load_original_caduceus, original_state_dict


def load_reference(shared_fixtures, variant):
    folder = shared_fixtures / "caduceus_reference"
    config = json.loads((folder / f"caduceus_{variant}.config.json").read_text())
    state = torch.load(folder / f"caduceus_{variant}.state_dict.pt", weights_only=True)
    expected = torch.load(folder / f"caduceus_{variant}.expected.pt", weights_only=True)
    return variant, config, state, expected


@pytest.fixture(params=["ph", "ps"])
def reference(request, shared_fixtures):
    return load_reference(shared_fixtures, request.param)


def test_logits_and_hidden_states_match_the_original_code(reference):
    variant, config, state, expected = reference
    model = load_original_caduceus(config, state).eval()
    with torch.no_grad():
        logits = model(expected["input_ids"])
        hidden = model.backbone(expected["input_ids"])
    assert logits.shape == expected["logits"].shape == (3, 64, 16)
    assert (logits - expected["logits"]).abs().max() < 1e-4
    assert (hidden - expected["last_hidden_state"]).abs().max() < 1e-4
    assert model.backbone.variant == variant


def test_ps_needs_the_fused_add_norm_half_swap(shared_fixtures):
    _, config, state, expected = load_reference(shared_fixtures, "ps")
    model = load_original_caduceus(config, state).eval()
    model.backbone.swap_halves = False  # the non-fused RCPSAddNormWrapper order
    with torch.no_grad():
        assert (model(expected["input_ids"]) - expected["logits"]).abs().max() > 1e-2


def test_save_back_gives_the_original_state_dict(reference):
    _, config, state, _ = reference
    saved = original_state_dict(load_original_caduceus(config, state))
    assert set(saved) == set(state)
    for key, value in state.items():
        assert torch.equal(saved[key], value), key
    again = load_original_caduceus(config, saved)
    ids = torch.randint(7, 12, (2, 20))
    with torch.no_grad():
        assert torch.equal(again(ids), load_original_caduceus(config, state)(ids))


def test_converted_checkpoint_predicts_the_same_bases_in_dnadiff_ids(reference):
    variant, config, state, _ = reference
    original = load_original_caduceus(config, state).eval()
    denoiser = denoiser_from_original(config, state).eval()
    ours = encode("ACGTNNACGTTGCA" * 4).unsqueeze(0)
    ours[0, 5] = 4  # MASK
    with torch.no_grad():
        expected = original(to_caduceus_ids(ours))[..., [CADUCEUS_IDS[k] for k in range(4)]]
        got = denoiser(ours, torch.zeros(1))
    assert got.shape == (1, 56, 4)
    assert (got - expected).abs().max() < 1e-5
    assert denoiser.backbone.variant == variant
    assert torch.equal(denoiser.complement, torch.tensor(COMPLEMENT))


def test_mismatched_checkpoints_are_user_errors(reference):
    _, config, state, _ = reference
    with pytest.raises(UserError, match="does not fit its config"):
        load_original_caduceus({**config, "n_layer": 3}, state)
    with pytest.raises(UserError, match="unsupported Caduceus config"):
        load_original_caduceus({**config, "bidirectional_strategy": "ew_multiply"}, state)
    untied = dict(state)
    head = "lm_head.lm_head.weight" if "lm_head.lm_head.weight" in state else "lm_head.weight"
    untied[head] = state[head] + 1
    with pytest.raises(UserError, match="tied"):
        load_original_caduceus(config, untied)
