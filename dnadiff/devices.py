"""Devices, one convention for every job (library side; ``dnadiff/commands/devices.py`` adds the options).

    accelerator: auto | cpu | gpu   (auto: the GPU when CUDA is available, else the CPU)
    devices:     N | "auto" | "0,1" | [0, 1]   (devices per node; evaluate and sampling use the first)
    precision:   auto | 32-true | bf16-mixed | 16-mixed | ...   (auto: bf16-mixed on a GPU, 32-true on the CPU)
    strategy:    auto | ddp | fsdp | ...  (a Lightning strategy; training jobs only)

Errors are :class:`dnadiff.errors.ParameterError` naming the parameter (the CLI shows it as its option).
"""
from __future__ import annotations

from dnadiff.errors import ParameterError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def check_accelerator(accelerator: str) -> str:
    """``"cpu"`` or ``"gpu"`` for a requested accelerator; ParameterError for a GPU on a machine without CUDA."""
    import torch

    if accelerator not in ACCELERATORS:
        raise ParameterError("accelerator", f"accelerator={accelerator!r} is unknown: use auto, cpu or gpu")
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ParameterError("accelerator", "accelerator=gpu but PyTorch sees no CUDA GPU here: use cpu "
                                            "(--accelerator cpu, or auto), or install a CUDA build of PyTorch")
    return "gpu" if accelerator == "cuda" else accelerator


def parse_devices(devices) -> int | str | list[int]:
    """``"auto"``, a count (``"2"`` -> 2) or a list of device ids (``"0,1"`` or [0, 1] -> [0, 1]); ParameterError otherwise."""
    bad = ParameterError("devices", f"devices={devices!r} is not a device request: give a count (1), auto, "
                                    "or device ids such as 0,1")
    if isinstance(devices, bool):
        raise bad
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices):
            raise bad
        return list(devices)
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
            raise bad
        return ids
    else:
        try:
            value = int(devices)
        except (TypeError, ValueError):
            raise bad from None
    if value < 1:
        raise ParameterError("devices", f"devices={value} asks for no device: give at least 1")
    return value


def resolve_precision(precision: str | None, accelerator: str) -> str:
    """Lightning precision: ``auto`` is bf16-mixed on a GPU and 32-true on the CPU; others pass through
    (16-mixed on the CPU is a ParameterError)."""
    kind = check_accelerator(accelerator)
    if precision in (None, "auto"):
        return "bf16-mixed" if kind == "gpu" else "32-true"
    if kind == "cpu" and precision == "16-mixed":
        raise ParameterError("precision", "precision=16-mixed needs a GPU: use 32-true or bf16-mixed on the CPU")
    return precision


def lightning_devices(accelerator: str = "auto", devices="1", precision: str | None = "auto",
                      strategy: str | None = "auto") -> dict:
    """``accelerator``, ``devices``, ``precision``, ``strategy`` keyword arguments for ``lightning.Trainer``."""
    kind = check_accelerator(accelerator)
    return {"accelerator": kind, "devices": parse_devices(devices),
            "precision": resolve_precision(precision, accelerator), "strategy": strategy or "auto"}


def torch_device(accelerator: str = "auto", devices="1"):
    """The one ``torch.device`` of a single-device job (evaluate, sampling, scoring): the first of ``devices``."""
    import torch

    ids = parse_devices(devices)  # a malformed request is refused on the CPU too
    if check_accelerator(accelerator) == "cpu":
        return torch.device("cpu")
    index = ids[0] if isinstance(ids, list) else 0
    if index >= torch.cuda.device_count():
        raise ParameterError("devices", f"devices={devices}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
