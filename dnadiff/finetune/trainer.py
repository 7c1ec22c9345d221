"""Fine-tune a backbone + classification head on one fold, keep the best epoch, score it.

Optimiser and schedule follow the Caduceus Genomic Benchmarks recipe: AdamW (weight decay 0.1),
linear warm-up over the first 1% of steps then cosine decay to 0.1 x lr, gradient clipping at 1.0,
cross-entropy. The epoch with the best validation accuracy is kept.

Reverse-complement handling per Caduceus variant:
* ``ph``: each training sequence is reverse-complemented with probability 1/2 (RC augmentation)
  and predictions average the logits of a sequence and of its reverse complement (conjoined);
* ``ps``: the head pools the RC-equivariant channels invariantly (``SequenceClassifier``), so
  neither augmentation nor conjoining is needed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from dnadiff.data.genomic_benchmarks import Split
from dnadiff.data.tokenizer import EMBED_SIZE, encode_batch
from dnadiff.errors import UserError
from dnadiff.eval.classification import classification_metrics
from dnadiff.rc import reverse_complement_valid
from dnadiff.training.optim import build_optimizer, warmup_steps


@dataclass
class FinetuneConfig:
    """Hyper-parameters of one task (``configs/finetune/<task>.yaml``)."""

    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    max_length: int = 512
    pooling: str = "mean"
    weight_decay: float = 0.1
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ backbones
def backbone_from_checkpoint(path: str | Path, spec: dict | None = None, download: bool = False) -> tuple[nn.Module, dict]:
    """A denoiser and its model spec from any source :func:`dnadiff.loading.load_payload` reads: a dnadiff
    ``model.pt`` or ``.ckpt``, an original Caduceus folder or a hub id (``download`` allows fetching it).

    ``spec`` (the requested model size), when given, must match the checkpoint's width and depth. A
    checkpoint for another vocabulary (text, pixels) is a UserError.
    """
    from dnadiff.loading import load_payload, model_from_payload

    payload = load_payload(path, download=download)
    ckpt_spec = dict(payload["model"])
    modality = payload.get("data", {}).get("modality", "dna")
    if modality != "dna" or ckpt_spec.get("vocab_size", EMBED_SIZE) != EMBED_SIZE:
        raise UserError(f"{path} was pretrained on {modality} with a vocabulary of {ckpt_spec.get('vocab_size')} "
                        f"tokens, not DNA ({EMBED_SIZE}): give a DNA checkpoint")
    denoiser = model_from_payload(payload, str(path))
    if spec is not None:
        for key in ("d_model", "n_layer"):
            if key in spec and key in ckpt_spec and spec[key] != ckpt_spec[key]:
                raise UserError(f"{path} has {key}={ckpt_spec[key]}, but the requested model size has "
                                f"{key}={spec[key]}: drop --model-size or pick the size the checkpoint was trained with")
    return denoiser, ckpt_spec


def backbone_from_scratch(spec: dict) -> nn.Module:
    """A freshly initialised denoiser of ``spec`` (see :func:`dnadiff.models.build_model`)."""
    from dnadiff.models import build_model

    return build_model(spec)


def rc_variant(backbone: nn.Module) -> str:
    """"ps" for an RC-equivariant (parameter-sharing) Caduceus, "ph" otherwise."""
    inner = getattr(backbone, "backbone", None)
    return getattr(inner, "variant", "ph")


def build_classifier(backbone: nn.Module, num_classes: int, pooling: str) -> nn.Module:
    """``SequenceClassifier`` over ``backbone.features``: (tokens [B, L], valid [B, L]) -> logits [B, K].

    Its own conjoining stays off: for "ph" this module conjoins at inference only (``predict_proba``),
    as Caduceus-Ph does; for "ps" the head's pooling is RC-invariant by construction.
    """
    from dnadiff.models.heads import SequenceClassifier

    return SequenceClassifier(backbone, num_classes=num_classes, pooling=pooling, conjoin=False)


# ------------------------------------------------------------------ training
def predict_proba(classifier: nn.Module, seqs: list[str], max_length: int, conjoin: bool,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities float[N, K]; with ``conjoin`` the logits of x and RC(x) are averaged
    (RC of each sequence's valid part; padding stays on the right)."""
    classifier.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            tokens, valid = encode_batch(seqs[start : start + batch_size], max_length)
            logits = classifier(tokens, valid)
            if conjoin:
                logits = (logits + classifier(reverse_complement_valid(tokens, valid), valid)) / 2
            out.append(torch.softmax(logits.float(), dim=-1))
    return torch.cat(out).numpy()


def train_fold(
    make_classifier: Callable[[], nn.Module],
    train: Split,
    val: Split,
    test: Split | None,
    config: FinetuneConfig,
    variant: str,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Train on ``train``, keep the best epoch on ``val``, score it on ``val`` (and ``test``).

    Returns ``{"best_epoch", "val": metrics, "test": metrics or None, "val_accuracy_per_epoch"}``.
    ``on_epoch(epoch, val_accuracy)`` is called after every epoch (progress display).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    classifier = make_classifier()
    total = math.ceil(len(train) / config.batch_size) * config.epochs
    optimizer, schedule = build_optimizer(classifier, config.lr, config.weight_decay,
                                          warmup_steps(total, config.warmup_fraction), total, config.min_lr_ratio)
    labels = torch.as_tensor(train.labels, dtype=torch.long)
    augment = conjoin = variant == "ph"
    best_acc, best_state, best_probs, best_epoch, history = -1.0, None, None, -1, []
    for epoch in range(config.epochs):
        classifier.train()
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            tokens, valid = encode_batch([train.seqs[i] for i in batch], config.max_length)
            if augment:
                flip = torch.rand(len(batch), generator=gen) < 0.5
                tokens = torch.where(flip[:, None], reverse_complement_valid(tokens, valid), tokens)
            loss = nn.functional.cross_entropy(classifier(tokens, valid), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(classifier.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
        probs = predict_proba(classifier, val.seqs, config.max_length, conjoin)
        acc = float((probs.argmax(1) == val.labels).mean())
        history.append(acc)
        if acc > best_acc:
            best_acc, best_epoch, best_probs = acc, epoch, probs
            best_state = copy.deepcopy(classifier.state_dict())
        if on_epoch is not None:
            on_epoch(epoch, acc)
    classifier.load_state_dict(best_state)
    val_metrics = classification_metrics(val.labels, best_probs)
    test_metrics = None
    if test is not None:
        test_metrics = classification_metrics(test.labels, predict_proba(classifier, test.seqs, config.max_length, conjoin))
    return {"best_epoch": best_epoch, "val": val_metrics, "test": test_metrics, "val_accuracy_per_epoch": history}
