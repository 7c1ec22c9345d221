"""What each data modality means to the rest of the package, in one place (instead of branching on its name).

A checkpoint's :class:`~dnadiff.data.info.DataInfo` names one of :data:`MODALITIES`; ``info.kind`` is its
:class:`Modality` (a file without a modality is DNA, as every file written before text and pixels existed).
"""
from __future__ import annotations

from dataclasses import dataclass

from dnadiff.errors import UserError


@dataclass(frozen=True)
class Modality:
    """One modality.

    ``caduceus``: a DNA vocabulary from :mod:`dnadiff.data.tokenizer` (A C G T, mask, N, PAD), read by the
    Caduceus backbone, fine-tuned and scored; otherwise the model's sizes come from the data. ``arguments``: the
    data arguments of :func:`dnadiff.evaluate` that fit it; ``hint``: how the command line gives its data.
    ``markov_baseline``: held-out scores are reported in bits/nt beside a Markov chain; otherwise in the data's
    own unit beside the uniform baseline. ``samples_file``: a finished pretraining run writes samples
    (text, an image grid) into its folder.
    """

    name: str
    caduceus: bool
    arguments: tuple[str, ...]
    hint: str
    markov_baseline: bool
    samples_file: bool


MODALITIES: dict[str, Modality] = {
    "dna": Modality("dna", caduceus=True, arguments=("genome", "region"), hint="--genome", markov_baseline=True,
                    samples_file=False),
    "text": Modality("text", caduceus=False, arguments=("text",), hint="--text or --images", markov_baseline=False,
                     samples_file=True),
    "pixels": Modality("pixels", caduceus=False, arguments=("images",), hint="--text or --images",
                       markov_baseline=False, samples_file=True),
}


def modality_of(name: str) -> Modality:
    """The :class:`Modality` of a name (a stored data entry is read by :meth:`DataInfo.from_dict
    <dnadiff.data.info.DataInfo.from_dict>`, which takes DNA when it names none)."""
    if name not in MODALITIES:
        raise UserError(f"unknown data modality {name!r} in this checkpoint: it was not written by dnadiff "
                        f"(modalities are {', '.join(MODALITIES)})")
    return MODALITIES[name]
