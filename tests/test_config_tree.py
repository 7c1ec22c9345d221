"""The one config tree: every section typed by a dataclass of Keys, one checker, unknown keys refused everywhere;
the diffusion section typed by the schedule's own parameters; the CLI's sampling options and the library's
checks read the same keys; the RC policy derived from the variant in one place."""
from __future__ import annotations

import inspect

import pytest

from dnadiff.config import (DEFAULTS, DIFFUSION_KEYS, SECTIONS, DataConfig, FinetuneConfig, OptimConfig, SampleConfig,
                            TrainConfig, check_diffusion, diffusion_keys, load_config)
from dnadiff.diffusion.schedules import SCHEDULES
from dnadiff.errors import ConfigError, UserError
from dnadiff.keys import Key, check_section, keys_of
from dnadiff.models.config import CaduceusConfig, TransformerConfig
from dnadiff.rc import rc_policy


def test_each_section_states_its_defaults_once_and_checks_on_construction():
    assert DEFAULTS["optim"] == OptimConfig().to_dict() and OptimConfig().lr == 2e-3
    assert DEFAULTS["train"]["max_steps"] == TrainConfig().max_steps == 1000
    assert DataConfig(window="64").window == 64  # converted like a config value
    with pytest.raises(ConfigError, match=r"^optim.lr=0 is not allowed: use a number in \(0, 10\]$"):
        OptimConfig(lr=0)
    with pytest.raises(ConfigError, match=r"^unknown config key 'train.max_step': valid keys here are "):
        TrainConfig.from_dict({"max_step": 3})
    for cls in (*SECTIONS.values(), FinetuneConfig, SampleConfig):  # every field is a typed Key with its default
        for name, key in cls.keys().items():
            assert getattr(cls(), name) == key.default, (cls.__name__, name)


def test_model_configs_use_the_same_checker():
    keys = keys_of(CaduceusConfig)
    assert keys["d_model"].allowed() == "an integer >= 1" and keys["variant"].choices == ("ph", "ps")
    with pytest.raises(ConfigError, match=r"^model.d_model=0 is not allowed: use an integer >= 1$"):
        CaduceusConfig(d_model=0)
    with pytest.raises(ConfigError, match=r"^model.dropout=1.5 is not allowed: use a number in \[0, 1\)$"):
        TransformerConfig(embed_size=7, num_outputs=4, dropout=1.5)
    assert CaduceusConfig(d_model="8").d_model == 8


def test_the_diffusion_keys_are_the_schedules_own_parameters():
    for name, cls in SCHEDULES.items():
        own = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert set(diffusion_keys(name)) == set(DIFFUSION_KEYS) | set(own)
    assert diffusion_keys("loglinear")["eps"].default == 1e-3  # read off LogLinearSchedule(eps=1e-3)
    assert set(diffusion_keys("genmd4")) == {"schedule", "init_w"}
    assert check_diffusion({"schedule": "polynomial", "w": "3"}) == {"schedule": "polynomial", "w": 3.0}
    assert check_diffusion({"schedule": "loglinear"}) == {"schedule": "loglinear"}  # no defaults filled in
    assert check_diffusion({"schedule": "genmd4", "init_w": [0.5, "2"]}) == {"schedule": "genmd4", "init_w": [0.5, 2.0]}
    with pytest.raises(ConfigError, match=r"^diffusion.init_w=-1 is not allowed"):
        check_diffusion({"schedule": "genmd4", "init_w": [1.0, -1]})
    with pytest.raises(ConfigError, match="unknown config key 'diffusion.init_w'"):
        check_diffusion({"schedule": "linear", "init_w": [1.0]})


@pytest.mark.parametrize("override, words", [
    ("diffusion.epsilon=1e-3", "unknown config key 'diffusion.epsilon': valid keys here are clip, eps, num_steps, schedule"),
    ("diffusion.eps=2", "need 0 <= eps < 1"),
    ("diffusion.eps=abc", "diffusion.eps=abc is not allowed: use a number"),
    ("diffusion.num_steps=0", "diffusion.num_steps=0 is not allowed: use an integer >= 1 or null"),
    ("diffusion.schedule=banana", "diffusion.schedule=banana is not allowed: use one of linear, cosine"),
])
def test_a_bad_diffusion_key_is_refused_at_load_time(override, words):
    with pytest.raises(UserError) as err:
        load_config("demo", [override])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_schedule_switched_on_the_command_line_drops_the_files_parameters(tmp_path):
    cfg = load_config("demo", ["diffusion.schedule=genmd4"])  # demo.yaml says loglinear with eps
    assert cfg["diffusion"] == {"schedule": "genmd4"}
    path = tmp_path / "c.yaml"
    path.write_text("diffusion: {schedule: genmd4, eps: 1.0e-3}\n")  # a file that mixes them is refused
    with pytest.raises(ConfigError, match="unknown config key 'diffusion.eps'"):
        load_config(str(path))


def test_finetune_yaml_keys_are_the_tree_section(tmp_path):
    from dnadiff.finetuning.trainer import load_finetune_config

    (tmp_path / "t.yaml").write_text("lr: 2e-3\nepochs: 3\n")
    config = load_finetune_config("t", tmp_path)
    assert (config.lr, config.epochs, config.weight_decay) == (2e-3, 3, FinetuneConfig().weight_decay)
    (tmp_path / "u.yaml").write_text("lr: 2e-3\nepoch: 3\n")
    with pytest.raises(ConfigError, match="unknown fine-tuning key 'epoch'"):
        load_finetune_config("u", tmp_path)
    (tmp_path / "v.yaml").write_text("pooling: max\n")
    with pytest.raises(ConfigError, match=r"^finetune.pooling=max is not allowed: use one of mean, first, last$"):
        load_finetune_config("v", tmp_path)


def test_sample_options_of_the_cli_are_the_tree_keys():
    import argparse

    from dnadiff.commands.sample import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    for name, key in SampleConfig.keys().items():
        assert actions[name].default == key.default, name
        if key.kind == "choice":
            assert tuple(actions[name].choices) == key.choices, name
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoint", "x", "--num", "1", "--out", "o", "--temperature", "0"])


def test_check_section_fills_defaults_or_keeps_the_given_keys():
    keys = {"a": Key("int", 1, lo=0), "b": Key("choice", "x", choices=("x", "y"))}
    assert check_section({"a": "3"}, keys, "s") == {"a": 3, "b": "x"}
    assert check_section({"a": "3"}, keys, "s", fill=False) == {"a": 3}
    with pytest.raises(ConfigError, match=r"^config section 's' must be a mapping"):
        check_section([1], keys, "s")


def test_the_rc_policy_is_derived_from_the_variant():
    ph, ps, other = rc_policy("ph"), rc_policy("ps"), rc_policy(None)
    assert (ph.augment, ph.conjoin, ph.equivariant) == (True, True, False)
    assert (ps.augment, ps.conjoin, ps.equivariant) == (False, False, True)
    assert (other.augment, other.conjoin, other.equivariant) == (True, True, False)
    with pytest.raises(ValueError, match="unknown Caduceus variant"):
        rc_policy("pq")



def test_the_modality_object_owns_what_branched_on_its_name():
    from dnadiff.data.info import DataInfo
    from dnadiff.data.modality import MODALITIES, modality_of

    assert DataInfo.from_dict({}).kind.name == "dna" and DataInfo.from_dict(None).kind.caduceus  # files without a modality are DNA
    assert [m.name for m in MODALITIES.values() if m.caduceus] == ["dna"]
    assert {m.name for m in MODALITIES.values() if m.samples_file} == {"text", "pixels"}
    assert modality_of("pixels").arguments == ("images",)
    with pytest.raises(UserError, match="unknown data modality 'audio'"):
        modality_of("audio")
