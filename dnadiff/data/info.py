"""What a model was trained on: the typed record every checkpoint stores under ``"data"``.

:class:`DataInfo` replaces the plain dicts that the data builders returned and every reader indexed by string. On
disk it stays a plain mapping (``to_dict``), so ``torch.load(weights_only=True)`` reads it and files written before
the record existed load unchanged: :meth:`DataInfo.from_dict` is the one place that reads an older or foreign
``data`` entry (a file with only ``modality`` and ``window``, as the first versions wrote, gets the DNA sizes), and
checks each known key's type. A key this version does not know is kept in ``extra`` and written back, never read.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from dnadiff.alphabet import EMBED_SIZE, NUM_BASES
from dnadiff.data.modality import Modality, modality_of
from dnadiff.errors import UserError
from dnadiff.keys import check_stored


@dataclass(frozen=True)
class DataInfo:
    """The data a model was trained on.

    Every modality: ``modality`` (``dna``, ``text``, ``pixels``), ``window`` (training length L), ``vocab_size``
    (V, the diffusion's tokens), ``embed_size`` (embedding rows: V + mask, or the DNA tokenizer's 7),
    ``unit`` and ``uniform_bits`` (how held-out scores are reported, and the uniform model's score in it),
    ``class_names`` (labels of a class-conditional model; empty otherwise), ``batch_size``, ``num_workers``.

    Where the data came from and how it was split, so the same data can be rebuilt: DNA ``genome`` (FASTA) or
    ``dhs`` (table), ``bed``, ``val_contigs``, ``test_contigs``, ``holdout_frac``, ``max_n_frac``, ``rc_aug``,
    ``max_eval_windows``; text ``text``, ``text_level``, ``val_fraction``, ``test_fraction``, ``num_tokens``;
    pixels ``images``, ``pixel_order``, ``shape``, ``num_images``. Fields a modality does not use are None.
    """

    modality: str = "dna"
    window: int | None = None
    vocab_size: int = NUM_BASES
    embed_size: int = EMBED_SIZE
    unit: str = "bits/nt"
    uniform_bits: float = 2.0
    class_names: tuple[str, ...] = ()
    batch_size: int | None = None
    num_workers: int | None = None
    genome: str | None = None
    dhs: str | None = None
    bed: str | None = None
    val_contigs: tuple[str, ...] = ()
    test_contigs: tuple[str, ...] = ()
    holdout_frac: float | None = None
    max_n_frac: float | None = None
    rc_aug: bool | None = None
    max_eval_windows: int | None = None
    text: str | None = None
    text_level: str | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    num_tokens: dict | None = None
    images: str | None = None
    pixel_order: str | None = None
    shape: tuple[int, ...] | None = None
    num_images: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        modality_of(self.modality)  # a UserError naming the modalities

    @property
    def kind(self) -> Modality:
        """The :class:`~dnadiff.data.modality.Modality` (what the rest of the package does with this data)."""
        return modality_of(self.modality)

    @property
    def conditional(self) -> bool:
        """True for a class-conditional model (``class_names`` given)."""
        return bool(self.class_names)

    def to_dict(self) -> dict:
        """The plain mapping stored in a checkpoint: lists for tuples, unset (None) fields left out, ``extra``
        written back as read."""
        out: dict = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else (dict(value) if isinstance(value, dict) else value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping | "DataInfo" | None, where: str = "the checkpoint") -> "DataInfo":
        """The record of a checkpoint's ``data`` entry (a mapping; None or missing keys take the defaults: DNA).

        Raises:
            UserError: a known key holds a value of the wrong type, naming the key and ``where``.
        """
        if isinstance(data, DataInfo):
            return data
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: its data entry is a {type(data).__name__}, not a mapping: the file is damaged "
                            "or was not written by dnadiff")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        values, extra = {}, {}
        for key, value in data.items():
            if key not in known:
                extra[key] = value
            elif value is not None:
                values[key] = check_stored(value, _KINDS[key], f"data.{key}", where,
                                           "the file is damaged or from another version; re-create it")
        return cls(**values, extra=extra)


#: each field's stored type (:data:`dnadiff.keys.STORED_KINDS`)
_KINDS = {"window": "int", "vocab_size": "int", "embed_size": "int", "batch_size": "int", "num_workers": "int",
          "max_eval_windows": "int", "uniform_bits": "float", "holdout_frac": "float", "max_n_frac": "float",
          "val_fraction": "float", "test_fraction": "float", "rc_aug": "bool", "modality": "str", "unit": "str",
          "genome": "str", "dhs": "str", "bed": "str", "text": "str", "text_level": "str", "images": "str",
          "pixel_order": "str", "class_names": "strs", "val_contigs": "strs", "test_contigs": "strs",
          "shape": "ints", "num_tokens": "map", "num_images": "map"}
