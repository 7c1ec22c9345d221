"""``dnadiff.load``: one entry point for every file dnadiff reads as a model.

A generative model (a dnadiff ``model.pt`` or pretraining ``.ckpt``, an original Caduceus folder, a Hugging
Face hub id) becomes a :class:`dnadiff.generate.DNAModel`; a fine-tuned classifier (``classifier_fold_K.pt``
from ``finetune(save_model=True)``) a :class:`dnadiff.finetuning.classifier.Classifier`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from dnadiff.finetuning.classifier import CLASSIFIER_FORMAT, Classifier
from dnadiff.generate import DNAModel
from dnadiff.checkpoints.sources import load_model, load_payload, model_and_process
from dnadiff.checkpoints.format import MODEL_FORMAT, ModelFile, load_checkpoint


def load(source: str | os.PathLike, device: str | torch.device | None = None, download: bool = False):
    """The model in ``source`` on ``device`` (default CPU): a :class:`~dnadiff.generate.DNAModel` (``generate``,
    ``infill``, ``score``, ``embed``, ``variant_effects``) or a :class:`~dnadiff.finetuning.classifier.Classifier`
    (``predict_proba``, ``predict``). ``download`` allows fetching a hub id missing from the cache.

    Raises:
        UserError: a missing, corrupt or unknown file (one line naming it and the fix).
    """
    path = Path(source)
    if path.is_file():  # one read: a classifier, a model.pt, or a Lightning .ckpt
        payload = load_checkpoint(path)
        if payload.get("format") == CLASSIFIER_FORMAT:
            return Classifier.from_dict(payload, str(path)).to(device or "cpu")
        record = ModelFile.from_dict(payload, str(path)) if payload.get("format") == MODEL_FORMAT else load_payload(path)
        denoiser, diffusion, payload = model_and_process(record, str(path))
    else:
        denoiser, diffusion, payload = load_model(source, download=download)
    return DNAModel(denoiser.to(device or "cpu"), diffusion, payload.data)
