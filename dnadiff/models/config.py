"""Typed model configs: one dataclass per denoiser, owning its defaults, size presets and checks.

``CaduceusConfig(**section)`` / ``TransformerConfig(**section)`` take a config section's keys;
an unknown key or a value out of range raises :class:`dnadiff.errors.ConfigError` (a UserError
and a ValueError) naming the key and what is allowed. ``config.to_spec()`` is the plain dict
(``{"name": ..., **fields}``) that ``model.pt`` stores and :func:`dnadiff.models.build_model` reads.

Sizes: ``embed_size`` is the number of rows of the token embedding (every id z_t may hold: the
real tokens, the mask id, and N / PAD for DNA: 7), ``num_outputs`` the number of real tokens the
logits range over (the diffusion's vocabulary V: 4 for DNA). Older specs named the embedding size
``vocab_size`` and Caduceus' RC augmentation ``rc_augment``: both are still read (``LEGACY_KEYS``).
"""
from __future__ import annotations

import functools
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from dnadiff.data.tokenizer import EMBED_SIZE, NUM_BASES
from dnadiff.errors import ConfigError
from dnadiff.ops.scan import KERNELS
from dnadiff.rc import COMPLEMENT

#: old key -> current key (specs in model.pt files written before issue 13 use the old names)
LEGACY_KEYS = {"vocab_size": "embed_size", "rc_augment": "rc_aug"}


def _strict_init(cls):
    """Wrap a dataclass ``__init__``: legacy keys renamed, unknown or missing keys as ConfigError."""
    init = cls.__init__
    names = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]

    @functools.wraps(init)
    def __init__(self, **kwargs):
        if kwargs.get("name", cls.name) != cls.name:
            raise ConfigError(f"model.name={kwargs['name']!r} given to the {cls.name!r} config: use {cls.name!r}")
        kwargs.pop("name", None)
        for old, new in LEGACY_KEYS.items():
            if old in kwargs and new in names:
                value = kwargs.pop(old)
                if new in kwargs and kwargs[new] != value:
                    raise ConfigError(f"model: {old}={value!r} and {new}={kwargs[new]!r} disagree (the older name "
                                      f"{old!r} means {new!r}): give {new!r} only")
                kwargs.setdefault(new, value)
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ConfigError(f"bad option {unknown[0]!r} for model {cls.name!r}: the keys are {', '.join(names)}")
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise ConfigError(f"model {cls.name!r} needs {', '.join(map(repr, missing))}: give it in the model section")
        init(self, **kwargs)

    cls.__init__ = __init__
    return cls


def _check_int(key: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise ConfigError(f"model.{key}={value!r} is out of range: use {allowed}")


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"model.{key}={value!r} is not allowed: use one of {', '.join(map(str, choices))}")


def _check_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"model.{key}={value!r} is not allowed: use true or false")


class ModelConfig:
    """Shared behaviour of the model configs (``name`` is the ``build_model`` name)."""

    name: ClassVar[str]

    def to_spec(self) -> dict:
        """Plain dict ``{"name": ..., **fields}``: what configs and ``model.pt`` hold."""
        return {"name": self.name, **asdict(self)}


@_strict_init
@dataclass
class CaduceusConfig(ModelConfig):
    """Caduceus denoiser (dnadiff.models.caduceus). Defaults: the "470k" size, DNA vocabulary, Caduceus-Ph.

    Fields: ``variant`` "ph" (RC symmetry by ``rc_aug`` augmentation in training and ``conjoin`` at
    inference) or "ps" (RC-equivariant by parameter sharing); Mamba's ``d_state``, ``d_conv``, ``expand``;
    ``complement_map`` one id per embedding row, its own inverse; ``kernels`` the selective-scan
    implementation; ``time_conditioning`` / ``num_classes`` (> 0: label embedding, null label id num_classes).
    """

    name: ClassVar[str] = "caduceus"
    #: size presets: "470k" the 1k-context model of the MDLM / Caduceus Genomic Benchmarks experiments
    #: (469,640 parameters), "7m" the published 131k-context model (7,723,008), "demo" tiny, fast on a CPU
    PRESETS: ClassVar[dict[str, dict]] = {
        "demo": {"d_model": 32, "n_layer": 2},
        "470k": {"d_model": 118, "n_layer": 4},
        "7m": {"d_model": 256, "n_layer": 16},
    }

    embed_size: int = EMBED_SIZE
    num_outputs: int = NUM_BASES
    d_model: int = 118
    n_layer: int = 4
    variant: str = "ph"
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    complement_map: list[int] = field(default_factory=lambda: list(COMPLEMENT))
    time_conditioning: bool = False
    num_classes: int = 0
    kernels: str = "auto"
    conjoin: bool = False
    rc_aug: bool = False

    def __post_init__(self):
        _check_int("embed_size", self.embed_size, 1)
        _check_int("num_outputs", self.num_outputs, 1, self.embed_size)
        for key in ("d_model", "n_layer", "d_state", "d_conv", "expand"):
            _check_int(key, getattr(self, key), 1)
        _check_int("num_classes", self.num_classes, 0)
        _check_choice("variant", self.variant, ("ph", "ps"))
        _check_choice("kernels", self.kernels, KERNELS)
        for key in ("time_conditioning", "conjoin", "rc_aug"):
            _check_bool(key, getattr(self, key))
        comp = list(self.complement_map)
        n, v = self.embed_size, self.num_outputs
        if (len(comp) != n or any(not isinstance(c, int) or not 0 <= c < n for c in comp)
                or any(comp[c] != i for i, c in enumerate(comp)) or sorted(comp[:v]) != list(range(v))):
            raise ConfigError(f"model.complement_map: the complement map must be its own inverse over {n} tokens "
                              f"and map the first {v} among themselves: got {comp}")
        self.complement_map = comp

    @classmethod
    def preset(cls, size: str, **overrides) -> "CaduceusConfig":
        """The config of a size preset ("demo", "470k", "7m") with ``overrides``."""
        if size not in cls.PRESETS:
            raise ConfigError(f"unknown Caduceus size {size!r}: use one of {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[size], **overrides})


@_strict_init
@dataclass
class TransformerConfig(ModelConfig):
    """Bidirectional transformer denoiser (dnadiff.models.transformer), nanoGPT-style.

    ``embed_size`` must exceed ``num_outputs`` (the mask id is num_outputs); ``d_model`` splits into
    ``n_head`` heads of even size (rotary embeddings); ``max_len`` is the longest sequence.
    """

    name: ClassVar[str] = "transformer"

    embed_size: int
    num_outputs: int
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    max_len: int = 1024
    time_conditioning: bool = False
    num_classes: int = 0
    dropout: float = 0.0

    def __post_init__(self):
        _check_int("num_outputs", self.num_outputs, 1)
        if isinstance(self.embed_size, bool) or not isinstance(self.embed_size, int) or self.embed_size <= self.num_outputs:
            raise ConfigError(f"model.embed_size={self.embed_size!r} must exceed num_outputs={self.num_outputs} "
                              "(the mask id is num_outputs): use an integer > num_outputs")
        for key in ("d_model", "n_layer", "n_head", "max_len"):
            _check_int(key, getattr(self, key), 1)
        _check_int("num_classes", self.num_classes, 0)
        _check_bool("time_conditioning", self.time_conditioning)
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ConfigError(f"model.d_model={self.d_model} must split into {self.n_head} heads of even size: "
                              "use a multiple of 2 * n_head")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout={self.dropout!r} is out of range: use a number in [0, 1)")


CONFIGS: dict[str, type[ModelConfig]] = {"caduceus": CaduceusConfig, "transformer": TransformerConfig}


def model_config(spec: dict | ModelConfig) -> ModelConfig:
    """A model spec ``{"name": "caduceus" | "transformer", **fields}`` (legacy keys read too) -> its config."""
    if isinstance(spec, ModelConfig):
        return spec
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    if name not in CONFIGS:
        raise ConfigError(f"unknown model name {name!r} in the model spec: use 'caduceus' or 'transformer'")
    return CONFIGS[name](**kwargs)


def caduceus_spec(size: str, **overrides) -> dict:
    """Model spec of a Caduceus size preset: ``CaduceusConfig.preset(size, **overrides).to_spec()``."""
    return CaduceusConfig.preset(size, **overrides).to_spec()


