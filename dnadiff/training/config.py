"""Pretraining configs: YAML files (``yaml.safe_load``, never code) merged over defaults, plus
``key=value`` overrides on the command line (``optim.lr=1e-3``). Unknown keys are errors."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from dnadiff.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

DEFAULTS: dict = {
    "model": {"name": "caduceus", "variant": "ph", "d_model": 118, "n_layer": 4, "d_state": 16, "d_conv": 4,
              "expand": 2, "vocab_size": 7, "num_outputs": 4, "time_conditioning": False, "num_classes": 0,
              "kernels": "auto", "conjoin": False, "rc_augment": False},
    "diffusion": {"schedule": "loglinear"},
    "data": {"window": 1024, "batch_size": 16, "num_workers": 0, "max_n_frac": 0.1, "rc_aug": True,
             "holdout_frac": 0.05, "max_eval_windows": 64, "val_contigs": [], "test_contigs": [], "bed": None,
             "genome": None, "decompress": False, "dhs": None, "max_sequences": None, "text": None, "text_level": "char", "images": None, "pixel_order": "interleaved",
             "val_fraction": 0.05, "test_fraction": 0.05},
    "optim": {"lr": 2e-3, "weight_decay": 0.0, "betas": [0.9, 0.95], "warmup_steps": 100, "min_lr_ratio": 0.1,
              "grad_clip": 1.0, "total_steps": None},
    "train": {"max_steps": 1000, "val_every": 250, "ckpt_every": 250, "ema_decay": 0.999, "val_num_t": 4,
              "seed": 0, "label_dropout": 0.1, "precision": "auto", "log_every": 10,
              "audit": False},
}

# keys whose value is free-form (model options differ between backbones; schedule options too)
OPEN_SECTIONS = {"model", "diffusion"}


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Recursively merge ``update`` into a copy of ``base``; unknown keys raise UserError
    (except inside the open sections ``model`` and ``diffusion``)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{where}{key}"
        if key not in out and where.split(".")[0] not in OPEN_SECTIONS:
            valid = ", ".join(sorted(out))
            raise UserError(f"unknown config key {path!r}: valid keys here are {valid}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{path}.")
        else:
            out[key] = value
    return out


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or a name under ``configs/pretrain/`` (``demo`` -> configs/pretrain/demo.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = CONFIG_DIR / "pretrain" / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(q.stem for q in (CONFIG_DIR / "pretrain").glob("*.yaml"))
    raise UserError(f"config {name_or_path!r} not found: give a YAML path or one of {', '.join(names)}")


def load_config(name_or_path: str | None, overrides: list[str] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides (values parsed as YAML scalars/lists)."""
    cfg = copy.deepcopy(DEFAULTS)
    if name_or_path:
        path = resolve_config_path(name_or_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config {path} is not valid YAML ({str(err).splitlines()[0]}): fix the file") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config {path} must be a mapping of sections (model, diffusion, data, optim, train)")
        cfg = merge(cfg, loaded)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not key=value: write e.g. optim.lr=1e-3")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        nested: dict = {}
        cur = nested
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise UserError(f"override key {key!r} needs a section: one of {', '.join(DEFAULTS)} (e.g. optim.lr=1e-3)")
        if parts[0] not in DEFAULTS:
            raise UserError(f"unknown config key {key!r}: sections are {', '.join(DEFAULTS)}")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        cfg = merge(cfg, nested)
    return cfg
