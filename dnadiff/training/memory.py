"""Peak-memory estimate of a training run, and the check that refuses a run that cannot fit.

What a training step holds at its peak, per device:

* fixed: the weights, their gradients, AdamW's two moments and the EMA copy (5 x the parameter bytes)
  plus the runtime itself (:data:`RUNTIME_BYTES`);
* per token (x batch x window): what autograd keeps for the backward. It is *measured*, not guessed:
  :func:`profile_activations` runs the model's forward at two short lengths with saved-tensor hooks and
  counts the distinct storages saved, attributed to each block (through
  :func:`dnadiff.models.checkpointing.block_probe`) or to the rest (embedding, head, loss); the
  difference between the two lengths gives bytes per token (weights saved by the layers cancel);
* the backward's working memory: the gradients of one block's activations while that block is
  differentiated, taken as :data:`WORK_FACTOR` x the largest block's saved bytes.

With activation checkpointing in groups of k blocks (``train.activation_checkpointing``) the backward
keeps only each group's inputs (hidden + residual) plus, while a group is recomputed, that group's own
activations. The probe runs in float32 on the CPU: under bf16 mixed precision the real figure is smaller,
so the estimate errs on the side of refusing late rather than early, and ``train.memory_check=false``
skips the check. ``benchmarks/long_context.py`` prints the estimate next to the measured peak RSS.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from dnadiff.errors import ConfigError, UserError
from dnadiff.models.checkpointing import Probe, block_probe, checkpointed_modules, set_activation_checkpointing

__all__ = ["ActivationProfile", "profile_activations", "estimate_peak_bytes", "device_memory_bytes",
           "resolve_checkpointing", "check_fits", "prepare_memory", "trainer_device", "reuse_freed_memory", "AUTO_CHECKPOINT_WINDOW"]

#: ``train.activation_checkpointing: auto`` turns checkpointing on for windows longer than this
AUTO_CHECKPOINT_WINDOW = 4096
RUNTIME_BYTES = 600 * 2**20  # Python, torch, Lightning, the data pipeline (measured RSS before the first step)
WORK_FACTOR = 2.0  # backward working memory in units of the largest block's saved activations
STATE_TENSORS_PER_PARAM = 5  # weights, gradients, AdamW exp_avg and exp_avg_sq, EMA shadow
PROBE_LENGTHS = (128, 256)
REUSE_HEADROOM = 2.0  # reuse_freed_memory only where this many times the estimated peak fits


@dataclass(frozen=True)
class ActivationProfile:
    """Bytes per token (batch 1) a model keeps for its backward, measured by :func:`profile_activations`.

    blocks: per block, what it saves in a plain forward; lean_blocks: what it saves when it is recomputed
    under checkpointing (its inner recomputed sections keep only their inputs); section: the largest
    inner section's own saves (held while that section is differentiated); outside: embedding, final
    norm, head and loss; boundary: one block's input (what a checkpointed group keeps); param_bytes:
    the distinct parameters' bytes."""

    blocks: tuple[float, ...]
    lean_blocks: tuple[float, ...]
    section: float
    outside: float
    boundary: float
    param_bytes: int

    def activation_bytes_per_token(self, every: int = 0) -> float:
        """Bytes per token at the backward's peak with checkpointing in groups of ``every`` blocks (0: off)."""
        n = len(self.blocks)
        if every <= 0 or n == 0:
            return self.outside + sum(self.blocks) + WORK_FACTOR * max(self.blocks, default=0.0)
        groups = [self.lean_blocks[i:i + every] for i in range(0, n, every)]
        work = WORK_FACTOR * (self.section or max(self.lean_blocks))
        return self.outside + len(groups) * self.boundary + max(sum(g) for g in groups) + work

    def inference_bytes_per_token(self) -> float:
        """Bytes per token of a no-grad forward: the running state plus one block's intermediates."""
        return self.boundary + max(self.blocks, default=0.0) + self.outside / 2


def profile_activations(model: nn.Module, lengths: tuple[int, int] = PROBE_LENGTHS) -> ActivationProfile:
    """Measure what ``model`` (a denoiser: (z_t [B, L], t [B]) -> logits [B, L, V]) saves for its backward.

    Runs two training-mode forwards (batch 1, lengths ``lengths``) on the model's device with grad enabled
    but no backward; the global RNG state is restored afterwards (a resumed run draws the same numbers).
    Returns an :class:`ActivationProfile` in bytes per token (linear in the length: right for Mamba; for a
    transformer, whose attention is quadratic, a lower bound beyond the probed lengths)."""
    device = next(model.parameters()).device
    vocab = int(getattr(model, "num_outputs", 4))
    limit = getattr(model, "max_len", None)  # a transformer's rotary tables end there
    if limit is not None and lengths[1] > int(limit):
        lengths = (max(1, int(limit) // 2), int(limit))
    a, b = (_saved_bytes(model, length, vocab, device) for length in lengths)
    span = lengths[1] - lengths[0]

    def slope(key):
        return tuple(max(0.0, (y - x) / span) for x, y in zip(a[key], b[key]))

    params = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    return ActivationProfile(blocks=slope("blocks"), lean_blocks=slope("lean"),
                             section=max(0.0, (b["section"] - a["section"]) / span),
                             outside=max(0.0, (b["outside"] - a["outside"]) / span),
                             boundary=max(0.0, (b["boundary"] - a["boundary"]) / span),
                             param_bytes=sum(params.values()))


class _Counter(Probe):
    """Counts distinct saved storages per block, per inner section, and outside the blocks."""

    def __init__(self, parameters):
        self.seen = {p.untyped_storage().data_ptr() for p in parameters}  # weights are not activations
        self.index, self.in_section, self.section_bytes = None, False, 0.0
        self.blocks: dict[int, float] = {}
        self.inner: dict[int, float] = {}
        self.inputs: dict[int, float] = {}
        self.input_seen: set[int] = set()
        self.outside, self.boundary, self.largest_section = 0.0, 0.0, 0.0

    def block(self, index, state):
        self.index = index
        size = sum(t.numel() * t.element_size() for t in state if isinstance(t, torch.Tensor))
        self.boundary = max(self.boundary, float(size))

    def section(self, inputs):
        self.in_section, self.section_bytes = True, 0.0
        for t in inputs:
            if isinstance(t, torch.Tensor) and self.index is not None:
                key = t.untyped_storage().data_ptr()
                if key not in self.input_seen:
                    self.input_seen.add(key)
                    self.inputs[self.index] = self.inputs.get(self.index, 0.0) + t.untyped_storage().nbytes()

    def section_end(self):
        self.in_section = False
        self.largest_section = max(self.largest_section, self.section_bytes)

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.seen:
            return tensor
        self.seen.add(key)
        nbytes = float(storage.nbytes())
        if self.index is None:
            self.outside += nbytes
        else:
            self.blocks[self.index] = self.blocks.get(self.index, 0.0) + nbytes
            if self.in_section:
                self.inner[self.index] = self.inner.get(self.index, 0.0) + nbytes
                self.section_bytes += nbytes
        return tensor


def _saved_bytes(model: nn.Module, length: int, vocab: int, device) -> dict:
    """Bytes saved at batch 1 and this length: per block (plain and lean), largest section, outside, boundary."""
    counter = _Counter(model.parameters())
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        z = torch.randint(0, vocab, (1, length), device=device)
        t = torch.full((1,), 0.5, device=device)
        try:
            model.train()
            with (torch.enable_grad(), block_probe(counter),
                  torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda x: x)):
                out = model(z, t)
                loss = out.float().logsumexp(-1).sum()
                del out, loss
        finally:
            model.train(was_training)
    n = 1 + max(counter.blocks, default=-1)
    blocks = [counter.blocks.get(i, 0.0) for i in range(n)]
    lean = [blocks[i] - counter.inner.get(i, 0.0) + counter.inputs.get(i, 0.0) for i in range(n)]
    return {"blocks": blocks, "lean": lean, "section": counter.largest_section, "outside": counter.outside,
            "boundary": counter.boundary}


def estimate_peak_bytes(profile: ActivationProfile, window: int, batch: int, every: int = 0,
                        training: bool = True) -> float:
    """Estimated peak bytes of one device: training (fixed state + activations) or a no-grad forward."""
    tokens = window * batch
    if not training:
        return RUNTIME_BYTES + profile.param_bytes + tokens * profile.inference_bytes_per_token()
    return (RUNTIME_BYTES + STATE_TENSORS_PER_PARAM * profile.param_bytes
            + tokens * profile.activation_bytes_per_token(every))


def device_memory_bytes(device: torch.device | str, processes: int = 1) -> int | None:
    """Memory one training process may use on ``device``: a CUDA device's free memory, or on the CPU the
    available RAM (MemAvailable, capped by a cgroup limit) shared by ``processes``; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            available = int(raw) if available is None else min(available, int(raw))
    if available is None:
        return None
    return available // max(1, processes)


def resolve_checkpointing(value, window: int) -> int:
    """``train.activation_checkpointing`` (auto, true, false or k) -> group size k (0: off)."""
    if value == "auto":
        return 1 if window > AUTO_CHECKPOINT_WINDOW else 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    raise ConfigError(f"train.activation_checkpointing={value!r} is not allowed: use auto, true, false or "
                      "an integer k >= 1 (checkpoint groups of k blocks)")


def _gb(x: float) -> str:
    return f"{x / 1e9:.1f} GB"


def check_fits(profile: ActivationProfile, window: int, batch: int, every: int, capacity: int | None,
               where: str = "this device") -> float:
    """The estimated peak bytes; UserError (one line naming the fixes) when it exceeds ``capacity``."""
    need = estimate_peak_bytes(profile, window, batch, every)
    if capacity is None or need <= capacity:
        return need
    fixes = []
    if every == 0 and estimate_peak_bytes(profile, window, batch, 1) <= capacity:
        fixes.append(f"train.activation_checkpointing=true (about {_gb(estimate_peak_bytes(profile, window, batch, 1))})")
    k = max(every, 1) if every or not fixes else every
    fitting = [b for b in range(batch - 1, 0, -1) if estimate_peak_bytes(profile, window, b, k) <= capacity]
    if fitting:
        fixes.append(f"data.batch_size={fitting[0]}" + (" with checkpointing" if k and not every else ""))
    w = window
    while w > 1 and estimate_peak_bytes(profile, w, batch, k) > capacity:
        w //= 2
    if w >= 1 and estimate_peak_bytes(profile, w, batch, k) <= capacity and w < window:
        fixes.append(f"data.window={w}" + (" with checkpointing" if k and not every else ""))
    if not fixes:
        fixes.append("a smaller model or a device with more memory")
    raise UserError(f"data.window={window} x data.batch_size={batch} needs about {_gb(need)} at its peak "
                    f"(checkpointing {'every ' + str(every) + ' blocks' if every else 'off'}), {where} has "
                    f"{_gb(capacity)} free: use {' or '.join(fixes)} (train.memory_check=false skips this check)")


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def reuse_freed_memory(force: bool = False) -> bool:
    """Keep memory freed by tensors in the process heap for the next tensors of the same sizes (glibc).

    glibc serves every allocation above 32 MB (a [1, 16384, 512] float32 tensor) with a fresh ``mmap`` and
    returns it on free, so at long windows every intermediate of every block is new memory the kernel must
    fault in and zero, page by page: at 131,072 tokens that is about 12 page faults a token per forward and
    40% of the CPU time in the kernel (``benchmarks/long_context.py --allocation-check``). With
    ``M_MMAP_MAX = 0`` and no heap trimming the freed blocks are reused instead. Linux/glibc only; returns
    whether it was applied. The price: the heap never shrinks and fragments, so the peak RSS can exceed
    the live peak: measured, 470k at 131k inference 2.02 against 1.70 GB, and much more with checkpointed
    training (7M, 16 x 1024 tokens: 8.6 GB against 3.2). So it is opt-in: applied only with ``force`` or
    ``DNADIFF_REUSE_FREED_MEMORY=1`` in the environment (then :func:`prepare_memory` uses it where twice the
    estimated peak fits).
    """
    wanted = os.environ.get("DNADIFF_REUSE_FREED_MEMORY", "0").strip().lower() in ("1", "true", "yes", "on")
    if not (force or wanted):
        return False
    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def trainer_device(trainer) -> tuple[torch.device, int]:
    """(the device a Lightning trainer trains this process on, processes sharing its memory): on the
    CPU every local process shares the RAM; a GPU is one process's own."""
    device = torch.device(trainer.strategy.root_device)
    return device, (int(trainer.num_devices) if device.type == "cpu" else 1)


def prepare_memory(cfg: dict, model: nn.Module, trainer=None, device: torch.device | str = "cpu",
                   processes: int = 1) -> str:
    """The training run's memory setup, called once before training: sets activation checkpointing on
    ``model`` from ``cfg["train"]["activation_checkpointing"]`` and, unless ``train.memory_check`` is false,
    refuses (UserError, one line) a run whose estimated peak exceeds the device's memory. The device is the
    Lightning ``trainer``'s (when given), else ``device`` shared by ``processes`` training processes. On the
    CPU with more than :data:`AUTO_CHECKPOINT_WINDOW` tokens a batch it also calls :func:`reuse_freed_memory`
    when :data:`REUSE_HEADROOM` times the estimate fits (it trades peak RSS for time).
    Returns a one-line summary to print."""
    if trainer is not None:
        device, processes = trainer_device(trainer)
    window, batch = int(cfg["data"]["window"]), int(cfg["data"]["batch_size"])
    every = resolve_checkpointing(cfg["train"].get("activation_checkpointing", "auto"), window)
    if every and not checkpointed_modules(model):
        if cfg["train"].get("activation_checkpointing") not in ("auto", None):
            raise ConfigError(f"train.activation_checkpointing={cfg['train']['activation_checkpointing']} is not "
                              f"supported by {type(model).__name__}: set it to false")
        every = 0
    set_activation_checkpointing(model, every)
    mode = f"activation checkpointing {'every ' + str(every) + ' blocks' if every else 'off'}"
    long_cpu = torch.device(device).type == "cpu" and window * batch > AUTO_CHECKPOINT_WINDOW
    if not cfg["train"].get("memory_check", True):
        return f"memory: {mode}, check skipped"
    profile = profile_activations(model)
    capacity = device_memory_bytes(device, processes)
    need = check_fits(profile, window, batch, every, capacity, f"{torch.device(device).type} memory")
    shown = f" of {_gb(capacity)} free" if capacity else ""
    per_token = profile.activation_bytes_per_token(every) / 1024
    # long windows on the CPU: no page faults for every new intermediate, where twice the estimate fits
    if long_cpu and capacity is not None and REUSE_HEADROOM * need <= capacity and reuse_freed_memory():
        mode += ", freed memory reused"
    return f"memory: about {_gb(need)} peak{shown} ({per_token:,.0f} KB a token, {mode})"
