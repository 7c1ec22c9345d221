"""model.pt files written before issue 13 (tests/data/old_*.pt, made by tests/data/make_old_models.py
at commit 43494c5) still load with today's code and give exactly the logits they gave then."""
from pathlib import Path

import pytest
import torch

from dnadiff.checkpoints.sources import load_model

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["old_caduceus_ph.pt", "old_caduceus_ps.pt", "old_transformer_genmd4.pt"])
def test_old_model_file_loads_with_same_outputs(name):
    model, process, payload = load_model(DATA / name)
    ref = payload.extra["reference"]
    with torch.no_grad():
        logits = model(ref["z"], ref["t"])
    torch.testing.assert_close(logits, ref["logits"], rtol=0, atol=1e-6)
    assert process.vocab_size == 4 and process.mask_id == 4


def test_old_genmd4_file_keeps_its_learned_exponents():
    _, process, payload = load_model(DATA / "old_transformer_genmd4.pt")
    raw = payload.process_state["raw_w"]
    torch.testing.assert_close(process.w.detach(), torch.nn.functional.softplus(raw))
    # made from init_w [0.5, 1, 1.5, 2] with raw_w shifted by 0.1: not the initial exponents any more
    init = torch.tensor([0.5, 1.0, 1.5, 2.0])
    torch.testing.assert_close(process.w.detach(), torch.nn.functional.softplus(torch.log(torch.expm1(init)) + 0.1))
