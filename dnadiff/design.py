"""Design DNA toward a property: a fine-tuned classifier as the guide of masked diffusion, and an
independent classifier as the oracle that judges the designs.

    import dnadiff
    model = dnadiff.load("dhs.pt")
    guide = dnadiff.load("guide/classifier_fold_0.pt")           # finetune --save-model (--noisy)
    seqs = model.generate(200, guide=guide, target="HepG2", gamma=2.0)
    oracle = dnadiff.load("oracle/classifier_fold_0.pt")          # trained on disjoint data
    print(oracle_scores(oracle, seqs, "HepG2"))                   # target rate, mean log-odds

The guide is the core's :class:`dnadiff.diffusion.ClassifierGuidance` (exact or first-order form,
see :mod:`dnadiff.diffusion.guidance`) around :class:`ClassifierGuide`, which evaluates a saved
:class:`~dnadiff.finetuning.classifier.Classifier` on one-hot inputs (the token embedding is read
as one-hot @ table, so the first-order form can differentiate through it). A classifier trained
with ``finetune(noisy=True)`` reads partially masked sequences (the mask token where bases are
not yet revealed): the valid guide at every step. A clean classifier is used on the denoiser's
predicted x0 instead (``fill="x0"``): an approximation, stated in the stats.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dnadiff.alphabet import COMPLEMENT, MASK
from dnadiff.errors import ParameterError, UserError
from dnadiff.rc import rc_policy
from dnadiff.keys import check_value
from dnadiff.config import SampleConfig

#: DNA one-hot columns A C G T MASK -> those of the reverse complement
_RC_COLUMNS = COMPLEMENT[: MASK + 1]
#: the largest guidance strength (a larger one overflows the reweighted probabilities)
MAX_GAMMA = SampleConfig.keys()["gamma"].hi


def _token_embedding(module: nn.Module) -> nn.Embedding:
    """The backbone's token embedding (Caduceus ``embedding``, transformer ``embed``)."""
    inner = getattr(module.backbone, "backbone", None)
    for owner, name in ((inner, "embedding"), (module.backbone, "embed")):
        emb = getattr(owner, name, None) if owner is not None else None
        if isinstance(emb, nn.Embedding):
            return emb
    raise UserError("this classifier's backbone has no token embedding dnadiff knows: use a Caduceus or "
                    "transformer classifier from `dnadiff finetune --save-model`")


@contextlib.contextmanager
def _soft_embedding(emb: nn.Embedding, soft: torch.Tensor):
    """Within the block ``emb(ids)`` returns ``soft @ emb(arange)`` (soft: FloatTensor[B, L, <= rows])."""
    table = emb(torch.arange(emb.num_embeddings, device=emb.weight.device))  # per-token rows (RCPS too)
    pad = torch.zeros(*soft.shape[:-1], emb.num_embeddings - soft.shape[-1], device=soft.device, dtype=soft.dtype)
    full = torch.cat([soft, pad], -1).to(table.dtype)
    emb.forward = lambda ids: full @ table  # instance attribute shadows the class's forward
    try:
        yield
    finally:
        del emb.forward


class ClassifierGuide:
    """log p(target | x) of a saved classifier for one-hot DNA rows: the core's guide callable.

    Args:
        classifier: a :class:`~dnadiff.finetuning.classifier.Classifier`.
        target: the class name to design toward.
    Call: ``guide(x FloatTensor[M, L, 5] (A, C, G, T, mask), t FloatTensor[M]) -> FloatTensor[M]``;
    sequences longer than the classifier's ``max_length`` are cut to it (as in training). Caduceus-Ph
    classifiers conjoin x and its reverse complement, as their predictions do; counts ``calls``/``rows``.
    """

    def __init__(self, classifier, target: str):
        if target not in classifier.class_names:
            raise ParameterError("target", f"target={target!r} is not a class of this classifier: use one of "
                                 f"{', '.join(map(str, classifier.class_names))}")
        self.classifier, self.target = classifier, target
        self.index = classifier.class_names.index(target)
        self.module = classifier.module.eval()
        self.embedding = _token_embedding(self.module)
        self.conjoin = rc_policy(classifier.variant).conjoin and not getattr(self.module, "rcps", False)
        self.calls = self.rows = 0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits FloatTensor[M, K] of one-hot rows x [M, L, 5]."""
        x = x[:, : self.classifier.max_length].to(self.classifier.device)
        M, L = x.shape[:2]
        ids = torch.zeros(M, L, dtype=torch.long, device=x.device)  # the embedding reads ``soft`` instead
        valid = torch.ones(M, L, dtype=torch.bool, device=x.device)

        def strand(soft):
            with _soft_embedding(self.embedding, soft):
                return self.module.strand_logits(self.module.features(ids, valid), valid).float()

        out = strand(x)
        if self.conjoin:
            out = (out + strand(x.flip(1)[..., _RC_COLUMNS])) / 2
        return out

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += int(x.shape[0])
        return torch.log_softmax(self.logits(x), -1)[:, self.index]


def guide_fill(classifier) -> str:
    """The fill :func:`build_guidance` gives ``classifier`` by default: ``"mask"`` for one trained with
    ``noisy=True`` (it reads masked sequences), ``"x0"`` otherwise."""
    return "mask" if classifier.info.noisy else "x0"


def build_guidance(classifier, target: str | None, gamma: float = 1.0, form: str = "exact",
                   fill: str | None = None, chunk: int = 2048):
    """The core's :class:`~dnadiff.diffusion.ClassifierGuidance` for a saved classifier.

    ``fill`` defaults to ``"mask"`` for a classifier trained with ``noisy=True`` and to ``"x0"`` (the clean
    classifier on the denoiser's predicted x0: an approximation) otherwise.
    """
    from dnadiff.diffusion.guidance import FILLS, FORMS, ClassifierGuidance
    from dnadiff.finetuning.classifier import Classifier

    gamma = check_value(gamma, "gamma", SampleConfig.keys()["gamma"])  # finite and bounded: no NaN, no overflow
    if not isinstance(classifier, Classifier):
        raise ParameterError("guide", "guide is not a classifier: pass dnadiff.load('classifier_fold_K.pt') "
                             "(written by `dnadiff finetune --save-model`)")
    if target is None:
        raise ParameterError("target", f"a guide needs a target class: add target=NAME, one of "
                             f"{', '.join(map(str, classifier.class_names))}")
    if form not in FORMS:
        raise ParameterError("guide_form", f"guide_form={form!r} is unknown: use one of {', '.join(FORMS)}")
    fill = fill or guide_fill(classifier)
    if fill not in FILLS:
        raise ParameterError("guide_fill", f"guide_fill={fill!r} is unknown: use one of {', '.join(FILLS)}")
    return ClassifierGuidance(ClassifierGuide(classifier, target), gamma=float(gamma), form=form, fill=fill,
                              chunk=chunk)


def oracle_scores(oracle, seqs: Sequence[str], target: str) -> dict:
    """The oracle's verdict on designs: ``target_rate`` (fraction predicted as ``target``, with a Wilson 95%
    interval), ``mean_log_odds`` log p(target) - log(1 - p(target)) (mean, standard error) and
    ``mean_p_target``. The oracle must be trained on data disjoint from the guide's."""
    if target not in oracle.class_names:
        raise ParameterError("target", f"target={target!r} is not a class of the oracle: it knows "
                             f"{', '.join(map(str, oracle.class_names))}")
    k = oracle.class_names.index(target)
    probs = np.asarray(oracle.predict_proba(list(seqs)), dtype=np.float64)
    p = np.clip(probs[:, k], 1e-12, 1 - 1e-12)
    hit = probs.argmax(1) == k
    n = len(p)
    rate = float(hit.mean())
    z = 1.96
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = np.log(p) - np.log1p(-p)
    return {"oracle_target_rate": rate, "oracle_target_rate_ci": [float(centre - half), float(centre + half)],
            "oracle_mean_log_odds": float(lo.mean()),
            "oracle_log_odds_se": float(lo.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            "oracle_mean_p_target": float(p.mean()), "num_scored": n}


def check_guide_length(classifier, length: int) -> None:
    """UserError when designs are longer than the guide reads (it would steer only their start)."""
    if length > classifier.max_length:
        raise UserError(f"the guide reads {classifier.max_length} bases and the designs have {length}: "
                        f"generate at most --length {classifier.max_length} or fine-tune the guide with a larger max_length")


__all__ = ["ClassifierGuide", "build_guidance", "check_guide_length", "oracle_comparison", "oracle_scores"]


def oracle_comparison(model, oracle, designs: Sequence[str], target: str, options: dict) -> dict:
    """The oracle's figures of ``designs`` beside the same number of unguided samples (``options`` without the
    guide) and, when the checkpoint is class-conditional and knows ``target``, classifier-free guidance toward it
    (``options["guidance"]`` if positive, else w = 2). ``{"guided": ..., "unguided": ..., "cfg": ...}``."""
    base = {k: v for k, v in options.items() if k not in ("guide", "target", "gamma", "guide_form")}
    out = {"guided": oracle_scores(oracle, designs, target)}
    plain = {**base, "class_name": None, "guidance": 0.0}
    out["unguided"] = oracle_scores(oracle, model.generate(len(designs), **plain), target)
    if model.conditional and target in model.class_names:
        w = base.get("guidance") or 2.0
        out["cfg"] = oracle_scores(oracle, model.generate(len(designs), **{**base, "class_name": target,
                                                                             "guidance": w}), target)
        out["cfg"]["guidance"] = w
    return out
