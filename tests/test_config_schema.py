"""The one config schema: typed keys with bounds, checked before any work; configs/README.md from it."""
from __future__ import annotations

from pathlib import Path

import pytest

from dnadiff.errors import UserError
from dnadiff.config import CONFIG_DIR, DEFAULTS, SCHEMA, load_config, schema_markdown


def test_configs_readme_is_the_schema():
    readme = Path(CONFIG_DIR / "README.md").read_text()
    assert readme == schema_markdown(), "regenerate it: python -m dnadiff.config > configs/README.md"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "pretrain").glob("*.yaml")))
def test_every_shipped_config_fits_the_schema(name):
    cfg = load_config(name)
    for section, keys in SCHEMA.items():
        assert set(cfg[section]) == set(keys) == set(DEFAULTS[section])


def test_numbers_written_as_text_are_converted():
    cfg = load_config("demo", ["optim.lr=1e-3", "train.max_steps=20", "optim.betas=[0.8, 0.9]", "train.precision=32"])
    assert cfg["optim"]["lr"] == 0.001 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["train"]["max_steps"] == 20 and cfg["optim"]["betas"] == [0.8, 0.9]
    assert cfg["train"]["precision"] == "32"


@pytest.mark.parametrize("override, message", [
    ("optim.lr=abc", "optim.lr=abc is not allowed: use a number in (0, 10]"),
    ("train.val_every=0", "train.val_every=0 is not allowed: use an integer >= 1"),
    ("data.window=1.5", "data.window=1.5 is not allowed: use an integer in [1, 1048576]"),
    ("train.ema_decay=1", "train.ema_decay=1 is not allowed: use a number in [0, 1)"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] is not allowed: use a list of 2 numbers, each in [0, 1)"),
    ("data.rc_aug=maybe", "data.rc_aug=maybe is not allowed: use true or false"),
    ("train.precision=fp8", "train.precision=fp8 is not allowed: use one of auto, 32-true"),
    ("optim.lr=.nan", "optim.lr=.nan is not allowed"),
    ("data.max_eval_windows=0", "data.max_eval_windows=0 is not allowed: use an integer >= 1 or null"),
])
def test_a_bad_value_names_the_key_and_the_allowed_range(override, message):
    with pytest.raises(UserError) as err:
        load_config("demo", [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_bad_value_in_a_yaml_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {val_every: 0}\n")
    with pytest.raises(UserError, match=r"^train.val_every=0 is not allowed: use an integer >= 1$"):
        load_config(str(path))


@pytest.mark.parametrize("override, key", [("model.n_layer=0", "model.n_layer"), ("model.d_model=abc", "model.d_model"),
                                           ("model.variant=xx", "variant"), ("model.bogus=1", "bogus")])
def test_the_model_section_is_checked_by_its_typed_config_at_load_time(override, key):
    with pytest.raises(UserError) as err:
        load_config("demo", [override])
    assert key in str(err.value) and "\n" not in str(err.value)
