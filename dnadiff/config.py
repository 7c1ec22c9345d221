"""THE config tree: every typed section of every command, its defaults stated once, one checker.

Sections (dataclasses whose fields are :func:`dnadiff.keys.setting`: type, default, bounds, meaning):
:class:`DataConfig`, :class:`OptimConfig`, :class:`TrainConfig` (a pretraining config's ``data``, ``optim``,
``train``), ``model`` (:mod:`dnadiff.models.config`: ``CaduceusConfig`` / ``TransformerConfig``), ``diffusion``
(:func:`check_diffusion`: the schedule's own parameters), :class:`FinetuneConfig` (``configs/finetune/<task>.yaml``)
and :class:`SampleConfig` (``dnadiff sample`` / ``DNAModel.generate``). Every value goes through
:meth:`dnadiff.keys.Key.check`; an unknown key is an error in every section. Pretraining configs are YAML
files (``yaml.safe_load``, never code) merged over the defaults, plus ``key=value`` overrides on the command
line (``optim.lr=1e-3``). configs/README.md is generated from this module (``python -m dnadiff.config``).
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import yaml

from dnadiff.data.tokenizer import EMBED_SIZE, NUM_BASES
from dnadiff.diffusion import SAMPLERS, build_diffusion
from dnadiff.diffusion.schedules import SCHEDULES
from dnadiff.errors import ConfigError, UserError
from dnadiff.keys import Key, check_fields, check_section, keys_of, setting, show
from dnadiff.models.config import CONFIGS, model_config

#: the bundled configs (pretrain/, finetune/, model/), shipped inside the package (configs/ at the top of a
#: checkout links here)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Lightning's precision names (``train.precision``, ``--precision``)
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "bf16-true", "16-true", "64-true", "64")


class Section:
    """A typed config section: its fields are checked (and converted) when it is made."""

    #: the section's name in a config file and in error messages (``optim`` -> ``optim.lr``)
    where: str = ""

    def __post_init__(self):
        check_fields(self, self.where)

    @classmethod
    def keys(cls) -> dict[str, Key]:
        """The section's keys (name -> :class:`~dnadiff.keys.Key`), in field order."""
        return keys_of(cls)

    @classmethod
    def from_dict(cls, values: dict | None):
        """The section from a mapping; an unknown key is a ConfigError naming it and the valid keys."""
        return cls(**check_section(values, cls.keys(), cls.where))

    def to_dict(self) -> dict:
        """Plain values (what YAML files, hparams and ``model.pt`` hold)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}


@dataclass
class DataConfig(Section):
    """A pretraining config's ``data`` section: the source (set by the command's --genome/--dhs/--text/--images)
    and how it is cut into windows and batches."""

    where = "data"
    window: int = setting("int", 1024, "training window / sequence length in tokens", lo=1, hi=1_048_576)
    batch_size: int = setting("int", 16, "sequences per batch (per device)", lo=1, hi=65_536)
    num_workers: int = setting("int", 0, "DataLoader worker processes", lo=0, hi=256)
    max_n_frac: float = setting("float", 0.1, "largest share of N accepted in a DNA training window", lo=0, hi=1)
    rc_aug: bool = setting("bool", True, "reverse-complement augmentation (Caduceus-Ph)")
    holdout_frac: float = setting("float", 0.05, "share of each contig's end held out for val and again for test "
                                                 "(when no held-out contigs or BED split are given)", lo=0, hi=0.5,
                                  lo_open=True, hi_open=True)
    max_eval_windows: int | None = setting("int", 64, "validation/test windows scored (null: all)", lo=1, optional=True)
    val_contigs: list = setting("strs", [], "held-out validation contigs")
    test_contigs: list = setting("strs", [], "held-out test contigs")
    bed: str | None = setting("str", None, "BED of usable intervals (chrom start end [split])", optional=True)
    genome: str | None = setting("str", None, "genome FASTA (set by --genome)", optional=True)
    decompress: bool = setting("bool", False, "decompress a plain-gzip FASTA once into a cache")
    dhs: str | None = setting("str", None, "class-labelled DHS table (set by --dhs)", optional=True)
    max_sequences: int | None = setting("int", None, "use at most this many DHS sequences", lo=1, optional=True)
    text: str | None = setting("str", None, "text file (set by --text)", optional=True)
    text_level: str = setting("choice", "char", "text tokens: char (text8, 27 symbols) or byte (256)",
                              choices=("char", "byte"))
    images: str | None = setting("str", None, "'digits' or a CIFAR-10 folder (set by --images)", optional=True)
    pixel_order: str = setting("choice", "interleaved", "pixel token order", choices=("interleaved", "planar"))
    val_fraction: float = setting("float", 0.05, "share of the text held out for validation", lo=0, hi=0.5,
                                  lo_open=True, hi_open=True)
    test_fraction: float = setting("float", 0.05, "share of the text held out for test", lo=0, hi=0.5,
                                   lo_open=True, hi_open=True)


#: the ``data`` keys a DNA run records in its data_info (enough to rebuild its splits)
DNA_KEYS = ("window", "batch_size", "num_workers", "max_n_frac", "rc_aug", "holdout_frac", "max_eval_windows",
            "val_contigs", "test_contigs", "bed")


@dataclass
class OptimConfig(Section):
    """A pretraining config's ``optim`` section: AdamW with linear warm-up and cosine decay."""

    where = "optim"
    lr: float = setting("float", 2e-3, "peak learning rate (AdamW)", lo=0, hi=10, lo_open=True)
    weight_decay: float = setting("float", 0.0, "AdamW weight decay", lo=0, hi=10)
    betas: list = setting("floats", [0.9, 0.95], "AdamW betas", lo=0, hi=1, hi_open=True, length=2)
    warmup_steps: int = setting("int", 100, "linear warm-up steps", lo=0)
    min_lr_ratio: float = setting("float", 0.1, "final learning rate / peak of the cosine decay", lo=0, hi=1)
    grad_clip: float = setting("float", 1.0, "gradient norm clip (0: off)", lo=0)
    total_steps: int | None = setting("int", None, "horizon of the cosine decay (null: train.max_steps)", lo=1,
                                      optional=True)


@dataclass
class TrainConfig(Section):
    """A pretraining config's ``train`` section: steps, validation, checkpoints, EMA, precision, memory."""

    where = "train"
    max_steps: int = setting("int", 1000, "training steps (--max-steps)", lo=1)
    val_every: int = setting("int", 250, "validate every N steps", lo=1)
    ckpt_every: int = setting("int", 250, "write a step checkpoint every N steps", lo=1)
    ema_decay: float = setting("float", 0.999, "EMA decay of the weights (0: no EMA)", lo=0, hi=1, hi_open=True)
    val_num_t: int = setting("int", 4, "Monte-Carlo draws of t per validation sequence", lo=1, hi=4096)
    seed: int = setting("int", 0, "random seed (--seed)", lo=0, hi=2**63 - 1)
    label_dropout: float = setting("float", 0.1, "classifier-free label dropout (class-conditional models)", lo=0,
                                   hi=1, hi_open=True)
    precision: str = setting("choice", "auto", "Lightning precision (auto: bf16-mixed on GPU, else 32-true)",
                             choices=PRECISIONS)
    log_every: int = setting("int", 10, "log metrics every N steps", lo=1)
    audit: bool = setting("bool", False, "record the windows each rank read (tests)")
    activation_checkpointing: object = setting(
        "blocks", "auto", "recompute block activations in the backward (torch.utils.checkpoint per group of k "
        "blocks; true = every block); auto: on for data.window > 4096 (dnadiff/training/memory.py)")
    memory_check: bool = setting("bool", True, "estimate the peak memory before training and refuse a run that "
                                               "cannot fit on the device")


@dataclass
class FinetuneConfig(Section):
    """Hyper-parameters of one fine-tuning task (``configs/finetune/<task>.yaml``): the Caduceus Genomic
    Benchmarks recipe by default (AdamW, weight decay 0.1, 1% warm-up, cosine to 0.1 x lr, clip 1.0)."""

    where = "finetune"
    lr: float = setting("float", 1e-3, "peak learning rate (AdamW)", lo=0, hi=10, lo_open=True)
    batch_size: int = setting("int", 256, "sequences per optimiser step", lo=1, hi=65_536)
    epochs: int = setting("int", 10, "training epochs (the best validation epoch is kept)", lo=1, hi=100_000)
    max_length: int = setting("int", 512, "longest sequence; longer ones are cut", lo=1, hi=1_048_576)
    pooling: str = setting("choice", "mean", "how the head pools the backbone's positions",
                           choices=("mean", "first", "last"))
    weight_decay: float = setting("float", 0.1, "AdamW weight decay", lo=0, hi=10)
    warmup_fraction: float = setting("float", 0.01, "share of the steps in linear warm-up", lo=0, hi=1)
    min_lr_ratio: float = setting("float", 0.1, "final learning rate / peak of the cosine decay", lo=0, hi=1)
    grad_clip: float = setting("float", 1.0, "gradient norm clip (0: off)", lo=0)
    micro_batch: int | None = setting("int", None, "sequences per forward pass (null: sized to the memory)", lo=1,
                                      hi=65_536, optional=True)
    noisy: bool = setting("bool", False, "train on sequences masked at a random level (finetune(noisy=True)): a "
                                         "guide for masked diffusion")


#: --remdm-strategy choices (ReMDM's published strategies)
REMDM_STRATEGIES = ("cap", "rescale", "loop")
#: classifier-guidance forms (dnadiff.design)
GUIDE_FORMS = ("exact", "first-order")


@dataclass
class SampleConfig(Section):
    """The sampling settings of ``dnadiff sample`` and :meth:`dnadiff.generate.DNAModel.generate` (their options
    and defaults come from here)."""

    where = "sample"
    steps: int | None = setting("int", None, "reverse steps per window (null: min(length, window))", lo=0,
                                optional=True)
    sampler: str = setting("choice", "cached", "the reverse process", choices=SAMPLERS)
    remdm_strategy: str = setting("choice", "loop", "ReMDM remasking strategy", choices=REMDM_STRATEGIES)
    eta: float | None = setting("float", None, "ReMDM remasking rate (null: the strategy's published one)", lo=0,
                                hi=1, optional=True)
    block_length: int | None = setting("int", None, "confidence sampler: semi-autoregressive block size", lo=1,
                                       optional=True)
    temperature: float = setting("float", 1.0, "temperature of the denoiser's distribution", lo=0, lo_open=True,
                                 hi=1000)
    top_p: float = setting("float", 1.0, "nucleus sampling mass (1.0 = off)", lo=0, hi=1, lo_open=True)
    guidance: float = setting("float", 0.0, "classifier-free guidance weight (needs a class)", lo=0, hi=1000)
    seed: int | None = setting("int", None, "seed of the draws", lo=0, hi=2**63 - 1, optional=True)
    batch_size: int = setting("int", 256, "sequences generated together", lo=1, hi=65_536)
    gamma: float = setting("float", 1.0, "classifier guidance strength", lo=0, hi=1000)
    guide_form: str = setting("choice", "exact", "classifier guidance form", choices=GUIDE_FORMS)


#: the typed sections of a pretraining config (``model`` and ``diffusion`` are typed by their own configs)
SECTIONS: dict[str, type[Section]] = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig}
#: each section's keys; configs/README.md is generated from them
SCHEMA: dict[str, dict[str, Key]] = {name: cls.keys() for name, cls in SECTIONS.items()}

#: the keys every diffusion section may hold, beside the schedule's own parameters
DIFFUSION_KEYS = {
    "schedule": Key("choice", "loglinear", "masking schedule (genmd4: learnable, per token)",
                    choices=(*SCHEDULES, "genmd4")),
    "num_steps": Key("int", None, "discrete steps T (null: continuous time)", lo=1, optional=True),
    "clip": Key("float", None, "MD4's clipped form of the schedule (eps)", lo=0, hi=0.5, lo_open=True, hi_open=True,
                optional=True),
}


def diffusion_keys(schedule: str) -> dict[str, Key]:
    """The keys of a ``diffusion`` section with this schedule: the shared ones and the schedule's own parameters
    (read off its constructor, so the defaults stay where the schedule states them)."""
    if schedule == "genmd4":
        return {"schedule": DIFFUSION_KEYS["schedule"],
                "init_w": Key("float", 1.0, "initial rate w of every token (GenMD4)", lo=0, lo_open=True, hi=1000)}
    params = [p for p in inspect.signature(SCHEDULES[schedule].__init__).parameters.values() if p.name != "self"]
    own = {p.name: Key("float", None if p.default is inspect.Parameter.empty else p.default,
                       f"{schedule} schedule parameter") for p in params}
    return {**DIFFUSION_KEYS, **own}


def check_diffusion(section: dict | None) -> dict:
    """A ``diffusion`` section checked: the schedule named, only its keys, each typed, and the schedule's own
    bounds (the schedule is built once); ConfigError naming the key. Returns the section as given (converted),
    without filling defaults, so the spec a run stores is the one its config wrote."""
    section = dict(section or {})
    schedule = DIFFUSION_KEYS["schedule"].check(section.get("schedule", "loglinear"), "diffusion.schedule")
    rates = section.pop("init_w") if schedule == "genmd4" and isinstance(section.get("init_w"), list) else None
    checked = check_section(section, diffusion_keys(schedule), "diffusion", fill=False)
    if rates is not None:  # GenMD4's one rate per token: its length is the data's V, checked when it is built
        rate = diffusion_keys("genmd4")["init_w"]
        return {**checked, "init_w": [rate.check(w, "diffusion.init_w") for w in rates]}
    try:
        build_diffusion({"vocab_size": NUM_BASES, **checked})
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    return checked


DEFAULTS: dict = {
    # the model's other fields, their defaults and checks: dnadiff.models.config (CaduceusConfig, TransformerConfig)
    "model": {"name": "caduceus"},
    "diffusion": {"schedule": "loglinear"},
    **{name: cls().to_dict() for name, cls in SECTIONS.items()},
}


def validate(cfg: dict) -> dict:
    """Check every section (converting numeric strings such as ``1e-3``): the typed sections through their
    dataclasses, ``model`` through its model config, ``diffusion`` through :func:`check_diffusion`; ConfigError
    with one line naming the first bad key and its allowed values. Returns ``cfg``, converted in place."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}: sections are {', '.join(DEFAULTS)}")
    for section, cls in SECTIONS.items():
        cfg[section] = cls.from_dict(cfg.get(section)).to_dict()
    for section in ("model", "diffusion"):
        if not isinstance(cfg.get(section), dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys: fix the config")
    check_model_section(cfg["model"])
    cfg["diffusion"] = check_diffusion(cfg["diffusion"])
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


def _table(where: str, keys: dict[str, Key]) -> list[str]:
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, spec in keys.items():
        lines.append(f"| `{where}.{key}` | `{show(spec.default)}` | {spec.allowed()} | {spec.doc} |")
    return lines + [""]


def _model_markdown() -> list[str]:
    """The ``model`` section: the fields of each typed model config, with their defaults and allowed values."""
    lines = ["## model", "", "Typed by `dnadiff/models/config.py` (`model.name` picks the config). `-`: set from the",
             "data; further cross-checks (a complement map that is its own inverse, heads of even size) are made",
             "by the config class.", "", "| model.name | key | default | allowed |", "|---|---|---|---|"]
    for name, cls in CONFIGS.items():
        keys = keys_of(cls)
        for f in fields(cls):
            default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else "-")
            allowed = keys[f.name].allowed() if f.name in keys else "see the config class"
            lines.append(f"| {name} | `model.{f.name}` | `{'-' if default == '-' else show(default)}` | {allowed} |")
    return lines + [""]


def _diffusion_markdown() -> list[str]:
    lines = ["## diffusion", "", "The keys depend on `diffusion.schedule`: the shared ones below and each schedule's own",
             "parameters (read off its constructor in `dnadiff/diffusion/schedules.py`, whose bounds are checked by",
             "building it). A schedule switched on the command line (`diffusion.schedule=genmd4`) drops the file's",
             "parameters of the other schedule.", ""]
    lines += _table("diffusion", DIFFUSION_KEYS)
    lines += ["| schedule | its own keys (default) |", "|---|---|"]
    for name in DIFFUSION_KEYS["schedule"].choices:
        own = {k: v for k, v in diffusion_keys(name).items() if k not in DIFFUSION_KEYS}
        shown = ", ".join(f"`{k}` ({show(v.default)})" for k, v in own.items()) or "none"
        lines.append(f"| {name} | {shown}{' (no num_steps or clip)' if name == 'genmd4' else ''} |")
    return lines + [""]


def schema_markdown() -> str:
    """configs/README.md: every typed key of every section with its default, allowed values and meaning."""
    lines = ["# Config keys", "",
             "Generated from `dnadiff/config.py` (the config tree: one dataclass per section) by",
             "`python -m dnadiff.config`; a test checks this file against it. Values are checked before",
             "any work starts; a bad value or an unknown key is refused in one line naming the key and its allowed",
             "values. Pretraining configs are YAML (`configs/pretrain/*.yaml`, read with `safe_load`) and",
             "`section.key=value` overrides on the command line; fine-tuning configs are",
             "`configs/finetune/<task>.yaml` (the `finetune` keys, unprefixed); the `sample` keys are the options",
             "of `dnadiff sample` and of `DNAModel.generate`.", ""]
    lines += _model_markdown() + _diffusion_markdown()
    for section, keys in SCHEMA.items():
        lines += [f"## {section}", ""] + _table(section, keys)
    for cls in (FinetuneConfig, SampleConfig):
        lines += [f"## {cls.where}", ""] + _table(cls.where, cls.keys())
    return "\n".join(lines)


#: sections whose keys are typed by what they configure (model: by model.name; diffusion: by the schedule):
#: ``merge`` lets their keys through and :func:`validate` checks them
OPEN_SECTIONS = {"model", "diffusion"}


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Recursively merge ``update`` into a copy of ``base``; unknown keys raise ConfigError (inside ``model`` and
    ``diffusion`` they are checked afterwards by :func:`validate`)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{where}{key}"
        if key not in out and where.split(".")[0] not in OPEN_SECTIONS:
            valid = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key {path!r}: valid keys here are {valid}")
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
        overrides = [f"{key}={show(value)}" for key, value in overrides.items()]
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
        if parts == ["diffusion", "schedule"] and value != cfg["diffusion"].get("schedule"):
            # another schedule: the file's parameters of the old one do not apply to it
            keep = diffusion_keys(DIFFUSION_KEYS["schedule"].check(value, "diffusion.schedule"))
            cfg["diffusion"] = {k: v for k, v in cfg["diffusion"].items() if k in keep}
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        cfg = merge(cfg, nested)
    return validate(cfg)


if __name__ == "__main__":
    print(schema_markdown(), end="")
