"""Where an output came from: ``provenance.json`` in every output folder (pretraining run, fine-tuning results,
beside a sampled FASTA), so a figure or a FASTA can be traced back and reproduced.

    write_provenance("runs/demo", config=cfg, device="cuda:0 (NVIDIA H100)")
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from dnadiff.atomic import atomic_write
from dnadiff.version import __version__

PROVENANCE_FILE = "provenance.json"
#: the command line the CLI ran (set by :func:`dnadiff.cli.main`); None: ``sys.argv``
_COMMAND: list[str] | None = None


def set_command(argv: list[str] | None) -> None:
    """Record the command line that provenance files name (the CLI sets ``["dnadiff", *argv]``)."""
    global _COMMAND
    _COMMAND = None if argv is None else [str(a) for a in argv]


def describe_device(device=None) -> str:
    """A device in words: ``cpu (2 threads)``, ``cuda (NVIDIA H100 80GB HBM3)``; ``device`` may be a
    ``torch.device``, a Lightning device dict (``{"accelerator": ..., "devices": ...}``) or a string."""
    import torch

    if isinstance(device, dict):
        accelerator = str(device.get("accelerator", "auto"))
        if accelerator == "auto":
            accelerator = "cuda" if torch.cuda.is_available() else "cpu"
        device = f"{accelerator} x {device.get('devices', 1)}" if accelerator != "cpu" else "cpu"
    text = str(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if text.startswith(("cuda", "gpu")) and torch.cuda.is_available():
        return f"{text} ({torch.cuda.get_device_name(0)})"
    if text.startswith("cpu"):
        return f"{text} ({torch.get_num_threads()} threads)"
    return text


def provenance(config: dict | None = None, device=None, extra: dict | None = None, argv: list[str] | None = None) -> dict:
    """``{"command", "config", "dnadiff", "torch", "lightning", "python", "platform", "device", "time", ...extra}``:
    the resolved ``config`` (any JSON-able dict), the package versions, the device in words, the command line
    (``argv``, default: the CLI's, else ``sys.argv``) and the UTC time."""
    import torch


    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:  # pragma: no cover - a dependency
        lightning_version = None
    argv = list(argv if argv is not None else _COMMAND if _COMMAND is not None else sys.argv)
    if argv and (Path(argv[0]).name == "dnadiff" or argv[0].endswith("dnadiff/__main__.py")):
        argv[0] = "dnadiff"
    return {
        "command": " ".join(argv),
        "argv": argv,
        "config": config,
        "dnadiff": __version__,
        "torch": torch.__version__,
        "lightning": lightning_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": describe_device(device),
        "cwd": os.getcwd(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def write_provenance(target: str | os.PathLike, config: dict | None = None, device=None, extra: dict | None = None,
                     argv: list[str] | None = None) -> Path:
    """Write :func:`provenance` atomically: ``target/provenance.json`` for a folder, ``target`` itself for a
    path ending in ``.json``. Returns the path."""
    target = Path(target)
    path = target if target.suffix == ".json" else target / PROVENANCE_FILE
    text = json.dumps(provenance(config, device, extra, argv), indent=1, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def draw_seed() -> int:
    """A fresh seed in [0, 2**32) from the operating system (for a run the user gave no seed: it is then
    recorded and printed, so the run can be repeated with it)."""
    import secrets

    return secrets.randbelow(2**32)


def fasta_description(model: str, sampler: str, steps, seed: int, class_name: str | None = None,
                      guidance: float = 0.0, **extra) -> str:
    """The description that follows a sampled record's name in its FASTA header:
    ``model=runs/demo/model.pt sampler=cached steps=64 seed=7`` (then ``class=K562 guidance=2.0`` when
    conditional, then ``extra`` as ``key=value``); whitespace in a value is written ``%20``."""
    items = {"model": model, "sampler": sampler, "steps": steps, "seed": seed}
    if class_name is not None:
        items["class"] = class_name
        items["guidance"] = guidance
    items.update({k: v for k, v in extra.items() if v is not None})
    return " ".join(f"{k}={str(v).replace(' ', '%20').replace(chr(9), '%09')}" for k, v in items.items())
