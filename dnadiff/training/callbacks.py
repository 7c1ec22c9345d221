"""Small Lightning callbacks and the checkpoint IO plugin."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from dnadiff.checkpoints.format import load_checkpoint, save_checkpoint
from dnadiff.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically and reads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_checkpoint(path, checkpoint)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint(path, map_location or "cpu")


class Throughput(L.Callback):
    """Logs ``train/tokens_per_s``: counted (loss-mask) tokens per second over the training steps,
    excluding validation time."""

    def __init__(self):
        self.tokens = 0
        self.seconds = 0.0
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:
            return
        self.seconds += time.perf_counter() - self._t0
        self.tokens += int(batch["tokens"].numel()) * trainer.world_size
        if self.seconds > 0:
            pl_module.log("train/tokens_per_s", self.tokens / self.seconds, prog_bar=False, rank_zero_only=True)


def scalar_metrics(trainer) -> dict:
    """The scalar metrics Lightning logged last, as floats (``train/bits_per_token``, ``val/bits_per_token``, ...)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def progress_fields(trainer, elapsed: float, start_step: int = 0) -> dict:
    """What a progress display shows: ``{"step", "total", "tokens_per_s", "train", "val", "eta"}`` (bits per
    token; ``eta`` in seconds from the steps of this session, None before the first)."""
    metrics = scalar_metrics(trainer)
    step, total = int(trainer.global_step), int(trainer.max_steps)
    done = step - start_step
    eta = elapsed / done * (total - step) if done > 0 else None
    return {"step": step, "total": total, "tokens_per_s": metrics.get("train/tokens_per_s"),
            "train": metrics.get("train/bits_per_token"), "val": metrics.get("val/bits_per_token"), "eta": eta}


def progress_line(fields: dict, unit: str = "bits/token") -> str:
    """``step 120/50,000  3,512 tokens/s  train 1.9721  val 1.9650 bits/token  ETA 3.9 h``: one line, units once."""
    from dnadiff.progress import human

    parts = [f"step {fields['step']:,}/{fields['total']:,}"]
    if fields.get("tokens_per_s") is not None:
        parts.append(f"{fields['tokens_per_s']:,.0f} tokens/s")
    bits = [f"{name} {fields[name]:.4f}" for name in ("train", "val") if fields.get(name) is not None]
    if bits:
        parts.append("  ".join(bits) + f" {unit}")
    if fields.get("eta") is not None:
        parts.append(f"ETA {human(fields['eta'])}")
    return "  ".join(parts)


class ProgressLines(L.Callback):
    """Plain progress lines for logs (SLURM, nohup, a file): one :func:`progress_line` every ``every_seconds``
    of training and one after each validation, flushed at once; no terminal control characters."""

    def __init__(self, every_seconds: float = 30.0, unit: str = "bits/token", stream=None):
        self.every, self.unit, self.stream = float(every_seconds), unit, stream
        self._t0 = self._last = None
        self._start_step = 0

    def _print(self, trainer) -> None:
        import sys

        fields = progress_fields(trainer, time.perf_counter() - self._t0, self._start_step)
        print(progress_line(fields, self.unit), file=self.stream or sys.stdout, flush=True)
        self._last = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self._t0 = self._last = time.perf_counter()
        self._start_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.is_global_zero and self._t0 is not None and time.perf_counter() - self._last >= self.every:
            self._print(trainer)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero or self._t0 is None:
            return
        self._print(trainer)


class StepBar(L.Callback):
    """One rich progress bar for a step-based run (terminal): ``pretrain ━━━━  step 120/50,000  3,512 tokens/s
    train 1.9721 val 1.9650 bits/token  ETA 3.9 h``, on stderr; replaces Lightning's epoch bar."""

    def __init__(self, unit: str = "bits/token", refresh_steps: int = 1):
        self.unit, self.refresh = unit, max(1, int(refresh_steps))
        self._bar = self._task = self._t0 = None
        self._start_step = 0

    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("pretrain"), BarColumn(bar_width=24), TextColumn("{task.fields[text]}"),
                             console=Console(stderr=True), transient=False)
        self._t0, self._start_step = time.perf_counter(), int(trainer.global_step)
        self._task = self._bar.add_task("pretrain", total=trainer.max_steps, completed=trainer.global_step,
                                        text=f"step {trainer.global_step:,}/{trainer.max_steps:,}")
        self._bar.start()

    def _update(self, trainer) -> None:
        fields = progress_fields(trainer, time.perf_counter() - self._t0, self._start_step)
        self._bar.update(self._task, completed=fields["step"], text=progress_line(fields, self.unit))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._bar is not None and trainer.global_step % self.refresh == 0:
            self._update(trainer)

    def on_validation_end(self, trainer, pl_module):
        if self._bar is not None and not trainer.sanity_checking:
            self._update(trainer)

    def on_train_end(self, trainer, pl_module):
        if self._bar is not None:
            self._update(trainer)
            self._bar.stop()
            self._bar = None

    def on_exception(self, trainer, pl_module, exception):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class StepCallback(L.Callback):
    """Calls ``fn(step, metrics)`` every ``every`` training steps (and after each validation), with the scalar
    metrics logged so far (``train/bits_per_token``, ``val/bits_per_token``, ...): progress for library callers."""

    def __init__(self, fn, every: int):
        self.fn, self.every = fn, max(1, int(every))

    def _call(self, trainer) -> None:
        if trainer.is_global_zero:
            self.fn(int(trainer.global_step), scalar_metrics(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._call(trainer)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._call(trainer)


class WindowAudit(L.Callback):
    """Records, per rank, the global indices of the training windows it consumed and a checksum
    of its final weights, in ``OUT/audit_rank{r}.json`` (for checking DDP data sharding)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.indices: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "index" in batch:
            self.indices.extend(int(i) for i in batch["index"])

    def on_train_end(self, trainer, pl_module):
        import json
        from pathlib import Path

        import torch

        with torch.no_grad():
            flat = torch.cat([p.detach().double().flatten().cpu() for p in pl_module.model.parameters()])
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "indices": self.indices,
                  "param_sum": float(flat.sum()), "param_sq_sum": float((flat**2).sum())}

        text = json.dumps(record).encode()
        atomic_write(Path(self.out_dir) / f"audit_rank{trainer.global_rank}.json", lambda f: f.write(text))
