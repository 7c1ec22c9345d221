"""Device options shared by every command (``pretrain``, ``finetune``, ``evaluate``, ``sample``): one
convention, parsed and checked in one place.

    --accelerator auto|cpu|gpu   (auto: the GPU when CUDA is available, else the CPU)
    --devices N|auto|0,1         (devices per node; evaluate and sample use the first)
    --precision auto|32-true|bf16-mixed|16-mixed   (auto: bf16-mixed on a GPU, 32-true on the CPU)
    --strategy auto|ddp|fsdp|... (Lightning strategy; training commands only)
"""
from __future__ import annotations

import argparse

from dnadiff.errors import UserError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "64-true", "64")


def add_device_arguments(parser: argparse.ArgumentParser, training: bool = True) -> None:
    """Add ``--accelerator``, ``--devices`` (and for training commands ``--precision``, ``--strategy``)."""
    group = parser.add_argument_group("devices")
    group.add_argument("--accelerator", default="auto", choices=ACCELERATORS,
                       help="auto (GPU when CUDA is available), cpu or gpu")
    group.add_argument("--devices", default="1", help="devices per node: N, auto, or a list such as 0,1 (default 1)")
    if training:
        group.add_argument("--precision", default="auto", choices=PRECISIONS,
                           help="auto: bf16-mixed on a GPU, 32-true on the CPU")
        group.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, fsdp, ddp_spawn, ...")


def check_accelerator(accelerator: str) -> str:
    """``"cpu"`` or ``"gpu"`` for a requested accelerator; UserError for a GPU on a machine without CUDA."""
    import torch

    if accelerator not in ACCELERATORS:
        raise UserError(f"unknown --accelerator {accelerator!r}: use auto, cpu or gpu")
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError("--accelerator gpu but PyTorch sees no CUDA GPU here: use --accelerator cpu (or auto), "
                        "or install a CUDA build of PyTorch")
    return "gpu" if accelerator == "cuda" else accelerator


def parse_devices(devices: str | int) -> int | str | list[int]:
    """``"auto"``, a count (``"2"`` -> 2) or a list of device ids (``"0,1"`` -> [0, 1]); UserError otherwise."""
    if isinstance(devices, int):
        value = devices
    elif str(devices).strip() == "auto":
        return "auto"
    elif "," in str(devices):
        try:
            ids = [int(x) for x in str(devices).split(",") if x.strip()]
        except ValueError:
            ids = []
        if not ids or min(ids) < 0:
            raise UserError(f"bad --devices {devices!r}: give a count (1), auto, or device ids such as 0,1")
        return ids
    else:
        try:
            value = int(devices)
        except ValueError:
            raise UserError(f"bad --devices {devices!r}: give a count (1), auto, or device ids such as 0,1") from None
    if value < 1:
        raise UserError(f"--devices {value}: give at least 1 device")
    return value


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning precision: ``auto`` is bf16-mixed on a GPU and 32-true on the CPU; others pass through
    (a half precision on the CPU is a UserError)."""
    kind = check_accelerator(accelerator)
    if precision in (None, "auto"):
        return "bf16-mixed" if kind == "gpu" else "32-true"
    if kind == "cpu" and precision == "16-mixed":
        raise UserError("--precision 16-mixed needs a GPU: use 32-true or bf16-mixed on the CPU")
    return precision


def lightning_device_kwargs(args) -> dict:
    """``accelerator``, ``devices``, ``precision``, ``strategy`` for ``lightning.Trainer`` from parsed options."""
    kind = check_accelerator(args.accelerator)
    return {"accelerator": kind, "devices": parse_devices(args.devices),
            "precision": resolve_precision(getattr(args, "precision", "auto"), args.accelerator),
            "strategy": getattr(args, "strategy", "auto") or "auto"}


def torch_device(args):
    """The one ``torch.device`` of a single-device command (evaluate, sample): the first of ``--devices``."""
    import torch

    devices = parse_devices(args.devices)  # a malformed --devices is refused on the CPU too
    if check_accelerator(args.accelerator) == "cpu":
        return torch.device("cpu")
    index = devices[0] if isinstance(devices, list) else 0
    if index >= torch.cuda.device_count():
        raise UserError(f"--devices {args.devices}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
