"""The device options every command shares (``--accelerator``, ``--devices``; training commands also
``--precision``, ``--strategy``); their meaning and checks are the library's (:mod:`dnadiff.devices`)."""
from __future__ import annotations

import argparse

from dnadiff.devices import ACCELERATORS
from dnadiff.config import PRECISIONS


def add_device_arguments(parser: argparse.ArgumentParser, training: bool = True) -> None:
    """Add ``--accelerator``, ``--devices`` (and for training commands ``--precision``, ``--strategy``)."""
    group = parser.add_argument_group("devices")
    group.add_argument("--accelerator", default="auto", choices=ACCELERATORS,
                       help="auto (GPU when CUDA is available), cpu or gpu")
    group.add_argument("--devices", default="1", help="devices per node: N, auto, or a list such as 0,1 (default 1)")
    if training:
        group.add_argument("--precision", default="auto", choices=PRECISIONS,  # the config tree's train.precision
                           help="auto: bf16-mixed on a GPU, 32-true on the CPU")
        group.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, fsdp, ddp_spawn, ...")

def device_options(args: argparse.Namespace) -> dict:
    """The device keyword arguments of a library call from the parsed options."""
    options = {"accelerator": args.accelerator, "devices": args.devices}
    for name in ("precision", "strategy"):
        if hasattr(args, name):
            options[name] = getattr(args, name)
    return options

def torch_device(args: argparse.Namespace):
    """The ``torch.device`` of a single-device command (evaluate, sample, score, ...) from its options."""
    from dnadiff.devices import torch_device as resolve  # imports torch: only when a command runs

    return resolve(args.accelerator, args.devices)
