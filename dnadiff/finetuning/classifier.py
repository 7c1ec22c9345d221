"""A fine-tuned sequence classifier as a file and an object: ``classifier.pt`` <-> :class:`Classifier`.

    clf = dnadiff.load("runs/ft/classifier_fold_0.pt")     # or Classifier.load(...)
    probs = clf.predict_proba(["ACGT...", ...])              # float[N, K], columns in clf.class_names order
    labels = clf.predict(seqs)                                # int[N] class ids; clf.class_names[i] names them

``dnadiff finetune --save-model`` writes one ``classifier_fold_K.pt`` per fold (the fold's selected epoch: the
same weights that fold's figures describe). The file is a plain dict (``weights_only=True`` loads it):
``{"format": "dnadiff-classifier/1", "backbone": <model spec>, "num_classes", "pooling", "state_dict",
"class_names", "max_length", "variant", "task", "fold", "metrics"}`` and ``"noisy": True`` for a classifier
trained on partially masked sequences (``finetune(noisy=True)``: a valid guide of masked diffusion at every step).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dnadiff.errors import UserError
from dnadiff.keys import check_stored
from dnadiff.rc import rc_policy
from dnadiff.finetuning.trainer import build_classifier, predict_proba
from dnadiff.models import build_model
from dnadiff.checkpoints.format import load_checkpoint, save_checkpoint

CLASSIFIER_FORMAT = "dnadiff-classifier/1"


@dataclass(frozen=True)
class ClassifierInfo:
    """Where a saved classifier comes from: ``task``, ``fold`` (the fold whose selected epoch it is),
    ``description`` (the model it was fine-tuned from), ``noisy`` (trained on partially masked sequences: a guide
    for masked diffusion at every step), ``metrics`` (figures of that fold, when recorded)."""

    task: str | None = None
    fold: int | None = None
    description: str | None = None
    noisy: bool = False
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The entries a classifier file holds (``noisy`` only when True, unset ones left out)."""
        out = {k: v for k, v in (("task", self.task), ("fold", self.fold), ("description", self.description))
               if v is not None}
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        if self.noisy:
            out["noisy"] = True
        return out

    @classmethod
    def from_dict(cls, payload: dict, where: str = "the classifier file") -> "ClassifierInfo":
        """The record of a classifier file's entries (other keys ignored). UserError for a wrong type."""
        kinds = {"task": "str", "fold": "int", "description": "str", "noisy": "bool", "metrics": "map"}
        return cls(**{key: check_stored(payload[key], kind, key, where, "the file is damaged or from another "
                                        "version; re-create it with `dnadiff finetune --save-model`")
                      for key, kind in kinds.items() if payload.get(key) is not None})


class Classifier:
    """A backbone + classification head fine-tuned on a task, with what scoring new sequences needs.

    Args:
        module: the ``SequenceClassifier`` (tokens [B, L], valid [B, L]) -> logits [B, K].
        class_names: the K class names (column order of :meth:`predict_proba`).
        max_length: longer sequences are cut to this many bases (as in training).
        variant: "ph" (predictions conjoin x and its reverse complement) or "ps" (RC-invariant by construction).
        info: a :class:`ClassifierInfo` (task, fold, model description, noisy, metrics).
    """

    def __init__(self, module: nn.Module, class_names: Sequence[str], max_length: int, variant: str,
                 info: ClassifierInfo | None = None):
        self.module = module.eval()
        self.class_names = list(class_names)
        self.max_length = int(max_length)
        self.variant = variant
        self.info = info or ClassifierInfo()

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device) -> "Classifier":
        self.module.to(device)
        return self

    def predict_proba(self, seqs: Sequence[str], budget_tokens: int | None = None) -> np.ndarray:
        """Class probabilities float64[N, K] of N sequences (any lengths; cut to ``max_length``), in
        length-sorted batches of at most ``budget_tokens`` padded tokens on the classifier's device."""

        seqs = _checked(seqs)
        return predict_proba(self.module, seqs, self.max_length, rc_policy(self.variant).conjoin, budget_tokens)

    def predict(self, seqs: Sequence[str]) -> np.ndarray:
        """The most probable class id int64[N] of each sequence (``class_names[id]`` is its name)."""
        return self.predict_proba(seqs).argmax(1)

    def to_dict(self) -> dict:
        """The ``classifier.pt`` dict (plain types and tensors only)."""
        backbone = self.module.backbone
        return {"format": CLASSIFIER_FORMAT, "backbone": backbone.config.to_spec(),
                "num_classes": len(self.class_names), "pooling": self.module.pooling,
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()},
                "class_names": self.class_names, "max_length": self.max_length, "variant": self.variant,
                **self.info.to_dict()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the classifier atomically to ``path`` (read it back with :func:`dnadiff.load`)."""

        return save_checkpoint(path, self.to_dict())

    @classmethod
    def from_dict(cls, payload: dict, where: str = "the classifier file") -> "Classifier":
        """The classifier of a ``dnadiff-classifier/1`` dict; UserError when it does not describe one."""

        missing = [k for k in ("backbone", "num_classes", "pooling", "state_dict", "class_names", "max_length",
                               "variant") if k not in payload]
        if payload.get("format") != CLASSIFIER_FORMAT or missing:
            raise UserError(f"{where} is not a dnadiff classifier ({CLASSIFIER_FORMAT}"
                            + (f"; missing {', '.join(missing)}" if missing else "") + "): give a classifier_fold_K.pt "
                            "written by `dnadiff finetune --save-model`")
        module = build_classifier(build_model(payload["backbone"]), int(payload["num_classes"]), payload["pooling"])
        try:
            module.load_state_dict(payload["state_dict"])
        except RuntimeError as err:
            detail = (str(err).strip().splitlines() or [""])[-1].strip()[:160]
            raise UserError(f"weights do not fit the classifier described in {where} ({detail}): the file is "
                            "damaged or from another version") from None
        return cls(module, payload["class_names"], payload["max_length"], payload["variant"],
                   ClassifierInfo.from_dict(payload, where))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Classifier":
        """Read a ``classifier.pt`` (``weights_only=True``)."""

        return cls.from_dict(load_checkpoint(path), str(path))

    def __repr__(self) -> str:
        task = self.info.task or "?"
        return (f"Classifier(task={task!r}, classes={self.class_names}, variant={self.variant!r}, "
                f"max_length={self.max_length})")


def _checked(seqs: Sequence[str]) -> list[str]:
    if isinstance(seqs, str):
        raise UserError("seqs is one string: pass a list of sequences, e.g. [seq]")
    seqs = list(seqs)
    bad = next((i for i, s in enumerate(seqs) if not isinstance(s, str) or not s), None)
    if bad is not None:
        raise UserError(f"seqs[{bad}] is not a non-empty DNA string: give sequences over A/C/G/T (N allowed)")
    return seqs
