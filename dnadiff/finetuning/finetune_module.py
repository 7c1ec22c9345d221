"""Fine-tuning one fold with Lightning: any accelerator, precision and strategy, the configured batch run
as micro-batches with gradient accumulation (manual optimisation, so the accumulated gradient is exactly
the full-batch mean gradient), validation every epoch and the best epoch's weights kept.

Recipe (Caduceus Genomic Benchmarks): AdamW with :func:`dnadiff.training.optim.parameter_groups`, linear
warm-up then cosine decay per optimiser step, gradient clipping by norm, cross-entropy. Caduceus-Ph:
each training sequence reverse-complemented with probability 1/2 (within its valid length) and
predictions conjoined (mean logits of x and RC(x)); Caduceus-PS: RC-invariant pooling, neither.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from dnadiff.seeds import step_generator
from dnadiff.finetuning.batches import inference_batches, InferenceCollate, MicroBatch, RankBatches, TrainCollate
from dnadiff.rc import conjoin as rc_conjoin, random_rc
from dnadiff.training.optim import build_optimizer
from dnadiff.data.tokenizer import MASK


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (mixed precision) in float32; float32/float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def classifier_logits(classifier: nn.Module, tokens: torch.Tensor, valid: torch.Tensor, conjoin: bool) -> torch.Tensor:
    """Logits [b, K] of a micro-batch; with ``conjoin`` the mean of the logits of x and of RC(x) (valid part)."""
    if conjoin:  # the one conjoining of rc.py
        return rc_conjoin(lambda x: _wide(classifier(x, valid)), tokens, valid)
    return _wide(classifier(tokens, valid))


class FinetuneModule(L.LightningModule):
    """A ``SequenceClassifier`` trained on one fold.

    Args:
        classifier: (tokens [b, l], valid [b, l]) -> logits [b, K]; its own conjoining must be off.
        lr, weight_decay, warmup, total_steps, min_lr_ratio, grad_clip: the optimiser recipe.
        augment: RC-augment training sequences (Ph); conjoin: conjoined inference (Ph).
        train, val: the fold's ``Split``s (sequences and labels); batch_size: the optimiser's batch (all
            processes together), run as micro-batches of ``micro`` sequences; max_length: longer sequences are cut;
            val_budget: padded tokens per validation batch.
        seed: seed of the shuffling (per epoch) and of the augmentation draws (per step and rank).
        on_epoch: optional ``on_epoch(epoch, val_accuracy)`` called after each validation (progress).
        noisy: train on partially masked sequences (:func:`mask_at_random_level`), the classifier p(y | z_t)
            that guides masked diffusion at every step; validation (model selection) stays on clean sequences.
    With several processes (DDP) each takes its share of every global batch (:class:`RankBatches`) and of
    the validation batches; validation predictions are gathered, gradients all-reduced once per step.
    """

    def __init__(self, classifier: nn.Module, train, val, batch_size: int, micro: int, max_length: int,
                 val_budget: int, lr: float, weight_decay: float, warmup: int, total_steps: int,
                 min_lr_ratio: float, grad_clip: float, augment: bool, conjoin: bool, seed: int = 0, on_epoch=None,
                 noisy: bool = False):
        super().__init__()
        self.automatic_optimization = False
        self.classifier = classifier
        self.train_split, self.val_split = train, val
        self.batch_size, self.micro, self.max_length, self.val_budget = batch_size, micro, max_length, val_budget
        val_labels = val.labels
        self.recipe = dict(lr=lr, weight_decay=weight_decay, warmup=warmup, total=total_steps,
                           min_lr_ratio=min_lr_ratio)
        self.grad_clip, self.augment, self.conjoin, self.seed = grad_clip, augment, conjoin, int(seed)
        self.val_labels = np.asarray(val_labels)
        self.on_epoch = on_epoch
        self.noisy = bool(noisy)
        self.best = {"accuracy": -1.0, "epoch": -1, "state": None, "probs": None}
        self.history: list[float] = []
        self._probs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train_dataloader(self):
        from torch.utils.data import DataLoader


        sampler = RankBatches(len(self.train_split), self.batch_size, self.seed, self.global_rank, self.trainer.world_size)
        return DataLoader(range(len(self.train_split)), batch_sampler=sampler,
                          collate_fn=TrainCollate(self.train_split.seqs, self.train_split.labels, self.max_length, self.micro))

    def val_dataloader(self):
        from torch.utils.data import DataLoader


        val = self.val_split
        chunks = inference_batches(np.arange(len(val)), val.seqs, val.labels, self.max_length, self.val_budget)
        mine = chunks[self.global_rank :: self.trainer.world_size] or chunks[:1]
        return DataLoader(mine, batch_size=1, shuffle=False, collate_fn=InferenceCollate(val.seqs, val.labels, self.max_length))

    def configure_optimizers(self):
        opt, sched = build_optimizer(self.classifier, **self.recipe)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def flips(self, size: int) -> torch.Tensor:
        """BoolTensor[size] on the CPU: which examples of this step's batch are reverse-complemented."""
        g = step_generator(self.seed, self.global_step, self.global_rank, "noise")
        return torch.rand(size, generator=g) < 0.5

    def training_step(self, batch: dict, batch_idx: int):
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        world = self.trainer.world_size
        n, B = len(self.train_split), self.batch_size
        size = min(B, n - batch_idx * B) / world  # this rank's share of the global batch's mean (DDP averages ranks)
        flips = self.flips(int(batch["size"])) if self.augment else None
        noise = None
        if self.noisy:
            noise = step_generator(self.seed, self.global_step, self.global_rank, "guide_noise")
        no_sync = self.trainer.strategy.block_backward_sync if world > 1 else None
        total = accumulate_gradients(self.classifier, batch["micro"], size, self.manual_backward, flips, no_sync,
                                     noise)
        if self.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()
        self.log("train/loss", total, batch_size=int(batch["size"]))

    def on_validation_epoch_start(self):
        self._probs = []

    def validation_step(self, mb: MicroBatch, batch_idx: int):
        probs = torch.softmax(classifier_logits(self.classifier, mb.tokens, mb.valid, self.conjoin), -1)
        self._probs.append((mb.index.cpu(), probs.cpu()))

    def on_validation_epoch_end(self):
        probs = assemble(self._probs, len(self.val_labels), self if self.trainer.world_size > 1 else None)
        acc = float((probs.argmax(1) == self.val_labels).mean())
        self.history.append(acc)
        if acc > self.best["accuracy"]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.classifier.state_dict().items()}
            self.best = {"accuracy": acc, "epoch": self.current_epoch, "state": state, "probs": probs}
        self.log("val/accuracy", acc)
        if self.on_epoch is not None and self.trainer.is_global_zero:
            self.on_epoch(self.current_epoch, acc)

    def predict_step(self, mb: MicroBatch, batch_idx: int):
        probs = torch.softmax(classifier_logits(self.classifier, mb.tokens, mb.valid, self.conjoin), -1)
        return mb.index.cpu(), probs.cpu()


def mask_at_random_level(tokens: torch.Tensor, valid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mask each sequence at its own level: LongTensor[b, l] -> LongTensor[b, l] with MASK ids.

    Each row draws t ~ U(0, 1) and masks each valid position independently with probability t: z_t of the
    linear schedule (1 - alpha(t) = t). Under masking diffusion p(y | z_t) does not depend on t given z_t
    (the mask pattern is independent of x), so a classifier trained this way serves every schedule; the
    schedule only weights which mask levels it sees most. Draws on the CPU ``generator``."""

    b, l = tokens.shape
    level = torch.rand(b, 1, generator=generator)
    hit = (torch.rand(b, l, generator=generator) < level).to(tokens.device) & valid
    return torch.where(hit, torch.full_like(tokens, MASK), tokens)


def accumulate_gradients(classifier: nn.Module, micro: list[MicroBatch], size: float, backward,
                         flips: torch.Tensor | None = None, no_sync=None,
                         noise: torch.Generator | None = None) -> float:
    """Backward pass of one effective batch of ``size`` examples, micro-batch by micro-batch.

    Each micro-batch contributes ``sum of its cross-entropies / size``, so the accumulated gradient is the
    gradient of the batch's mean cross-entropy. ``flips`` (BoolTensor[size], in micro-batch order) reverse-
    complements those examples within their valid length first (RC augmentation). ``backward(loss)`` runs
    the backward pass (``loss.backward`` or Lightning's ``manual_backward``); ``no_sync`` (a context-manager
    factory, DDP's) wraps every micro-batch but the last, so gradients are all-reduced once per step.
    ``noise`` (a CPU generator): mask each example at a random level first (:func:`mask_at_random_level`).
    Returns the batch's mean loss.
    """
    import contextlib

    total, seen = 0.0, 0
    for i, mb in enumerate(micro):
        context = no_sync() if no_sync is not None and i < len(micro) - 1 else contextlib.nullcontext()
        with context:
            total += _micro_step(classifier, mb, size, backward, flips, seen, noise)
        seen += len(mb.tokens)
    return total


def _micro_step(classifier, mb: MicroBatch, size: float, backward, flips, seen: int, noise=None) -> float:
    tokens = mb.tokens
    if flips is not None:
        flip = flips[seen : seen + len(tokens)].to(tokens.device)
        tokens = random_rc(tokens, flip, mb.valid)  # the one RC augmentation of rc.py
    if noise is not None:
        tokens = mask_at_random_level(tokens, mb.valid, noise)
    logits = _wide(classifier(tokens, mb.valid))
    loss = nn.functional.cross_entropy(logits, mb.labels, reduction="sum") / size
    backward(loss)
    return float(loss.detach())


def assemble(parts: list[tuple[torch.Tensor, torch.Tensor]], n: int, gather: L.LightningModule | None = None) -> np.ndarray:
    """Per-batch (index [b], probs [b, K]) -> probs float[n, K] in dataset order.

    With ``gather`` (a module in a multi-process run) the parts of all ranks are summed via ``all_gather``;
    an example seen several times (a distributed sampler's padding) gets the mean of its copies."""
    index = torch.cat([i for i, _ in parts])
    probs = torch.cat([p for _, p in parts]).double()
    dense = torch.zeros(n, probs.shape[1], dtype=torch.float64).index_add_(0, index, probs)
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    if gather is not None:
        dense = gather.all_gather(dense.to(gather.device)).sum(0).cpu()
        count = gather.all_gather(count.to(gather.device)).sum(0).cpu()
    return (dense / count.clamp_min(1)[:, None]).numpy()
