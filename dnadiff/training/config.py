"""Pretraining configs: YAML files (``yaml.safe_load``, never code) merged over defaults, plus
``key=value`` overrides on the command line (``optim.lr=1e-3``). Unknown keys are errors."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dnadiff.errors import ParameterError, UserError
from dnadiff.data.tokenizer import EMBED_SIZE, NUM_BASES
from dnadiff.models.config import CONFIGS, model_config

#: the bundled configs (pretrain/, finetune/, model/), shipped inside the package (configs/ at the top of a
#: checkout links here)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Key:
    """One typed config value or command-line option with its bounds and meaning.

    ``kind``: ``int``, ``float``, ``bool``, ``str``, ``choice`` (one of ``choices``), ``floats``
    (a list of ``length`` floats), ``strs`` (a list of names, or one comma-separated string),
    ``blocks`` (auto, true, false or an integer k >= 1: activation checkpointing).
    ``lo``/``hi``: bounds, inclusive unless ``lo_open``/``hi_open``; ``optional``: null allowed.
    """

    kind: str
    default: Any = None
    doc: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    optional: bool = False
    length: int | None = None

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``an integer >= 1`` or ``a number in (0, 1]``."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "str":
            text = "a text value"
        elif self.kind == "blocks":
            text = "auto, true, false or an integer k >= 1 (groups of k blocks)"
        elif self.kind == "strs":
            text = "a list of names (or one comma-separated string)"
        else:
            noun = {"int": "an integer", "float": "a number", "floats": f"a list of {self.length} numbers, each"}[self.kind]
            if self.lo is not None and self.hi is not None:
                text = f"{noun} in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
            elif self.lo is not None:
                text = f"{noun} {'>' if self.lo_open else '>='} {_num(self.lo)}"
            elif self.hi is not None:
                text = f"{noun} {'<' if self.hi_open else '<='} {_num(self.hi)}"
            else:
                text = noun
        return text + (" or null" if self.optional else "")

    def _number(self, value: Any, integer: bool):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = value.strip()
            value = int(value) if integer else float(value)
        if integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValueError
        else:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError
            value = float(value)
        lo_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        hi_bad = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if lo_bad or hi_bad:
            raise ValueError
        return value

    def check(self, value: Any, name: str) -> Any:
        """``value`` converted to this key's type; UserError (one line naming ``name`` and the allowed
        values) when it does not fit."""
        if value is None and self.optional:
            return None
        try:
            if self.kind in ("int", "float"):
                return self._number(value, self.kind == "int")
            if self.kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError
                return value
            if self.kind == "choice":
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)
                if value not in self.choices:
                    raise ValueError
                return value
            if self.kind == "blocks":  # auto | true | false | k >= 1
                if isinstance(value, str):
                    value = {"auto": "auto", "true": True, "false": False}.get(value.strip().lower(), value)
                    if isinstance(value, str) and value.strip().isdigit():
                        value = int(value)
                if value == "auto" or isinstance(value, bool):
                    return value
                if isinstance(value, int) and value >= 1:
                    return value
                raise ValueError
            if self.kind == "str":
                if not isinstance(value, str) or not value:
                    raise ValueError
                return value
            if self.kind == "strs":
                if isinstance(value, str):
                    value = [v for v in value.split(",") if v]
                if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                    raise ValueError
                return [str(v) for v in value]
            if self.kind == "floats":
                if not isinstance(value, list) or len(value) != self.length:
                    raise ValueError
                return [self._number(v, False) for v in value]
        except (ValueError, TypeError, OverflowError):
            shown = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            raise UserError(f"{name}={shown} is not allowed: use {self.allowed()}") from None
        raise AssertionError(self.kind)


def option(kind: str, **bounds):
    """An argparse ``type=`` for a command-line option checked like a config :class:`Key`: a bad value
    stops the command while its arguments are parsed, in one line naming the option and the allowed values."""
    import argparse

    spec = Key(kind, **bounds)

    def parse(raw: str):
        try:
            return spec.check(raw, "value")
        except UserError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not allowed: use {spec.allowed()}") from None

    parse.__name__ = kind
    return parse


def check_value(value: Any, parameter: str, kind: str, **bounds) -> Any:
    """A library call's argument checked (and converted) like a config :class:`Key` of ``kind`` with ``bounds``;
    :class:`dnadiff.errors.ParameterError` naming ``parameter`` (``"batch_size=0 is not allowed: use ..."``)."""
    try:
        return Key(kind, **bounds).check(value, parameter)
    except UserError as err:
        raise ParameterError(parameter, str(err)) from None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


PRECISIONS = ("auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "bf16-true", "16-true", "64-true", "64")

#: THE schema of the typed config sections (``model`` and ``diffusion`` stay open: their keys
#: depend on the backbone and the schedule, checked when they are built). configs/README.md is
#: generated from it (``python -m dnadiff.training.config``).
SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "window": Key("int", 1024, "training window / sequence length in tokens", lo=1, hi=1_048_576),
        "batch_size": Key("int", 16, "sequences per batch (per device)", lo=1, hi=65_536),
        "num_workers": Key("int", 0, "DataLoader worker processes", lo=0, hi=256),
        "max_n_frac": Key("float", 0.1, "largest share of N accepted in a DNA training window", lo=0, hi=1),
        "rc_aug": Key("bool", True, "reverse-complement augmentation (Caduceus-Ph)"),
        "holdout_frac": Key("float", 0.05, "share of each contig's end held out for val and again for test "
                                           "(when no held-out contigs or BED split are given)", lo=0, hi=0.5,
                            lo_open=True, hi_open=True),
        "max_eval_windows": Key("int", 64, "validation/test windows scored (null: all)", lo=1, optional=True),
        "val_contigs": Key("strs", [], "held-out validation contigs"),
        "test_contigs": Key("strs", [], "held-out test contigs"),
        "bed": Key("str", None, "BED of usable intervals (chrom start end [split])", optional=True),
        "genome": Key("str", None, "genome FASTA (set by --genome)", optional=True),
        "decompress": Key("bool", False, "decompress a plain-gzip FASTA once into a cache"),
        "dhs": Key("str", None, "class-labelled DHS table (set by --dhs)", optional=True),
        "max_sequences": Key("int", None, "use at most this many DHS sequences", lo=1, optional=True),
        "text": Key("str", None, "text file (set by --text)", optional=True),
        "text_level": Key("choice", "char", "text tokens: char (text8, 27 symbols) or byte (256)", choices=("char", "byte")),
        "images": Key("str", None, "'digits' or a CIFAR-10 folder (set by --images)", optional=True),
        "pixel_order": Key("choice", "interleaved", "pixel token order", choices=("interleaved", "planar")),
        "val_fraction": Key("float", 0.05, "share of the text held out for validation", lo=0, hi=0.5, lo_open=True, hi_open=True),
        "test_fraction": Key("float", 0.05, "share of the text held out for test", lo=0, hi=0.5, lo_open=True, hi_open=True),
    },
    "optim": {
        "lr": Key("float", 2e-3, "peak learning rate (AdamW)", lo=0, hi=10, lo_open=True),
        "weight_decay": Key("float", 0.0, "AdamW weight decay", lo=0, hi=10),
        "betas": Key("floats", [0.9, 0.95], "AdamW betas", lo=0, hi=1, hi_open=True, length=2),
        "warmup_steps": Key("int", 100, "linear warm-up steps", lo=0),
        "min_lr_ratio": Key("float", 0.1, "final learning rate / peak of the cosine decay", lo=0, hi=1),
        "grad_clip": Key("float", 1.0, "gradient norm clip (0: off)", lo=0),
        "total_steps": Key("int", None, "horizon of the cosine decay (null: train.max_steps)", lo=1, optional=True),
    },
    "train": {
        "max_steps": Key("int", 1000, "training steps (--max-steps)", lo=1),
        "val_every": Key("int", 250, "validate every N steps", lo=1),
        "ckpt_every": Key("int", 250, "write a step checkpoint every N steps", lo=1),
        "ema_decay": Key("float", 0.999, "EMA decay of the weights (0: no EMA)", lo=0, hi=1, hi_open=True),
        "val_num_t": Key("int", 4, "Monte-Carlo draws of t per validation sequence", lo=1, hi=4096),
        "seed": Key("int", 0, "random seed (--seed)", lo=0, hi=2**63 - 1),
        "label_dropout": Key("float", 0.1, "classifier-free label dropout (class-conditional models)", lo=0, hi=1, hi_open=True),
        "precision": Key("choice", "auto", "Lightning precision (auto: bf16-mixed on GPU, else 32-true)", choices=PRECISIONS),
        "log_every": Key("int", 10, "log metrics every N steps", lo=1),
        "audit": Key("bool", False, "record the windows each rank read (tests)"),
        "activation_checkpointing": Key("blocks", "auto", "recompute block activations in the backward "
                                        "(torch.utils.checkpoint per group of k blocks; true = every block); "
                                        "auto: on for data.window > 4096 (dnadiff/training/memory.py)"),
        "memory_check": Key("bool", True, "estimate the peak memory before training and refuse a run that "
                                          "cannot fit on the device"),
    },
}

DEFAULTS: dict = {
    # the model's other fields, their defaults and checks: dnadiff.models.config (CaduceusConfig, TransformerConfig)
    "model": {"name": "caduceus"},
    "diffusion": {"schedule": "loglinear"},
    **{section: {key: copy.deepcopy(spec.default) for key, spec in keys.items()} for section, keys in SCHEMA.items()},
}


def validate(cfg: dict) -> dict:
    """Check every typed section against :data:`SCHEMA` (converting numeric strings such as ``1e-3``);
    UserError with one line naming the first bad key and its allowed values. Returns ``cfg``."""
    for section, keys in SCHEMA.items():
        values = cfg.get(section)
        if not isinstance(values, dict):
            raise UserError(f"config section {section!r} must be a mapping of keys: fix the config")
        for key, spec in keys.items():
            values[key] = spec.check(values.get(key, spec.default), f"{section}.{key}")
    for section in OPEN_SECTIONS:
        if not isinstance(cfg.get(section), dict):
            raise UserError(f"config section {section!r} must be a mapping of keys: fix the config")
    check_model_section(cfg["model"])
    return cfg


def check_model_section(section: dict) -> None:
    """The ``model`` section through its typed config (:mod:`dnadiff.models.config`: ``CaduceusConfig`` /
    ``TransformerConfig``), before any data is read; ConfigError names the bad key and its range. The
    sizes the data sets (embedding rows, outputs) are checked again once the data is known."""

    spec = dict(section)
    if spec.get("name") == "transformer":
        if "embed_size" not in spec and "vocab_size" not in spec:
            spec["embed_size"] = EMBED_SIZE
        spec.setdefault("num_outputs", NUM_BASES)
    model_config(spec)


def _model_markdown() -> list[str]:
    """The ``model`` section: the fields of each typed model config, with their defaults."""
    from dataclasses import MISSING, fields


    lines = ["## model", "", "Typed by `dnadiff/models/config.py` (`model.name` picks the config; ranges are checked by",
             "the config class). `-`: set from the data.", "", "| model.name | key | default |", "|---|---|---|"]
    for name, cls in CONFIGS.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else "-")
            shown = "-" if default == "-" else yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"| {name} | `model.{f.name}` | `{shown}` |")
    return lines + [""]


def schema_markdown() -> str:
    """configs/README.md: every typed key with its default, allowed values and meaning."""
    lines = ["# Pretraining config keys", "",
             "Generated from `dnadiff/training/config.py` (`SCHEMA`) by `python -m dnadiff.training.config`;",
             "a test checks this file against the schema. Values are checked before any work starts; a bad",
             "value is refused in one line naming the key and its allowed values. Configs are YAML",
             "(`configs/pretrain/*.yaml`, read with `safe_load`) and `section.key=value` overrides on the",
             "command line. The `diffusion` section is open: its keys depend on the schedule and are checked",
             "when the process is built.", ""]
    lines += _model_markdown()
    for section, keys in SCHEMA.items():
        lines += [f"## {section}", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for key, spec in keys.items():
            default = yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"| `{section}.{key}` | `{default}` | {spec.allowed()} | {spec.doc} |")
        lines.append("")
    return "\n".join(lines)


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


def load_config(name_or_path: str | None, overrides=()) -> dict:
    """Defaults <- YAML file <- overrides: ``key=value`` strings (values parsed as YAML scalars/lists) or a
    mapping of dotted keys to values (``{"optim.lr": 1e-3}``)."""
    if isinstance(overrides, dict):
        overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for key, value in overrides.items()]
    cfg = copy.deepcopy(DEFAULTS)
    if name_or_path:
        path = resolve_config_path(name_or_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config {path} is not valid YAML ({str(err).splitlines()[0]}): fix the file") from None
        except UnicodeDecodeError:
            raise UserError(f"config {path} is not a UTF-8 text file: give a YAML config") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config {path} is not a mapping of sections: write it as `section: {{key: value}}` "
                            f"with sections {', '.join(DEFAULTS)}")
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
    return validate(cfg)


if __name__ == "__main__":
    print(schema_markdown(), end="")
