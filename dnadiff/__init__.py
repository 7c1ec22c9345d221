"""dnadiff: masked discrete diffusion on DNA.

The public API (imported on first use, so ``import dnadiff`` stays fast)::

    import dnadiff
    run = dnadiff.pretrain(genome="hg38.fa", config="demo", out="runs/demo")      # -> PretrainResult
    model = dnadiff.load(run.model_path)                                           # -> DNAModel
    seqs = model.generate(8, length=500, seed=0)
    bits = model.score(seqs)                    # bits/base (NELBO bound)
    vectors = model.embed(seqs)                 # float[N, d], reverse-complement invariant
    report = dnadiff.evaluate(run.model_path, genome="hg38.fa")                    # -> EvaluateResult
    ft = dnadiff.finetune("human_enhancers", data="train.tsv", checkpoint=run.model_path,
                          out="runs/ft", save_model=True)                          # -> FinetuneResult
    clf = dnadiff.load(ft.classifier_path)                                         # -> Classifier
    probs = clf.predict_proba(seqs)
    dnadiff.export(run.model_path, "caduceus_hf")                                  # Hugging Face format

Errors a caller can fix are :class:`dnadiff.errors.UserError` (a one-line message naming the parameter and
the fix); the ``dnadiff`` command prints them and exits with code 2.
"""
from __future__ import annotations

import importlib

from dnadiff.version import __version__

#: public name -> module that defines it
_API = {
    "pretrain": "dnadiff.training.pretrain",
    "PretrainResult": "dnadiff.training.pretrain",
    "evaluate": "dnadiff.evaluation",
    "EvaluateResult": "dnadiff.evaluation",
    "finetune": "dnadiff.finetuning.run",
    "aggregate": "dnadiff.finetuning.run",
    "FinetuneResult": "dnadiff.finetuning.run",
    "Classifier": "dnadiff.finetuning.classifier",
    "ClassifierInfo": "dnadiff.finetuning.classifier",
    "DataInfo": "dnadiff.data.info",
    "ModelFile": "dnadiff.checkpoints.format",
    "load": "dnadiff.api",
    "DNAModel": "dnadiff.generate",
    "export": "dnadiff.checkpoints.export",
    "UserError": "dnadiff.errors",
    "ConfigError": "dnadiff.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dnadiff' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
