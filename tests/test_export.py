"""`dnadiff export --format hf`: the original Caduceus format back (keys, tied head, complement map, config
fields), checked by re-importing against the original code's reference outputs and on a second, differently
sized original-format model; atomic, never overwriting."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dnadiff.cli import main
from dnadiff.checkpoints.export import export as export_hf
from dnadiff.data.tokenizer import CADUCEUS_IDS
from dnadiff.errors import UserError
from dnadiff.checkpoints.sources import load_model, load_payload, read_original
from dnadiff.checkpoints.huggingface import load_original_caduceus, original_state_dict
from dnadiff.checkpoints.huggingface import OriginalCaduceusMLM, backbone_from_config, default_config, resolve_ties
from dnadiff.checkpoints.format import save_checkpoint
from hf_cache import bin_bytes, original_files, reference

BASES = [CADUCEUS_IDS[k] for k in range(4)]


def write_folder(folder, files):
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_original_to_model_pt_to_hf_gives_back_the_original(shared_fixtures, tmp_path, variant, capsys):
    config, state, expected = reference(shared_fixtures, variant)
    folder = write_folder(tmp_path / "orig", original_files(config, state, "bin", tmp_path))
    save_checkpoint(tmp_path / "model.pt", load_payload(folder))  # dnadiff's own format in between
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(tmp_path / "model.pt"), "--format", "hf", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"exported Caduceus-{variant.upper() if variant == 'ps' else 'Ph'}")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    exported_config, stored = read_original(out)
    settings = exported_config.pop("dnadiff")  # dnadiff's own settings, ignored by the original code
    assert settings["data"]["window"] == 1024 and settings["diffusion"]["schedule"] == "loglinear"
    assert exported_config == config  # every field, the complement map included
    # one copy per tied tensor, as save_pretrained writes: the head and the reverse projections are not stored
    head = "lm_head.lm_head.weight" if variant == "ps" else "lm_head.weight"
    assert set(state) - set(stored) == {head} | {k for k in state if "mamba_rev." in k and k.endswith("proj.weight")
                                                 and ("in_proj" in k or "out_proj" in k)}
    exported = resolve_ties(config, stored)
    assert set(exported) == set(state)  # original key names (and complement buffers for PS)
    for key, value in state.items():
        assert torch.equal(exported[key], value), key
    with torch.no_grad():
        logits = load_original_caduceus(exported_config, exported).eval()(expected["input_ids"])
    assert (logits - expected["logits"]).abs().max() < 1e-4  # the original code's outputs, all 16 columns


def random_original(d_model: int, n_layer: int, variant: str, seed: int) -> tuple[dict, dict]:
    """A second original-format model (another size, random weights with norms, D and biases moved)."""
    torch.manual_seed(seed)
    config = default_config(d_model, n_layer, variant, d_state=8, d_conv=3, expand=2)
    model = OriginalCaduceusMLM(backbone_from_config(config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D", "bias")):
                p.add_(0.3 * torch.randn_like(p))
    return config, original_state_dict(model)


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_a_differently_sized_original_model_round_trips(tmp_path, variant):
    config, state = random_original(48, 3, variant, seed=7)
    folder = write_folder(tmp_path / "orig", {"config.json": json.dumps(config).encode(),
                                              "pytorch_model.bin": bin_bytes(state, tmp_path)})
    out, written = export_hf(folder, tmp_path / "hf")
    exported_config, exported = read_original(out)
    exported = resolve_ties(exported_config, exported)
    assert exported_config.pop("dnadiff") == written.pop("dnadiff")
    assert exported_config == config == written and set(exported) == set(state)
    ids = torch.randint(0, 16, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = load_original_caduceus(config, state).eval()(ids)
        got = load_original_caduceus(exported_config, exported).eval()(ids)
    assert torch.equal(got, want)
    # and dnadiff reads the export back into the same denoiser
    first, _, _ = load_model(folder)
    again, _, _ = load_model(out)
    z = torch.randint(0, 7, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(first(z, torch.zeros(2)), again(z, torch.zeros(2)))


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_a_dnadiff_model_exports_with_the_fixture_config_fields(shared_fixtures, tmp_path, variant):
    """A model trained by dnadiff alone (no original rows): the config has exactly the fixture's keys and values
    (but the size), the unmapped rows are zero, and A/C/G/T/N/[MASK]/[PAD] rows are dnadiff's."""
    from dnadiff.checkpoints.sources import ORIGINAL_DATA, ORIGINAL_DIFFUSION
    from dnadiff.models import build_model
    from dnadiff.checkpoints.format import ModelFile

    fixture_config, _, _ = reference(shared_fixtures, variant)
    spec = {"name": "caduceus", "vocab_size": 7, "num_outputs": 4, "d_model": 24, "n_layer": 2, "variant": variant}
    torch.manual_seed(3)
    model = build_model(spec).eval()
    save_checkpoint(tmp_path / "model.pt", ModelFile(spec, ORIGINAL_DIFFUSION, model.state_dict(), ORIGINAL_DATA))
    out, _ = export_hf(tmp_path / "model.pt", tmp_path / "hf")
    config, state = read_original(out)
    assert config.pop("dnadiff")["data"] == ORIGINAL_DATA.to_dict()
    assert list(config) == list(fixture_config)
    size = ("d_model", "n_layer")
    assert {k: v for k, v in config.items() if k not in size} == {k: v for k, v in fixture_config.items() if k not in size}
    assert (config["d_model"], config["n_layer"]) == (24, 2)
    original = load_original_caduceus(config, state).eval()
    emb = original.backbone.embedding.weight
    assert emb.shape == (16, 24) and emb[[0, 1, 2, 5, 6, 12, 13, 14, 15]].abs().sum() == 0
    z = torch.randint(0, 7, (2, 30), generator=torch.Generator().manual_seed(2))
    from dnadiff.data.tokenizer import to_caduceus_ids

    with torch.no_grad():
        assert (original(to_caduceus_ids(z))[..., BASES] - model(z, torch.zeros(2))).abs().max() < 1e-5


def test_export_refuses_to_overwrite_and_what_it_cannot_hold(shared_fixtures, tmp_path, capsys, monkeypatch):
    config, state, _ = reference(shared_fixtures, "ph")
    folder = write_folder(tmp_path / "orig", original_files(config, state, "safetensors", tmp_path))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["export", "--checkpoint", str(folder), "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists and is not empty" in err[0]
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"
    # a failure while writing leaves nothing behind
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save", broken)
    with pytest.raises(UserError, match="new.*disk is full"):
        export_hf(folder, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig", "taken"]
    monkeypatch.undo()
    # what the original format cannot hold
    from dnadiff.models import build_model
    from dnadiff.checkpoints.format import ModelFile

    spec = {"name": "caduceus", "d_model": 16, "n_layer": 1, "time_conditioning": True}
    save_checkpoint(tmp_path / "t.pt", ModelFile(spec, {"vocab_size": 4}, build_model(spec).state_dict(),
                                                     {"modality": "dna", "window": 64}))
    with pytest.raises(UserError, match="time- or class-conditioned"):
        export_hf(tmp_path / "t.pt", tmp_path / "t_hf")
    spec = {"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 16, "n_layer": 1, "n_head": 2,
            "max_len": 32}
    save_checkpoint(tmp_path / "x.pt", ModelFile(spec, {"vocab_size": 4}, build_model(spec).state_dict(),
                                                     {"modality": "dna", "window": 32}))
    with pytest.raises(UserError, match="only Caduceus models"):
        export_hf(tmp_path / "x.pt", tmp_path / "x_hf")
    assert not (tmp_path / "t_hf").exists() and not (tmp_path / "x_hf").exists()


def test_code_repo_gives_an_auto_map_for_trust_remote_code(shared_fixtures, tmp_path):
    config, state, _ = reference(shared_fixtures, "ps")
    folder = write_folder(tmp_path / "orig", original_files(config, state, "safetensors", tmp_path))
    repo = "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16"
    _, written = export_hf(folder, tmp_path / "hf", code_repo=repo)
    assert written["auto_map"]["AutoModelForMaskedLM"] == f"{repo}--modeling_caduceus.CaduceusForMaskedLM"
    assert set(written) - set(config) == {"auto_map", "dnadiff"} and math.isclose(written["norm_epsilon"], 1e-5)
