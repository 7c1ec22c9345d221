"""Small Lightning callbacks and the checkpoint IO plugin."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from dnadiff.training.checkpoint import load_checkpoint, save_checkpoint


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


class ProgressLines(L.Callback):
    """Without a progress bar: one printed line per validation, ``step S/T  train B  val B bits/token  E s``."""

    def __init__(self):
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        fields = [f"{name} {metrics[key]:.4f}" for name, key in (("train", "train/bits_per_token"),
                                                                  ("val", "val/bits_per_token")) if key in metrics]
        print(f"step {trainer.global_step}/{trainer.max_steps}  {'  '.join(fields)} bits/token  "
              f"{time.perf_counter() - self._t0:.0f} s", flush=True)


class StepCallback(L.Callback):
    """Calls ``fn(step, metrics)`` every ``every`` training steps (and after each validation), with the scalar
    metrics logged so far (``train/bits_per_token``, ``val/bits_per_token``, ...): progress for library callers."""

    def __init__(self, fn, every: int):
        self.fn, self.every = fn, max(1, int(every))

    def _call(self, trainer) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
            self.fn(int(trainer.global_step), metrics)

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
        from dnadiff.atomic import atomic_write

        text = json.dumps(record).encode()
        atomic_write(Path(self.out_dir) / f"audit_rank{trainer.global_rank}.json", lambda f: f.write(text))
