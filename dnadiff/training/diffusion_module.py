"""The Lightning module for masked-diffusion pretraining, for any modality and any denoiser.

Holds the denoiser (built from a plain model spec), the diffusion process of the core, an EMA
of the weights (used for validation, export and sampling), AdamW with linear warm-up then cosine
decay, and classifier-free label dropout for class-conditional models.
"""
from __future__ import annotations

import math

import lightning as L
import torch

from dnadiff.seeds import step_generator
from dnadiff.diffusion import EMA
from dnadiff.models import build_model
from dnadiff.migrations import upgrade_process_keys, upgrade_state_keys
from dnadiff.checkpoints.format import ModelFile, build_process
from dnadiff.data.info import DataInfo
from dnadiff.training.optim import build_optimizer
from dnadiff.config import OptimConfig, TrainConfig

#: what the optimiser reads when a caller gives no ``optim``: the config tree's defaults (``optim``, with
#: ``max_steps`` the horizon of the cosine decay: ``train.max_steps``)
OPTIM_DEFAULTS = {**{k: v for k, v in OptimConfig().to_dict().items() if k not in ("grad_clip", "total_steps")},
                  "max_steps": TrainConfig().max_steps}


class DiffusionModule(L.LightningModule):
    """Masked-diffusion training of a denoiser.

    Args:
        model_spec: ``build_model`` spec of the denoiser.
        diffusion_spec: ``dnadiff.diffusion.build_diffusion`` spec.
        optim: learning rate, weight decay, betas, warm-up / total steps, final lr ratio.
        ema_decay: EMA decay (0 disables the EMA).
        label_dropout: probability of replacing a label by the null label (classifier-free guidance).
        val_num_t: Monte-Carlo draws of t per validation sequence.
        data_info: the :class:`~dnadiff.data.info.DataInfo` of the data (or its stored mapping), kept in the
            hyperparameters as a plain mapping and in model.pt for evaluation and sampling; ``self.data_info``.
        seed: seed of the masking noise (see :meth:`noise_generator`).
    Batches: ``tokens`` LongTensor[B, L], ``loss_mask`` BoolTensor[B, L], optional ``labels`` LongTensor[B].
    """

    def __init__(self, model_spec: dict, diffusion_spec: dict, optim: dict | None = None, ema_decay: float = 0.999,
                 label_dropout: float = 0.1, val_num_t: int = 4, data_info: DataInfo | dict | None = None,
                 seed: int = 0):
        super().__init__()
        data_info = DataInfo.from_dict(data_info).to_dict()  # plain values: a checkpoint loads with weights_only
        self.save_hyperparameters()
        self.data_info = DataInfo.from_dict(data_info)
        self.model = build_model(model_spec)
        # the process of the core (a DiffusionProcess); a learnable one (GenMD4) registers as a submodule
        self.diffusion = build_process(diffusion_spec)
        self.optim = {**OPTIM_DEFAULTS, **(optim or {})}
        self.ema = EMA(self.model, ema_decay) if ema_decay > 0 else None
        self.num_classes = int(model_spec.get("num_classes", 0) or 0)
        self.label_dropout = label_dropout
        self.val_num_t = val_num_t
        self.seed = int(seed)
        self._val = None

    # ------------------------------------------------------------------ steps
    def noise_generator(self, device) -> torch.Generator:
        """The masking-noise generator of this training step: a pure function of (seed, step, rank), so a
        resumed run draws exactly the noise an uninterrupted one would (and DDP ranks differ)."""
        rank = self.global_rank if self._trainer is not None else 0
        return step_generator(self.seed, self.global_step, rank, "noise", device)

    def _labels(self, batch, train: bool, generator=None):
        labels = batch.get("labels")
        if labels is None or self.num_classes == 0:
            return None
        if train and self.label_dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device, generator=generator) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return labels

    def training_step(self, batch, batch_idx):
        x, loss_mask = batch["tokens"], batch["loss_mask"]
        g = self.noise_generator(x.device)
        labels = self._labels(batch, train=True, generator=g)
        result = self.diffusion.loss(self.model, x, loss_mask, labels, generator=g)
        self.log("train/loss", result.loss, prog_bar=True)
        self.log("train/bits_per_token", result.nelbo / math.log(2), prog_bar=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"] if self._trainer else 0.0)
        return result.loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # here, not in on_train_batch_end: checkpoints of this step include it
            if next(iter(self.ema.shadow.values())).device != self.device:
                self.ema.to(self.device)
            self.ema.update(self.model)

    def on_validation_epoch_start(self):
        self._val = {"nats": torch.zeros((), dtype=torch.float64, device=self.device),
                     "tokens": torch.zeros((), dtype=torch.float64, device=self.device)}
        self._swap_in_ema()

    def validation_step(self, batch, batch_idx):
        x, loss_mask = batch["tokens"], batch["loss_mask"]
        draws = self.diffusion.nelbo(self.model, x, num_t=self.val_num_t, loss_mask=loss_mask,
                                     labels=self._labels(batch, False))
        self._val["nats"] += draws.double().sum()
        self._val["tokens"] += loss_mask.sum().double()

    def on_validation_epoch_end(self):
        self._swap_out_ema()
        nats, tokens = self._val["nats"], self._val["tokens"]
        if self.trainer.world_size > 1:
            nats, tokens = self.all_gather(nats).sum(), self.all_gather(tokens).sum()
        per = (nats / tokens.clamp_min(1)).float()
        self.log("val/nats_per_token", per, sync_dist=False, rank_zero_only=False)
        self.log("val/bits_per_token", per / math.log(2), prog_bar=True)
        self.log("val/perplexity", torch.exp(per))

    def _swap_in_ema(self):
        if self.ema is not None:
            self.ema.to(self.device).store(self.model)
            self.ema.copy_to(self.model)

    def _swap_out_ema(self):
        if self.ema is not None:
            self.ema.restore(self.model)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.optim
        opt, sched = build_optimizer(self, lr=float(o["lr"]), weight_decay=float(o["weight_decay"]),
                                     warmup=int(o["warmup_steps"]), total=int(o["max_steps"]),
                                     min_lr_ratio=float(o["min_lr_ratio"]), betas=tuple(o["betas"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint):
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        upgrade_process_keys(checkpoint.get("state_dict") or {})
        if self.ema is not None and "ema" in checkpoint:
            upgrade_state_keys(checkpoint["ema"]["shadow"])
            self.ema.load_state_dict(checkpoint["ema"])

    def export_payload(self, metrics: dict | None = None) -> ModelFile:
        """The ``model.pt`` record: the model's typed config (spec), diffusion spec, EMA weights, data info, metrics."""
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            state.update({k: v.detach().cpu().clone() for k, v in self.ema.shadow.items()})
        learned = {k[len("diffusion."):]: v.detach().cpu() for k, v in self.state_dict().items()
                   if k.startswith("diffusion.")}  # a learnable process's parameters (GenMD4's w), else none
        return ModelFile(self.model.config.to_spec(), self.hparams.diffusion_spec, state, self.data_info,
                         metrics or {}, learned)
