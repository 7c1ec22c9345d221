"""Checkpoints: atomic writes, safe loads (``weights_only=True``), the exported ``model.pt``.

Imports no Lightning (the Lightning checkpoint IO plugin is in :mod:`dnadiff.training.callbacks`);
loading a model from any source is :mod:`dnadiff.checkpoints.sources`.

A dnadiff model file is the typed record :class:`ModelFile`; on disk it is a plain dict (tensors, numbers, strings,
lists, dicts only, so ``torch.load(weights_only=True)`` reads it): ``{"format": "dnadiff-model/1", "model":
<build_model spec>, "diffusion": {...}, "state_dict": <denoiser weights (EMA)>, "data": <DataInfo.to_dict()>,
"metrics": {...}, "genmd4": <learned process parameters>}`` (+ ``"original"`` for a converted original checkpoint).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dnadiff.atomic import atomic_write
from dnadiff.data.info import DataInfo
from dnadiff.errors import UserError
from dnadiff.migrations import process_state
from dnadiff.paths import require_file

MODEL_FORMAT = "dnadiff-model/1"


def save_checkpoint(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` (a dict, or a record with ``to_dict()`` such as :class:`ModelFile`) with ``torch.save``
    atomically (temp file + os.replace)."""
    plain = payload.to_dict() if hasattr(payload, "to_dict") else payload
    return atomic_write(path, lambda f: torch.save(plain, f))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; UserError if missing or corrupt."""

    path = require_file(path, "checkpoint", "check the path (a pretraining run writes OUT/model.pt and "
                                             "OUT/checkpoints/last.ckpt)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(err))
        if "Weights only load failed" in str(err) and found:  # a pickled object beyond tensors and plain values
            what = f" ({found.group(1)})"
            raise UserError(f"checkpoint {path} holds pickled Python objects{what} that dnadiff never loads (they "
                            "could run code): it is not a dnadiff or Lightning checkpoint, or it was tampered "
                            "with; use a model.pt written by dnadiff or an original Caduceus folder") from None
        detail = "its pickled data cannot be read" if "Weights only load failed" in str(err) else _first_line(err)
        raise UserError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({detail}): "
                        "re-create it or point to another file") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({first[:160]}): "
                        f"re-create it or point to another file") from None
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict: point to a "
                        f"dnadiff model.pt, a Lightning .ckpt or a state dict")
    return obj


@dataclass
class ModelFile:
    """A dnadiff model file (``model.pt``, or what any other source converts into).

    Fields: ``model`` (the :func:`dnadiff.models.build_model` spec), ``diffusion`` (the
    :func:`dnadiff.diffusion.build_diffusion` spec), ``state_dict`` (the denoiser's weights, EMA when trained
    with one), ``data`` (:class:`~dnadiff.data.info.DataInfo`), ``metrics`` (the run's summary),
    ``process_state`` (a learnable process's parameters, e.g. GenMD4's ``raw_w``; ``"genmd4"`` on disk),
    ``original`` (a converted original Caduceus checkpoint: ``{"config", "embedding" [V_orig, d], "source"}``,
    which ``dnadiff export`` writes back), ``extra`` (other top-level entries, kept as read).
    """

    model: dict
    diffusion: dict
    state_dict: dict
    data: DataInfo = field(default_factory=DataInfo)
    metrics: dict = field(default_factory=dict)
    process_state: dict = field(default_factory=dict)
    original: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.data = DataInfo.from_dict(self.data)
        self.model, self.diffusion = dict(self.model), dict(self.diffusion)
        self.metrics, self.process_state = dict(self.metrics or {}), dict(self.process_state or {})

    def to_dict(self) -> dict:
        """The plain mapping ``torch.save`` writes (see the module docstring)."""
        out = {**self.extra, "format": MODEL_FORMAT, "model": dict(self.model), "diffusion": dict(self.diffusion),
               "state_dict": self.state_dict, "data": self.data.to_dict(), "metrics": dict(self.metrics),
               "genmd4": dict(self.process_state)}
        if self.original is not None:
            out["original"] = self.original
        return out

    @classmethod
    def from_dict(cls, payload: dict, where: str = "the checkpoint") -> "ModelFile":
        """The record of a ``dnadiff-model/1`` mapping. UserError naming ``where`` when it is not one, or an
        entry has the wrong type."""
        if payload.get("format") != MODEL_FORMAT:
            raise UserError(f"{where} is not a dnadiff model checkpoint (no 'format: {MODEL_FORMAT}'): use the "
                            "model.pt written by `dnadiff pretrain`, its .ckpt, or an original Caduceus folder")
        for key in ("model", "diffusion", "state_dict"):
            if not isinstance(payload.get(key), dict):
                raise UserError(f"{where} has no {key} mapping (found {type(payload.get(key)).__name__}): the file "
                                "is damaged or from another version; re-create it")
        for key in ("metrics", "genmd4", "original"):
            if payload.get(key) is not None and not isinstance(payload[key], dict):
                raise UserError(f"{where}: its {key} entry is a {type(payload[key]).__name__}, not a mapping: the "
                                "file is damaged or from another version; re-create it")
        own = {"format", "model", "diffusion", "state_dict", "data", "metrics", "genmd4", "original"}
        return cls(payload["model"], payload["diffusion"], payload["state_dict"],
                   DataInfo.from_dict(payload.get("data"), where), payload.get("metrics") or {},
                   payload.get("genmd4") or {}, payload.get("original"),
                   {k: v for k, v in payload.items() if k not in own})


def model_payload_from_lightning(ckpt: dict, where: str = "the checkpoint") -> ModelFile:
    """The :class:`ModelFile` stored inside a Lightning checkpoint of a DiffusionModule."""
    hp = ckpt.get("hyper_parameters") or {}
    if "model_spec" not in hp:
        raise UserError("this Lightning checkpoint was not written by `dnadiff pretrain`: no model spec inside")
    ema = ckpt.get("ema")
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if ema is not None:
        state.update({k: v for k, v in ema["shadow"].items()})
    return ModelFile(hp["model_spec"], hp["diffusion_spec"], state, DataInfo.from_dict(hp.get("data_info"), where),
                     process_state=process_state(ckpt["state_dict"]))


def build_process(spec: dict):
    """:func:`dnadiff.diffusion.build_diffusion` with bad settings reported as a :class:`UserError`."""
    from dnadiff.diffusion import build_diffusion

    try:
        return build_diffusion(spec)
    except ValueError as err:
        raise UserError(str(err)) from None
