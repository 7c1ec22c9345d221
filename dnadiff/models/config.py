"""Typed model configs: one dataclass per denoiser, owning its defaults, size presets and checks.

``CaduceusConfig(**section)`` / ``TransformerConfig(**section)`` take a config section's keys;
an unknown key or a value out of range raises :class:`dnadiff.errors.ConfigError` (a UserError
and a ValueError) naming the key and what is allowed. ``config.to_spec()`` is the plain dict
(``{"name": ..., **fields}``) that ``model.pt`` stores and :func:`dnadiff.models.build_model` reads.

Sizes: ``embed_size`` is the number of rows of the token embedding (every id z_t may hold: the
real tokens, the mask id, and N / PAD for DNA: 7), ``num_outputs`` the number of real tokens the
logits range over (the diffusion's vocabulary V: 4 for DNA). Older specs named the embedding size
``vocab_size`` and Caduceus' RC augmentation ``rc_augment``: both are still read (:data:`dnadiff.migrations.MODEL_KEYS`).
"""
from __future__ import annotations

import functools
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from dnadiff.data.tokenizer import EMBED_SIZE, NUM_BASES
from dnadiff.errors import ConfigError
from dnadiff.keys import check_fields, setting
from dnadiff.migrations import MODEL_KEYS
from dnadiff.ops.scan import KERNELS
from dnadiff.rc import COMPLEMENT


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
        for old, new in MODEL_KEYS.items():
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


class ModelConfig:
    """Shared behaviour of the model configs (``name`` is the ``build_model`` name)."""

    name: ClassVar[str]

    def __post_init__(self):
        check_fields(self, "model")  # every setting() field typed and bounded by its Key

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

    embed_size: int = setting("int", EMBED_SIZE, "rows of the token embedding (tokens, mask, N/PAD)", lo=1)
    num_outputs: int = setting("int", NUM_BASES, "real tokens the logits range over (V; at most embed_size)", lo=1)
    d_model: int = setting("int", 118, "hidden width", lo=1)
    n_layer: int = setting("int", 4, "Caduceus blocks", lo=1)
    variant: str = setting("choice", "ph", "RC symmetry: ph (augment + conjoin) or ps (parameter sharing)",
                           choices=("ph", "ps"))
    d_state: int = setting("int", 16, "Mamba state size", lo=1)
    d_conv: int = setting("int", 4, "Mamba convolution width", lo=1)
    expand: int = setting("int", 2, "Mamba inner width / d_model", lo=1)
    complement_map: list[int] = field(default_factory=lambda: list(COMPLEMENT))
    time_conditioning: bool = setting("bool", False, "condition on the diffusion time t")
    num_classes: int = setting("int", 0, "class labels (0: unconditional)", lo=0)
    kernels: str = setting("choice", "auto", "selective-scan implementation (dnadiff.ops)", choices=KERNELS)
    conjoin: bool = setting("bool", False, "average the logits of both strands at inference (Ph)")
    rc_aug: bool = setting("bool", False, "reverse-complement augmentation inside the model (Ph)")

    def __post_init__(self):
        super().__post_init__()
        if self.num_outputs > self.embed_size:  # a cross-check: the logits cover real tokens only
            raise ConfigError(f"model.num_outputs={self.num_outputs!r} is out of range: use an integer from 1 to "
                              f"{self.embed_size} (at most embed_size)")
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

    embed_size: int = setting("int", doc="rows of the token embedding (> num_outputs: the mask id is num_outputs)",
                              lo=1)
    num_outputs: int = setting("int", doc="real tokens the logits range over (V)", lo=1)
    d_model: int = setting("int", 256, "hidden width (a multiple of 2 * n_head)", lo=1)
    n_layer: int = setting("int", 4, "transformer blocks", lo=1)
    n_head: int = setting("int", 4, "attention heads", lo=1)
    max_len: int = setting("int", 1024, "longest sequence", lo=1)
    time_conditioning: bool = setting("bool", False, "condition on the diffusion time t")
    num_classes: int = setting("int", 0, "class labels (0: unconditional)", lo=0)
    dropout: float = setting("float", 0.0, "dropout rate", lo=0, hi=1, hi_open=True)

    def __post_init__(self):
        super().__post_init__()
        if self.embed_size <= self.num_outputs:
            raise ConfigError(f"model.embed_size={self.embed_size!r} must exceed num_outputs={self.num_outputs} "
                              "(the mask id is num_outputs): use an integer > num_outputs")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ConfigError(f"model.d_model={self.d_model} must split into {self.n_head} heads of even size: "
                              "use a multiple of 2 * n_head")


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


