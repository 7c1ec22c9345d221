"""What a pretraining run will cost, measured before it starts: a few real optimiser steps of the run's own
model, batch and window on the run's device (:func:`time_steps`), the whole run's estimate from them
(:func:`estimate_run`), a refusal of an absurd CPU run unless forced, and a warning when the learning-rate
warm-up is longer than the run (:func:`warmup_warning`)."""
from __future__ import annotations

import copy
import math
import time

import torch

from dnadiff.errors import UserError
from dnadiff.progress import human

#: a CPU run estimated to take longer than this is refused unless ``force`` (as ``sample`` refuses)
MAX_CPU_SECONDS = 12 * 3600.0
#: steps timed (the first of them, warm-up and first-use compilation, is not counted)
TIMED_STEPS = 3
#: tokens of a timed step at most: a run's larger batch x window is timed on this many and scaled (a 131k-token
#: window of the 7M model would otherwise take minutes per timed step on a CPU before the run even starts)
TIMED_TOKENS = 16_384


def run_device(device: dict) -> torch.device:
    """The torch device a Lightning device dict trains on (``auto``: CUDA when available, else the CPU)."""
    accelerator = str(device.get("accelerator", "auto"))
    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


def time_steps(module, batch_size: int, window: int, device: torch.device, steps: int = TIMED_STEPS,
               precision: str = "32-true") -> float:
    """Seconds per optimiser step of ``module``'s denoiser (a copy: the run's weights are untouched) on a
    random batch of ``batch_size`` x ``window`` tokens (the loss of every position): the median of ``steps - 1``
    timed steps after a first untimed one."""
    model = copy.deepcopy(module.model).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    vocab = int(module.diffusion.vocab_size)
    x = torch.randint(0, vocab, (batch_size, window), device=device, generator=g)
    mask = torch.ones(batch_size, window, dtype=torch.bool, device=device)
    labels = None
    if getattr(module, "num_classes", 0):
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=str(precision).startswith("bf16"))
    times = []
    for _ in range(max(2, steps)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = module.diffusion.loss(model, x, mask, labels, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    del model, opt
    return float(sorted(times[1:])[len(times[1:]) // 2])


def timed_shape(batch: int, window: int, budget: int = TIMED_TOKENS) -> tuple[int, int]:
    """(rows, length) of the timed step: the run's own batch x window when it holds at most ``budget`` tokens, else
    fewer rows, then a shorter window (time per token is nearly flat in the length for the Mamba backbones, and
    exactly linear in the rows)."""
    if batch * window <= budget:
        return batch, window
    if window <= budget:
        return max(1, budget // window), window
    return 1, budget


def estimate_run(cfg: dict, module, device: dict, start_step: int = 0, force: bool = False,
                 seconds_per_step: float | None = None) -> dict:
    """``{"seconds_per_step", "steps", "seconds", "device", "line"}`` for the remaining ``train.max_steps -
    start_step`` steps, timed with :func:`time_steps` (or the given ``seconds_per_step``); ``line`` is the one line
    to print. Raises UserError, naming a smaller config, when a CPU run would take more than
    :data:`MAX_CPU_SECONDS` and ``force`` is not set."""
    torch_device = run_device(device)
    info = getattr(module, "data_info", None)  # the data's own length (text, pixels, DHS)
    window, batch = int(getattr(info, "window", None) or cfg["data"]["window"]), int(cfg["data"]["batch_size"])
    if seconds_per_step is None:
        rows, length = timed_shape(batch, window)
        measured = time_steps(module, rows, length, torch_device, precision=device.get("precision", "32-true"))
        seconds_per_step = measured * (batch * window) / (rows * length)
    steps = max(0, int(cfg["train"]["max_steps"]) - int(start_step))
    seconds = seconds_per_step * steps
    tokens = batch * window / seconds_per_step if seconds_per_step > 0 else math.inf
    line = (f"estimate: {steps:,} steps at {seconds_per_step:.3g} s/step on {torch_device.type} "
            f"({tokens:,.0f} tokens/s) = about {human(seconds)} of training (validation extra)")
    if torch_device.type == "cpu" and seconds > MAX_CPU_SECONDS and not force:
        raise UserError(f"this run needs about {human(seconds)} on the CPU ({steps:,} steps at {seconds_per_step:.3g} s "
                        f"each, window {window}, batch {batch}): use --config demo (or lower --max-steps, "
                        "data.window, data.batch_size), run it on a GPU, or add --force to run it anyway")
    return {"seconds_per_step": seconds_per_step, "steps": steps, "seconds": seconds, "device": torch_device.type,
            "line": line}


def warmup_warning(cfg: dict) -> str | None:
    """A warning when ``optim.warmup_steps`` exceeds the run's steps (the learning rate never reaches its peak:
    20 steps of a 1,000-step warm-up end at 2% of it); None otherwise."""
    warmup, steps = int(cfg["optim"].get("warmup_steps") or 0), int(cfg["train"]["max_steps"])
    if warmup <= steps:
        return None
    return (f"warning: optim.warmup_steps={warmup:,} exceeds the run's {steps:,} steps: the learning rate ends at "
            f"{steps / warmup:.0%} of its peak; set optim.warmup_steps={max(1, steps // 10)} (10% of the run) or fewer")
