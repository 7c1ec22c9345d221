"""The quality report of generated DNA (``dnadiff sample --report``): k-mer spectra, GC, memorisation,
NELBO, class recognition and the field's figures (Fréchet distance, 3-mer correlation, motifs), each
beside real held-out sequence cut to the generated length."""
from __future__ import annotations

import numpy as np

from dnadiff.data.reference import Reference
from dnadiff.eval.field_metrics import flat_field_figures
from dnadiff.eval.sequence_metrics import KmerClassifier, gc_fractions, report

#: at most this many labelled real sequences train the report's k-mer classifier (a few seconds).
CLASSIFIER_TRAIN_SIZE = 10_000

MAX_REFERENCE_PIECES = 256


def comparable_pieces(real: list[str], length: int, limit: int = MAX_REFERENCE_PIECES,
                      max_n_frac: float = 0.1) -> list[str]:
    """Real sequences cut to the generated length (a whole chromosome becomes windows), at most
    ``limit`` evenly spaced pieces, so the report compares like with like in bounded time. Pieces
    with more than ``max_n_frac`` non-A/C/G/T letters (assembly gaps) are left out, as the training
    windows leave them out: a run of N is no real sequence to compare generated DNA with."""
    pieces = [s[i:i + length] for s in real for i in range(0, max(1, len(s) - length + 1), length)]
    pieces = [p for p in pieces if p and sum(map(p.upper().count, "ACGT")) >= (1.0 - max_n_frac) * len(p)]
    if len(pieces) > limit:
        step = len(pieces) / limit
        pieces = [pieces[int(k * step)] for k in range(limit)]
    return pieces


def build_report(generator, seqs: list[str], class_name: str | None, reference: Reference | None,
                 train: list[str] | None) -> dict:
    """Quality figures of the generated ``seqs`` (see :func:`dnadiff.eval.sequence_metrics.report`)."""
    score = lambda s: generator.bits_per_base(s, class_name=class_name)  # noqa: E731
    if reference is None:
        bits = score(seqs)
        return {"num_generated": len(seqs), "gc_mean_generated": float(np.nanmean(gc_fractions(seqs))),
                "bits_per_base_generated": float(bits.mean())}
    train = train if train is not None else reference.train
    held_out = comparable_pieces(reference.held_out, max(len(s) for s in seqs))
    classifier = requested = None
    if class_name is not None and class_name in set(reference.label_names):
        names = sorted(set(reference.label_names))
        rng = np.random.default_rng(0)
        keep = rng.permutation(len(reference.labelled))[:CLASSIFIER_TRAIN_SIZE]
        classifier = KmerClassifier().fit([reference.labelled[i] for i in keep],
                                          [names.index(reference.label_names[i]) for i in keep])
        requested = [names.index(class_name)] * len(seqs)
    metrics = report(seqs, held_out, train=train, classifier=classifier, requested=requested, bits_per_base=score)
    names = sorted(set(reference.label_names))
    metrics.update(flat_field_figures(seqs, held_out, reference.labelled, [names.index(n) for n in reference.label_names]))
    return metrics
