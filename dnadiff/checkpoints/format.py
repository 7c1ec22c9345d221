"""Checkpoints: atomic writes, safe loads (``weights_only=True``), the exported ``model.pt``.

Imports no Lightning (the Lightning checkpoint IO plugin is in :mod:`dnadiff.training.callbacks`);
loading a model from any source is :mod:`dnadiff.checkpoints.sources`.

A dnadiff model checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only):
``{"format": "dnadiff-model/1", "model": <build_model spec>, "diffusion": {...}, "state_dict":
<denoiser weights (EMA)>, "data": {...}, "metrics": {...}}``.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from dnadiff.atomic import atomic_write
from dnadiff.errors import UserError
from dnadiff.paths import require_file

MODEL_FORMAT = "dnadiff-model/1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` with ``torch.save`` atomically (temp file + os.replace)."""
    return atomic_write(path, lambda f: torch.save(payload, f))


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


def model_payload(model_spec: dict, diffusion_spec: dict, state_dict: dict, data_info: dict | None = None,
                  metrics: dict | None = None, genmd4: dict | None = None) -> dict:
    """The ``model.pt`` payload (plain types and tensors only)."""
    return {"format": MODEL_FORMAT, "model": dict(model_spec), "diffusion": dict(diffusion_spec),
            "state_dict": state_dict, "data": dict(data_info or {}), "metrics": dict(metrics or {}),
            "genmd4": dict(genmd4 or {})}


def model_payload_from_lightning(ckpt: dict) -> dict:
    """The ``model.pt`` payload stored inside a Lightning checkpoint of a DiffusionModule."""
    hp = ckpt.get("hyper_parameters") or {}
    if "model_spec" not in hp:
        raise UserError("this Lightning checkpoint was not written by `dnadiff pretrain`: no model spec inside")
    ema = ckpt.get("ema")
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if ema is not None:
        state.update({k: v for k, v in ema["shadow"].items()})
    learned = {k.partition(".")[2]: v for k, v in ckpt["state_dict"].items()
               if k.startswith(("diffusion.", "genmd4."))}  # a learnable process (GenMD4; "genmd4." before issue 13)
    return model_payload(hp["model_spec"], hp["diffusion_spec"], state, hp.get("data_info"), genmd4=learned)


def build_process(spec: dict):
    """:func:`dnadiff.diffusion.build_diffusion` with bad settings reported as a :class:`UserError`."""
    from dnadiff.diffusion import build_diffusion

    try:
        return build_diffusion(spec)
    except ValueError as err:
        raise UserError(str(err)) from None
