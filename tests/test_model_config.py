"""Typed model configs (dnadiff.models.config): defaults and presets in one place, checked fields,
legacy keys, what model.pt stores, and what build_model does with them."""
from pathlib import Path

import pytest
import torch
import yaml

from dnadiff.errors import ConfigError, UserError
from dnadiff.models import CaduceusDenoiser, build_model
from dnadiff.models.caduceus import CaduceusBlock
from dnadiff.models.config import CaduceusConfig, TransformerConfig, model_config

REPO = Path(__file__).resolve().parents[1]


def test_model_yaml_presets_are_exactly_the_dataclass_presets():
    paths = sorted((REPO / "configs" / "model").glob("caduceus_*.yaml"))
    assert len(paths) == 6
    for path in paths:
        spec = yaml.safe_load(path.read_text())
        _, size, variant = path.stem.split("_")
        assert model_config(spec) == CaduceusConfig.preset(size, variant=variant), path.name


@pytest.mark.parametrize("cls, fields, key, words", [
    (CaduceusConfig, {"d_model": 0}, "d_model", "integer >= 1"),
    (CaduceusConfig, {"n_layer": 2.5}, "n_layer", "integer >= 1"),
    (CaduceusConfig, {"num_outputs": 9}, "num_outputs", "from 1 to 7"),
    (CaduceusConfig, {"variant": "pq"}, "variant", "ph, ps"),
    (CaduceusConfig, {"kernels": "fast"}, "kernels", "auto"),
    (CaduceusConfig, {"conjoin": "yes"}, "conjoin", "true or false"),
    (CaduceusConfig, {"complement_map": [1, 2, 3, 0, 4, 5, 6]}, "complement_map", "its own inverse"),
    (CaduceusConfig, {"d_modle": 8}, "d_modle", "the keys are"),
    (TransformerConfig, {"embed_size": 7, "num_outputs": 4, "n_head": 3, "d_model": 32}, "d_model", "heads of even size"),
    (TransformerConfig, {"embed_size": 4, "num_outputs": 4}, "embed_size", "must exceed"),
    (TransformerConfig, {"embed_size": 7, "num_outputs": 4, "dropout": 1.5}, "dropout", "[0, 1)"),
    (TransformerConfig, {"num_outputs": 4}, "embed_size", "needs"),
])
def test_bad_fields_name_the_key_and_what_is_allowed(cls, fields, key, words):
    with pytest.raises(ConfigError) as err:
        cls(**fields)
    assert key in str(err.value) and words in str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)  # one line on the CLI


def test_legacy_keys_are_read_and_must_agree():
    assert CaduceusConfig(vocab_size=7, rc_augment=True) == CaduceusConfig(embed_size=7, rc_aug=True)
    assert TransformerConfig(vocab_size=9, num_outputs=4).embed_size == 9
    assert CaduceusConfig(vocab_size=7, embed_size=7).embed_size == 7
    with pytest.raises(ConfigError, match="disagree"):
        CaduceusConfig(vocab_size=8, embed_size=7)
    assert CaduceusConfig(name="caduceus", d_model=8).d_model == 8  # a whole model section, name included
    with pytest.raises(ConfigError, match="model.name='transformer'"):
        CaduceusConfig(name="transformer")


def test_spec_round_trip_and_presets_own_the_sizes():
    for config in (CaduceusConfig.preset("demo", variant="ps", num_classes=3), TransformerConfig(embed_size=29, num_outputs=27)):
        spec = config.to_spec()
        assert "vocab_size" not in spec and spec["embed_size"] == config.embed_size
        model = build_model(spec)
        assert model.config == config and model_config(spec) == config
    assert CaduceusConfig() == CaduceusConfig.preset("470k")  # the default model is the 470k preset
    with pytest.raises(ConfigError, match="unknown Caduceus size"):
        CaduceusConfig.preset("1b")


def test_build_model_no_longer_hides_a_constructors_type_error(monkeypatch):
    def broken(self, *args, **kwargs):
        raise TypeError("a bug inside the constructor")

    monkeypatch.setattr("dnadiff.models.caduceus.CaduceusBackbone.__init__", broken)
    with pytest.raises(TypeError, match="a bug inside the constructor"):
        build_model({"name": "caduceus", "d_model": 8, "n_layer": 1})


def test_model_pt_stores_the_typed_config():
    from dnadiff.training.diffusion_module import DiffusionModule

    module = DiffusionModule({"name": "caduceus", "d_model": 8, "n_layer": 1, "vocab_size": 7},
                             {"vocab_size": 4, "schedule": "linear"}, ema_decay=0)
    payload = module.export_payload()
    assert payload.model == CaduceusConfig(d_model=8, n_layer=1).to_spec()
    assert build_model(payload.model).config == module.model.config


def test_caduceus_block_is_a_pre_norm_residual_block():
    torch.manual_seed(0)
    block = CaduceusBlock(8, 1e-5, d_state=4)
    hidden, residual = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out, new_residual = block(hidden, residual)
    torch.testing.assert_close(new_residual, hidden + residual)
    torch.testing.assert_close(out, block.mixer(block.norm(hidden + residual)))
    first, first_residual = block(hidden)  # the first block: no residual yet
    torch.testing.assert_close(first_residual, hidden)
    torch.testing.assert_close(first, block.mixer(block.norm(hidden)))


def test_both_denoisers_share_the_conditioning_block():
    from dnadiff.models.conditioning import TimeEmbedding
    from dnadiff.models.transformer import DiffusionTransformer

    cad = CaduceusDenoiser(d_model=8, n_layer=1, time_conditioning=True, num_classes=2)
    tra = DiffusionTransformer(embed_size=7, num_outputs=4, d_model=8, n_layer=1, n_head=2, time_conditioning=True,
                               num_classes=2)
    for model, freqs in ((cad, 64), (tra, 256)):
        assert isinstance(model.time_embed, TimeEmbedding) and model.time_embed.num_frequencies == freqs
        t = torch.tensor([0.0, 0.5])
        null = model.conditioning(t, None)  # no labels: the null label (id num_classes)
        torch.testing.assert_close(null, model.time_embed(t) + model.label_embed.weight[2].expand(2, -1))
        torch.testing.assert_close(model.conditioning(t, torch.tensor([0, 1])),
                                   model.time_embed(t) + model.label_embed.weight[:2])
