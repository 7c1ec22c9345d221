"""One entry point from a config's ``data`` section to a Lightning DataModule and its ``data_info``.

DNA comes from a genome FASTA (:class:`dnadiff.data.genome_datamodule.GenomeDataModule`); text
and pixels from :mod:`dnadiff.training.modalities`; class-labelled DHS sequences (cell types) from
:mod:`dnadiff.data.dhs` for conditional pretraining. ``data_info`` is a
:class:`~dnadiff.data.info.DataInfo`, stored in checkpoints, enough to rebuild the same splits for evaluation.
"""
from __future__ import annotations

from pathlib import Path

from dnadiff.config import DNA_KEYS
from dnadiff.data.info import DataInfo
from dnadiff.errors import UserError
from dnadiff.data.fasta import compression_of, decompress_to_cache



def genome_path(path: str | Path, decompress: bool = False) -> Path:
    """The FASTA to read: plain-gzip files are decompressed once into a cache when ``decompress``."""

    path = Path(path)
    if not path.exists():
        raise UserError(f"genome file {path} does not exist: check the --genome path")
    if decompress and compression_of(path) == "gzip":
        return decompress_to_cache(path)
    return path


def build_dna(data: dict, genome: str | Path, seed: int = 0):
    """GenomeDataModule and data_info for DNA pretraining/evaluation (``rc_aug``: RC augmentation of the
    training windows, as the data section says; the command turns it off for RC-equivariant models)."""
    from dnadiff.data.genome_datamodule import GenomeDataModule

    as_list = lambda v: [c for c in (v.split(",") if isinstance(v, str) else (v or [])) if c]  # noqa: E731
    dm = GenomeDataModule(genome, bed=data.get("bed"), window=int(data["window"]), batch_size=int(data["batch_size"]),
                          num_workers=int(data["num_workers"]), val_contigs=as_list(data.get("val_contigs")),
                          test_contigs=as_list(data.get("test_contigs")), holdout_frac=float(data["holdout_frac"]),
                          max_n_frac=float(data["max_n_frac"]), rc_aug=bool(data["rc_aug"]),
                          seed=seed, max_eval_windows=data.get("max_eval_windows"))
    info = {"modality": "dna", "genome": str(genome), **{k: data.get(k) for k in DNA_KEYS}}
    info["val_contigs"], info["test_contigs"] = as_list(data.get("val_contigs")), as_list(data.get("test_contigs"))
    return dm, DataInfo.from_dict(info)  # the DNA sizes and units are DataInfo's defaults


def build_dhs(data: dict, seed: int = 0):
    """Class-labelled DHS sequences (cell types) for conditional pretraining: DHSDataModule and data_info."""
    from dnadiff.data.dhs import CLASS_NAMES, DHSDataModule

    path = Path(data["dhs"])
    if not path.is_file():
        raise UserError(f"DHS file {path} does not exist: check the --dhs path")
    dm = DHSDataModule(path, batch_size=int(data["batch_size"]), limit=data.get("max_sequences"), seed=seed)
    return dm, DataInfo(modality="dna", dhs=str(path), window=200, class_names=tuple(CLASS_NAMES))


def build_data(cfg: dict, seed: int = 0):
    """(datamodule, data_info) from a full config; ``cfg["data"]`` names exactly one source:
    ``genome``, ``text`` or ``images``."""
    from dnadiff.training import modalities

    data = cfg["data"]
    sources = [k for k in ("genome", "dhs", "text", "images") if data.get(k)]
    if len(sources) != 1:
        raise UserError("give exactly one data source: --genome FASTA, --dhs FILE, --text FILE or --images DIR|digits")
    if sources[0] == "genome":
        return build_dna(data, data["genome"], seed)
    if sources[0] == "dhs":
        return build_dhs(data, seed)
    return modalities.build_datamodule(data)
