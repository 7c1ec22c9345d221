"""Hugging Face files as they exist in the wild (issue 27): tied tensors stored once (as ``save_pretrained`` and
``safetensors.torch.save_model`` write them), sharded checkpoints, float16 / bfloat16 weights, the hub's config
keys, every config.json field type-checked before anything is built (with a closed-form parameter count that
refuses absurd sizes), ``rcps`` cross-checked against the weights, and exports that write one copy per tied
tensor under the user's umask and keep dnadiff's own settings."""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict

import pytest
import torch
import torch.nn as nn

from dnadiff.errors import UserError
from dnadiff.checkpoints.sources import load_model, load_payload, read_original
from dnadiff.checkpoints.huggingface import load_original_caduceus, original_state_dict
from dnadiff.checkpoints.huggingface import (MAX_PARAMETERS, OriginalCaduceusMLM, backbone_from_config, check_config,
                                     default_config, estimate_parameters, resolve_ties)
from hf_cache import bin_bytes, reference


def write_folder(folder, config, files):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def tied_names(variant: str, n_layer: int) -> set[str]:
    """What the two writers drop for a Caduceus state dict: the LM head and each reverse Mamba's projections."""
    sub = "submodule." if variant == "ps" else ""
    head = "lm_head.lm_head.weight" if variant == "ps" else "lm_head.weight"
    return {head} | {f"caduceus.backbone.layers.{i}.mixer.{sub}mamba_rev.{p}.weight"
                     for i in range(n_layer) for p in ("in_proj", "out_proj")}


def transformers_dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The alias removal of ``transformers.PreTrainedModel.save_pretrained(safe_serialization=True)`` for a model
    without ``_tied_weights_keys`` (Caduceus' remote code declares none): tensors are grouped by storage and,
    in state-dict order, the first name of each group is kept, the others deleted (transformers'
    ``modeling_utils``; transformers itself is not installed here)."""
    groups = defaultdict(list)
    for name, tensor in state.items():
        groups[(tensor.untyped_storage().data_ptr(), tensor.device)].append(name)
    out = dict(state)
    for names in groups.values():
        for name in names[1:]:
            del out[name]
    return out


class _StateDictModule(nn.Module):
    """A module whose ``state_dict()`` is a given one (tensors sharing storage as in the original model)."""

    def __init__(self, state):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):
        return dict(self._state)


@pytest.fixture(params=["ph", "ps"])
def ref(request, shared_fixtures):
    config, state, expected = reference(shared_fixtures, request.param)
    return request.param, config, state, expected


def test_the_reference_state_dicts_share_storage_as_the_original_model_does(ref):
    variant, config, state, _ = ref
    dropped = set(state) - set(transformers_dedupe(state))
    assert dropped == tied_names(variant, config["n_layer"])


def test_files_written_by_safetensors_save_model_load_with_the_original_logits(ref, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_model

    variant, config, state, expected = ref
    save_model(_StateDictModule(state), str(tmp_path / "model.safetensors"))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        stored = set(handle.keys())
        aliases = handle.metadata()
    assert set(state) - stored == tied_names(variant, config["n_layer"])  # stored once
    assert all(aliases[name] in stored for name in tied_names(variant, config["n_layer"]))
    folder = tmp_path / "hf"
    folder.mkdir()
    (tmp_path / "model.safetensors").rename(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    loaded_config, weights = read_original(folder)
    with torch.no_grad():
        tied = load_original_caduceus(loaded_config, weights).eval()(expected["input_ids"])
        untied = load_original_caduceus(config, state).eval()(expected["input_ids"])
    assert torch.equal(tied, untied)
    assert (tied - expected["logits"]).abs().max() < 1e-4


def test_files_written_the_transformers_way_load_through_every_route(ref, tmp_path):
    from safetensors.torch import save_file

    variant, config, state, expected = ref
    stored = transformers_dedupe(state)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.clone().contiguous() for k, v in stored.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    model, _, payload = load_model(folder)
    reference_model, _, _ = load_model(write_folder(tmp_path / "untied", config,
                                                    {"pytorch_model.bin": bin_bytes(state, tmp_path)}))
    z = torch.randint(0, 7, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(z, torch.zeros(2)), reference_model(z, torch.zeros(2)))
        logits = load_original_caduceus(config, stored).eval()(expected["input_ids"])
    assert (logits - expected["logits"]).abs().max() < 1e-4


def test_only_the_ties_the_config_implies_are_resolved(ref):
    variant, config, state, _ = ref
    stored = transformers_dedupe(state)
    sub = "submodule." if variant == "ps" else ""
    # a genuinely missing tensor is still an error
    for name in (f"caduceus.backbone.layers.0.mixer.{sub}mamba_rev.A_log",
                 f"caduceus.backbone.layers.1.mixer.{sub}mamba_fwd.in_proj.weight",  # both of a tied pair gone
                 "caduceus.backbone.norm_f.weight"):
        broken = {k: v for k, v in stored.items() if k != name}
        with pytest.raises(UserError, match="does not fit its config.*missing"):
            load_original_caduceus(config, broken)
    # without bidirectional_weight_tie the reverse projections are not implied (and that config is unsupported)
    assert set(resolve_ties({**config, "bidirectional_weight_tie": False}, stored)) - set(stored) == {
        "lm_head.lm_head.weight" if variant == "ps" else "lm_head.weight"}
    # both stored but different: refused, not silently one of them
    rev = f"caduceus.backbone.layers.0.mixer.{sub}mamba_rev.in_proj.weight"
    differing = {**state, rev: state[rev] + 1}
    with pytest.raises(UserError, match="differs from its forward twin"):
        load_original_caduceus(config, differing)


def test_sharded_checkpoints_load_like_the_single_file(ref, tmp_path):
    from safetensors.torch import save_file

    variant, config, state, expected = ref
    stored = transformers_dedupe(state)
    names = list(stored)
    half = len(names) // 2
    for kind in ("safetensors", "bin"):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        weight_map = {}
        for i, part in enumerate((names[:half], names[half:])):
            shard = f"model-{i + 1:05d}-of-00002.safetensors" if kind == "safetensors" else f"pytorch_model-{i + 1:05d}-of-00002.bin"
            tensors = {k: stored[k].clone().contiguous() for k in part}
            if kind == "safetensors":
                save_file(tensors, str(folder / shard), metadata={"format": "pt"})
            else:
                torch.save(tensors, folder / shard)
            weight_map.update({k: shard for k in part})
        index = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
        (folder / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
        loaded_config, weights = read_original(folder)
        assert set(weights) == set(stored)
        with torch.no_grad():
            logits = load_original_caduceus(loaded_config, weights).eval()(expected["input_ids"])
        assert (logits - expected["logits"]).abs().max() < 1e-4
        shard0 = sorted(set(weight_map.values()))[0]
        # broken indexes: one line each
        for meta, pattern in (({"weight_map": {**weight_map, names[0]: "../elsewhere.bin"}}, "not a .* file beside it"),
                              ({"weight_map": {**weight_map, names[0]: "absent" + shard0[5:]}}, "is missing"),
                              ({"weight_map": {**weight_map, "caduceus.backbone.extra": shard0}}, "lacks caduceus.backbone.extra"),
                              ({"weights": {}}, "no weight_map")):
            (folder / index).write_text(json.dumps(meta))
            with pytest.raises(UserError, match=pattern) as err:
                read_original(folder)
            assert "\n" not in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_widened_exactly(ref, tmp_path, dtype):
    from safetensors.torch import save_file

    variant, config, state, expected = ref
    half = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in transformers_dedupe(state).items()}
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.clone().contiguous() for k, v in half.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**config, "torch_dtype": str(dtype).split(".")[1]}))
    loaded_config, weights = read_original(folder)
    widened = {k: (v.to(dtype).float() if v.is_floating_point() else v) for k, v in state.items()}
    with torch.no_grad():
        got = load_original_caduceus(loaded_config, weights).eval()(expected["input_ids"])
        want = load_original_caduceus(config, widened).eval()(expected["input_ids"])
    assert torch.equal(got, want)  # the same float32 model as widening by hand
    assert (got - expected["logits"]).abs().max() < 0.05  # and close to the float32 original
    with pytest.raises(UserError, match="torch.int8.*unquantized"):
        load_original_caduceus(config, {**state, "caduceus.backbone.norm_f.weight": torch.zeros(32, dtype=torch.int8)})


def test_the_hub_config_keys_are_read(ref):
    variant, config, state, expected = ref
    hub = {**config, "architectures": ["CaduceusForMaskedLM"], "torch_dtype": "float32", "transformers_version": "4.38.2",
           "auto_map": {"AutoConfig": "kuleshov-group/caduceus--configuration_caduceus.CaduceusConfig"},
           "_name_or_path": "kuleshov-group/caduceus"}
    with torch.no_grad():
        logits = load_original_caduceus(hub, state).eval()(expected["input_ids"])
    assert (logits - expected["logits"]).abs().max() < 1e-4


# every field of config.json, checked before anything is built
BAD_FIELDS = [
    ({"ssm_cfg": {"d_state": "16"}}, "ssm_cfg.d_state='16'"),
    ({"ssm_cfg": {"d_conv": 4.0}}, "ssm_cfg.d_conv"),
    ({"ssm_cfg": {"dt_rank": "four"}}, "ssm_cfg.dt_rank='four'"),
    ({"ssm_cfg": {"dt_rank": 0}}, "ssm_cfg.dt_rank=0"),
    ({"ssm_cfg": {"dt_min": float("nan")}}, "ssm_cfg.dt_min"),
    ({"ssm_cfg": {"bias": "false"}}, "ssm_cfg.bias='false'"),
    ({"ssm_cfg": {"d_sate": 16}}, "ssm_cfg.d_sate"),
    ({"ssm_cfg": [16, 4]}, "ssm_cfg"),
    ({"complement_map": [0, 1, 2]}, "complement_map"),
    ({"complement_map": {"7": 10, "10": 8}}, "complement_map.*own inverse"),
    ({"complement_map": {"7": 99}}, "complement_map"),
    ({"complement_map": {"x": 1}}, "complement_map"),
    ({"pad_vocab_size_multiple": 0}, "pad_vocab_size_multiple=0"),
    ({"pad_vocab_size_multiple": -8}, "pad_vocab_size_multiple=-8"),
    ({"d_model": "32"}, "d_model='32'"),
    ({"d_model": 32.0}, "d_model=32.0"),
    ({"d_model": True}, "d_model=True"),
    ({"n_layer": -1}, "n_layer=-1"),
    ({"vocab_size": None}, "vocab_size=None"),
    ({"rcps": "false"}, "rcps='false'"),
    ({"rcps": 1}, "rcps=1"),
    ({"fused_add_norm": "yes"}, "fused_add_norm"),
    ({"bidirectional_strategy": 3}, "bidirectional_strategy"),
    ({"norm_epsilon": "1e-5"}, "norm_epsilon"),
    ({"norm_epsilon": 0}, "norm_epsilon=0"),
    ({"architectures": "CaduceusForMaskedLM"}, "architectures"),
    ({"torch_dtype": 16}, "torch_dtype"),
    ({"transformers_version": 4.38}, "transformers_version"),
    ({"auto_map": ["x"]}, "auto_map"),
    ({"d_model": 2**40}, "parameters"),  # 1.6 PB today
    ({"n_layer": 10**12}, "parameters"),  # ran until the kernel killed it
    ({"vocab_size": 10**10}, "parameters"),
]


@pytest.mark.parametrize("change, pattern", BAD_FIELDS, ids=[p for _, p in BAD_FIELDS])
def test_every_config_field_is_checked_before_anything_is_built(ref, tmp_path, change, pattern):
    variant, config, state, _ = ref
    bad = {**config, **change}
    if "ssm_cfg" in change and isinstance(change["ssm_cfg"], dict):
        bad["ssm_cfg"] = {**config["ssm_cfg"], **change["ssm_cfg"]}
    with pytest.raises(UserError) as err:
        load_original_caduceus(bad, state)
    message = str(err.value)
    assert "\n" not in message and re.search(pattern, message) and ": " in message, message
    # and through the folder reader, naming the file
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(bad))
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="config.json"):
        read_original(folder)


def test_the_parameter_estimate_is_exact(ref):
    variant, config, state, _ = ref
    for cfg in (config, {**config, "d_model": 48, "n_layer": 3},
                {**config, "ssm_cfg": {"d_state": 8, "d_conv": 3, "expand": 3, "dt_rank": 5}},
                {**config, "vocab_size": 13, "pad_vocab_size_multiple": 5,
                 "complement_map": {k: v for k, v in config["complement_map"].items() if int(k) < 15}}):
        params = {p.data_ptr(): p.numel() for p in backbone_from_config(cfg).parameters()}  # distinct tensors
        assert estimate_parameters(cfg) == sum(params.values())
    assert estimate_parameters(config) == sum(v.numel() for k, v in transformers_dedupe(state).items()
                                              if not k.endswith("complement_map"))
    big = {**config, "d_model": 16384, "n_layer": 64}  # about 2^35: refused without allocating
    assert estimate_parameters(big) > MAX_PARAMETERS
    with pytest.raises(UserError, match="GiB"):
        check_config(big)


def test_rcps_must_agree_with_the_weights(shared_fixtures):
    ph_config, ph_state, _ = reference(shared_fixtures, "ph")
    ps_config, ps_state, _ = reference(shared_fixtures, "ps")
    with pytest.raises(UserError, match="rcps=true .*Caduceus-Ph layout"):
        load_original_caduceus({**ph_config, "rcps": True, "complement_map": ps_config["complement_map"]}, ph_state)
    with pytest.raises(UserError, match="rcps=false .*Caduceus-PS layout"):
        load_original_caduceus({**ps_config, "rcps": False}, ps_state)
    with pytest.raises(UserError, match="rcps='false'"):
        load_original_caduceus({**ph_config, "rcps": "false"}, ph_state)
    swapped = dict(ps_config["complement_map"], **{"7": 8, "8": 7, "9": 10, "10": 9})  # A<->C, G<->T
    with pytest.raises(UserError, match="complement_map differs from the config"):
        load_original_caduceus({**ps_config, "complement_map": swapped}, ps_state)
    mixed = {**ph_state, "lm_head.complement_map": ps_state["lm_head.complement_map"]}
    with pytest.raises(UserError, match="mixes Caduceus-PS keys"):
        load_original_caduceus(ph_config, mixed)


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_the_export_stores_tied_tensors_once_under_the_umask_and_keeps_dnadiff_settings(tmp_path, variant):
    from safetensors import safe_open

    from dnadiff.checkpoints.export import export as export_hf
    from dnadiff.models import build_model
    from dnadiff.checkpoints.format import ModelFile, save_checkpoint

    spec = {"name": "caduceus", "vocab_size": 7, "num_outputs": 4, "d_model": 24, "n_layer": 2, "variant": variant,
            "conjoin": variant == "ph"}
    torch.manual_seed(5)
    model = build_model(spec).eval()
    data = {"modality": "dna", "window": 512, "class_names": [], "batch_size": 8}
    diffusion = {"vocab_size": 4, "schedule": "loglinear", "eps": 0.003}
    save_checkpoint(tmp_path / "model.pt", ModelFile(spec, diffusion, model.state_dict(), data))
    old = os.umask(0o027)
    try:
        out, _ = export_hf(tmp_path / "model.pt", tmp_path / "hf")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o750
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {"config.json": 0o640, "model.safetensors": 0o640}
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        stored = set(handle.keys())
    config, _ = read_original(out)
    full = original_state_dict(OriginalCaduceusMLM(backbone_from_config(config)))
    assert stored == set(full) - tied_names(variant, 2)  # what save_pretrained writes
    # reloading gives back the window, eps and inference settings, and the same model
    payload = load_payload(out)
    assert payload.data.window == 512 and payload.data.batch_size == 8
    assert payload.diffusion["eps"] == 0.003 and payload.model["conjoin"] == (variant == "ph")
    again, _, _ = load_model(out)
    z = torch.randint(0, 7, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (again(z, torch.zeros(2)) - model(z, torch.zeros(2))).abs().max() < 1e-5
    # a damaged settings entry is one line
    bad = json.loads((out / "config.json").read_text())
    bad["dnadiff"]["data"]["window"] = "512"
    (out / "config.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="dnadiff.data.window='512'"):
        load_payload(out)


def test_an_export_killed_midway_leaves_a_temporary_that_the_next_export_removes(tmp_path, shared_fixtures):
    from dnadiff.atomic import TEMP_PATTERN, _host
    from dnadiff.checkpoints.export import export as export_hf

    config, state, _ = reference(shared_fixtures, "ph")
    folder = write_folder(tmp_path / "orig", config, {"pytorch_model.bin": bin_bytes(state, tmp_path)})
    dead = 2**22 + 12345  # above the default pid_max: no live process has it
    stale = tmp_path / f".hf.dnadiff-{_host()}-{dead}-abcd1234.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    mine = tmp_path / ".hf.notes.tmp"  # not dnadiff's pattern
    mine.write_text("keep")
    assert TEMP_PATTERN.match(stale.name) and not TEMP_PATTERN.match(mine.name)
    export_hf(folder, tmp_path / "hf")
    assert not stale.exists() and mine.read_text() == "keep"
