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

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from dnadiff.data.genomic_benchmarks import Split
from dnadiff.data.tokenizer import EMBED_SIZE
from dnadiff.errors import ConfigError, UserError
from dnadiff.rc import rc_policy
from dnadiff.eval.classification import classification_metrics
from dnadiff.models.config import model_config
from dnadiff.config import CONFIG_DIR, FinetuneConfig
from dnadiff.training.optim import warmup_steps
from dnadiff.checkpoints.sources import load_payload, model_from_payload
from dnadiff.finetuning.batches import default_micro_batch, inference_batches, INFERENCE_BUDGET, make_micro_batches, RankBatches


def load_finetune_config(task: str, config_dir: Path | None = None) -> FinetuneConfig:
    """:class:`FinetuneConfig` from ``configs/finetune/<task>.yaml`` (bundled with the package); every value
    checked, an unknown key a ConfigError naming it."""
    import yaml

    path = (config_dir or CONFIG_DIR / "finetune") / f"{task}.yaml"
    if not path.is_file():
        raise UserError(f"no fine-tuning config {path}: reinstall dnadiff (its configs/finetune/ is missing)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"fine-tuning config {path} is not valid YAML ({str(err).splitlines()[0]}): fix the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"fine-tuning config {path} is not a mapping of keys: write it as `key: value` lines")
    unknown = sorted(set(map(str, values)) - set(FinetuneConfig.keys()))
    if unknown:
        raise ConfigError(f"unknown fine-tuning key {unknown[0]!r} in {path}: valid keys are "
                          f"{', '.join(FinetuneConfig.keys())}")
    return FinetuneConfig.from_dict(values)


# ------------------------------------------------------------------ backbones
def backbone_from_checkpoint(path: str | Path, spec: dict | None = None, download: bool = False) -> tuple[nn.Module, dict]:
    """A denoiser and its model spec from any source :func:`dnadiff.checkpoints.sources.load_payload` reads: a dnadiff
    ``model.pt`` or ``.ckpt``, an original Caduceus folder or a hub id (``download`` allows fetching it).

    ``spec`` (the requested model size), when given, must match the checkpoint's width and depth. A
    checkpoint for another vocabulary (text, pixels) is a UserError.
    """

    payload = load_payload(path, download=download)
    ckpt_spec = dict(payload.model)
    embed_size = model_config(ckpt_spec).embed_size
    modality = payload.data.kind
    if not modality.caduceus or embed_size != EMBED_SIZE:
        raise UserError(f"{path} was pretrained on {modality.name} with a vocabulary of {embed_size} "
                        f"tokens, not DNA ({EMBED_SIZE}): give a DNA checkpoint")
    denoiser = model_from_payload(payload, str(path)).train()  # to be fine-tuned
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
def model_dims(classifier: nn.Module) -> tuple[int, int]:
    """(width, depth) of a classifier's Caduceus backbone (for the default micro-batch); (256, 4) otherwise."""
    inner = getattr(getattr(classifier, "backbone", None), "backbone", None)
    if inner is not None and hasattr(inner, "d_model") and hasattr(inner, "layers"):
        return int(inner.d_model) * (2 if getattr(inner, "variant", "ph") == "ps" else 1), len(inner.layers)
    return 256, 4


def predict_proba(classifier: nn.Module, seqs: list[str], max_length: int, conjoin: bool,
                  budget_tokens: int | None = None, precision: str = "32-true") -> np.ndarray:
    """Class probabilities float[N, K] on the classifier's device, in length-sorted batches each padded to its
    own longest sequence (at most ``budget_tokens`` padded tokens; default from the model's size); with
    ``conjoin`` the logits of x and RC(x) (valid part) are averaged."""
    from dnadiff.finetuning.finetune_module import assemble, classifier_logits

    if budget_tokens is None:
        width, depth = model_dims(classifier)
        budget_tokens = max(64, INFERENCE_BUDGET // (width * depth))
    device = next(classifier.parameters()).device
    labels = np.zeros(len(seqs), dtype=np.int64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    was_training = classifier.training
    classifier.eval()
    parts = []
    with torch.no_grad(), autocast:
        for rows in inference_batches(np.arange(len(seqs)), seqs, labels, max_length, budget_tokens):
            mb = make_micro_batches(rows, seqs, labels, max_length, len(rows))[0]
            logits = classifier_logits(classifier, mb.tokens.to(device), mb.valid.to(device), conjoin)
            parts.append((mb.index, torch.softmax(logits, -1).cpu()))
    classifier.train(was_training)
    return assemble(parts, len(seqs))


def train_fold(
    make_classifier: Callable[[], nn.Module],
    train: Split,
    val: Split,
    test: Split | None,
    config: FinetuneConfig,
    variant: str,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    device: dict | None = None,
) -> dict:
    """Train on ``train`` with Lightning, keep the best epoch on ``val``, score it on ``val`` (and ``test``).

    ``device``: Lightning ``accelerator``/``devices``/``precision``/``strategy`` (default: one CPU, 32-bit).
    ``config.batch_size`` is the optimiser's batch (across all devices), run as micro-batches of
    ``config.micro_batch`` sequences (default: :func:`dnadiff.finetuning.batches.default_micro_batch`).
    Returns ``{"best_epoch", "val": metrics, "test": metrics or None, "val_accuracy_per_epoch",
    "micro_batch", "optimizer_steps", "classifier"}`` (the classifier holds the best epoch's weights). ``on_epoch(epoch, val_accuracy)`` is called after every epoch.
    """
    import logging
    import warnings

    import lightning as L
    from dnadiff.finetuning.finetune_module import FinetuneModule

    device = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "strategy": "auto", **(device or {})}
    torch.manual_seed(seed)
    classifier = make_classifier()
    width, depth = model_dims(classifier)
    micro = config.micro_batch or default_micro_batch(config.batch_size, config.max_length, width, depth)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = L.Trainer(max_epochs=config.epochs, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, **device)
    world = max(1, trainer.world_size)
    total = RankBatches.steps(len(train), config.batch_size, world) * config.epochs
    module = FinetuneModule(classifier, train, val, config.batch_size, micro, config.max_length,
                            max(64, INFERENCE_BUDGET // (width * depth)), lr=config.lr,
                            weight_decay=config.weight_decay, warmup=warmup_steps(total, config.warmup_fraction),
                            total_steps=total, min_lr_ratio=config.min_lr_ratio, grad_clip=config.grad_clip,
                            augment=rc_policy(variant).augment, conjoin=rc_policy(variant).conjoin, seed=seed,
                            on_epoch=on_epoch,
                            noisy=config.noisy)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__`.*")
        trainer.fit(module)
    best = module.best
    classifier.load_state_dict(best["state"])
    val_metrics = classification_metrics(val.labels, best["probs"])
    test_metrics = None
    if test is not None:
        probs = predict_proba(classifier, test.seqs, config.max_length, rc_policy(variant).conjoin,
                              precision=device["precision"])
        test_metrics = classification_metrics(test.labels, probs)
    return {"best_epoch": best["epoch"], "val": val_metrics, "test": test_metrics,
            "val_accuracy_per_epoch": list(module.history), "micro_batch": micro, "optimizer_steps": total,
            "classifier": classifier}
