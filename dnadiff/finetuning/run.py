"""Fine-tuning as a library call: :func:`finetune` (what ``dnadiff finetune`` runs) and :func:`aggregate`.

    ft = dnadiff.finetune("human_enhancers", data="train.tsv", checkpoint="runs/demo/model.pt",
                          out="runs/ft", max_epochs=2, save_model=True)
    ft.summary(), ft.results["summary"]["accuracy"]["mean"], ft.classifier_paths

Every input is checked before any work and before anything is written. Each fold writes ``OUT/fold_K.json``
atomically when it completes (with ``save_model`` also ``OUT/classifier_fold_K.pt``, the fold's selected
weights); a whole run then merges the fold files into ``OUT/results.json`` and ``OUT/results.md``, exactly as
:func:`aggregate` does for a SLURM array of ``fold=K`` jobs.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from lightning.pytorch.utilities import rank_zero_only

from dnadiff.data.genomic_benchmarks import load_task, resolve_task
from dnadiff.devices import lightning_devices
from dnadiff.errors import ParameterError, UserError
from dnadiff.finetuning import protocol_splits, run_finetune, run_header, subsample, trainer
from dnadiff.finetuning.batches import small_data_batch
from dnadiff.finetuning.report import aggregate as merge_folds, classifier_path, fold_path, plural, write_fold, write_results
from dnadiff.finetuning.trainer import load_finetune_config
from dnadiff.models import count_parameters
from dnadiff.models.config import caduceus_spec
from dnadiff.provenance import write_provenance
from dnadiff.keys import check_value
from dnadiff.training.run_folder import LOCK_NAME, RunLock
from dnadiff.logs import quiet_frameworks

#: model_size choices (Caduceus-Ph presets of dnadiff.models.config.CaduceusConfig): "470k" is the Caduceus
#: paper's Genomic Benchmarks model (d_model 118, 4 layers); "demo" a CPU-sized one.
MODEL_SIZES = ("demo", "470k")
PROTOCOLS = ("cv", "caduceus")
SELECTIONS = ("inner", "held-out")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced: the merged ``results`` dict (None for a single ``fold=K`` job), the files."""

    task: str
    out: Path
    results: dict | None
    fold_paths: list[Path]
    classifier_paths: list[Path] = field(default_factory=list)
    json_path: Path | None = None
    markdown_path: Path | None = None
    fold: int | None = None
    plot_path: Path | None = None

    def summary(self) -> str:
        """One line: accuracy mean ± std over the runs beside the baselines, where the results are."""
        if self.results is None:
            run = json.loads(self.fold_paths[0].read_text())["run"]
            acc = (run["model"] or {}).get("accuracy")
            return (f"{self.task}: fold {self.fold} accuracy {'n/a' if acc is None else f'{acc:.3f}'}; wrote "
                    f"{self.fold_paths[0]} (merge the folds with `dnadiff finetune --aggregate {self.out}`)")
        return summary_line(self.results, self.json_path)


def finetune(
    task: str,
    *,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    test_data: str | os.PathLike | None = None,
    genome: str | os.PathLike | None = None,
    coordinates: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    download: bool = False,
    checkpoint: str | os.PathLike | None = None,
    from_scratch: bool = False,
    model_size: str | None = None,
    folds: int = 5,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    protocol: str = "cv",
    selection: str = "inner",
    max_examples: int | None = None,
    baselines: bool | Sequence[str] = True,
    seed: int = 0,
    micro_batch: int | None = None,
    fold: int | None = None,
    force: bool = False,
    save_model: bool = False,
    noisy: bool = False,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = 1,
    precision: str = "auto",
    strategy: str = "auto",
    progress: str | None | Callable[[str, int, int, float], None] = "bar",
) -> FinetuneResult:
    """Fine-tune a backbone on a Genomic Benchmarks task with cross-validation, beside the k-mer and CNN baselines.

    Args:
        task: a Genomic Benchmarks task (``human_enhancers_cohn``; aliases such as ``human_enhancers``).
        out: the results folder.
        data (+ test_data) / genome + coordinates / cache (+ download): where the examples come from.
        checkpoint: the backbone (model.pt, .ckpt, an original Caduceus folder or hub id), or from_scratch
            (random weights of ``model_size``: "demo" or "470k", default 470k).
        folds: folds (cv) or seeds (caduceus); protocol: "cv" (stratified k-fold) or "caduceus" (90/10 re-splits
            scored on the official test split). selection (cv): "inner" (default, honest: each fold picks its epoch on
            a stratified, seeded inner validation split of its training folds and scores the held-out fold once) or
            "held-out" (the Caduceus/HyenaDNA papers' choice: the epoch that scores best on the reported fold,
            optimistic; marked so in results.md); the CNN baseline is selected the same way. max_epochs, batch_size, max_length, micro_batch: override the
            task's config (configs/finetune/<task>.yaml). max_examples: subsample each split. baselines: True,
            False or a subset of ("kmer_logreg", "cnn"). fold: run only fold K (one job of an array).
        force: overwrite results already in ``out``. save_model: write ``OUT/classifier_fold_K.pt`` per fold.
        noisy: train on sequences masked at a random level (the classifier reads partially masked sequences:
            a guide of masked diffusion at every step, :mod:`dnadiff.design`); stated in the saved file.
        accelerator, devices, precision, strategy: Lightning's (one fold across several GPUs with ddp).
        progress: "bar" (rich, on stderr), None, or ``callable(event, fold, epoch, value)`` with events "fold",
            "epoch" (value = the epoch's validation accuracy) and "baselines".
    Raises:
        UserError / ParameterError (one line naming the parameter and the fix), before any training.
    """
    arguments = dict(locals())

    with quiet_frameworks():
        return _finetune(**arguments)


def _finetune(task, out, data, test_data, genome, coordinates, cache, download, checkpoint, from_scratch, model_size,
              folds, max_epochs, batch_size, max_length, protocol, selection, max_examples, baselines, seed, micro_batch, fold,
              force, save_model, noisy, accelerator, devices, precision, strategy, progress) -> FinetuneResult:

    folds = check_value(folds, "folds", "int", lo=1, hi=100)
    seed = check_value(seed, "seed", "int", lo=0, hi=2**32 - 1)
    overrides = {}
    for name, value, hi in (("max_epochs", max_epochs, None), ("batch_size", batch_size, 65_536),
                            ("max_length", max_length, None), ("micro_batch", micro_batch, 65_536),
                            ("max_examples", max_examples, None)):
        if value is not None:
            overrides[name] = check_value(value, name, "int", lo=1, **({"hi": hi} if hi else {}))
    if protocol not in PROTOCOLS:
        raise ParameterError("protocol", f"protocol={protocol!r} is unknown: use cv or caduceus")
    if selection not in SELECTIONS:
        raise ParameterError("selection", f"selection={selection!r} is unknown: use inner (honest) or held-out "
                                          "(the papers' optimistic selection)")
    if protocol == "caduceus" and selection != "inner":
        raise ParameterError("selection", f"selection={selection!r} applies to protocol='cv' only: the caduceus "
                                          "protocol picks its epoch on its 10% validation split; drop the selection")
    if model_size is not None and model_size not in MODEL_SIZES:
        raise ParameterError("model_size", f"model_size={model_size!r} is unknown: use one of {', '.join(MODEL_SIZES)}")
    if fold is not None:
        fold = check_value(fold, "fold", "int", lo=0, hi=99)
        if fold >= folds:
            raise ParameterError("fold", f"fold={fold} is outside 0..{folds - 1} (folds={folds}): give a fold in that range")
    names = _baseline_names(baselines)
    if progress not in ("bar", None) and not callable(progress):
        raise ParameterError("progress", f"progress={progress!r} is not a progress mode: use 'bar', None or a callable")
    device = lightning_devices(accelerator, devices, precision, strategy)
    out = check_out(out, fold, force)
    task, note = resolve_task(task)
    notes_shown = [note] if note else []
    config = load_finetune_config(task)
    for name, attr in (("max_epochs", "epochs"), ("batch_size", "batch_size"), ("max_length", "max_length"),
                       ("micro_batch", "micro_batch")):
        if name in overrides:
            setattr(config, attr, overrides[name])
    config.noisy = bool(noisy)
    examples = load_task(task, data=data, test_data=test_data, genome=genome, coordinates=coordinates, cache=cache,
                         download=download)
    examples.train = subsample(examples.train, max_examples, seed)
    if examples.test is not None:
        examples.test = subsample(examples.test, max_examples, seed)
    splits = protocol_splits(examples, protocol, folds, seed)  # user errors before any display
    make_classifier, variant, model_info = classifier_factory(checkpoint, from_scratch, model_size,
                                                              examples.num_classes, config.pooling, download)
    notes = []
    fold_train = min(len(tr) for tr, _ in splits)
    if batch_size is None:
        batch = small_data_batch(fold_train, config.batch_size)
        if batch != config.batch_size:
            notes.append(f"{fold_train} training examples per fold give "
                         f"{plural(math.ceil(fold_train / config.batch_size), 'optimizer step')} per epoch at batch "
                         f"{config.batch_size}: batch lowered to {batch} "
                         f"({plural(math.ceil(fold_train / batch), 'step')} per epoch); --batch-size overrides")
            config.batch_size = batch
    header = run_header(examples, config, protocol, folds, seed, selection)
    header["max_examples"] = max_examples
    if force and fold is None:  # a full rerun replaces the folder's earlier results
        for stale in [*out.glob("fold_*.json"), *out.glob("classifier_fold_*.pt"), out / "results.json",
                      out / "results.md"]:
            stale.unlink(missing_ok=True)
    written, saved = [], []
    lock = _folder_lock(out, fold) if rank() == 0 else None
    try:
        def on_fold(run: dict) -> None:
            if rank() == 0:  # with strategy="ddp" every process runs the fold; one writes it
                written.append(write_fold(out, header, model_info, run, notes))

        def on_model(index: int, classifier) -> None:
            if rank() == 0 and save_model:
                from dnadiff.finetuning.classifier import Classifier, ClassifierInfo

                record = ClassifierInfo(task=task, fold=index, description=model_info["description"],
                                        noisy=bool(config.noisy))
                clf = Classifier(classifier, examples.class_names, config.max_length, variant, record)
                saved.append(clf.save(classifier_path(out, index)))

        if rank() == 0:
            target = out / ("provenance.json" if fold is None else f"provenance_fold_{fold}.json")
            write_provenance(target, config={**header, "model": model_info}, device=device)
        with _progress_display(progress, task, protocol, folds, fold, config.epochs, notes_shown + notes) as callback:
            run_finetune(examples, make_classifier, config, variant, protocol=protocol, folds=folds, seed=seed,
                         baselines=names, cnn_epochs=config.epochs, progress=callback, splits=splits, only=fold,
                         device=device, on_fold=on_fold, on_model=on_model, selection=selection)
        result = FinetuneResult(task, out, None, written, saved, fold=fold)
        if rank() != 0 or fold is not None:
            return result
        result.results = merge_folds(out)  # the fold files just written: the same merge a SLURM array uses
        result.json_path, result.markdown_path = write_results(out, result.results)
        from dnadiff.plots import finetune_plot

        result.plot_path = finetune_plot(result.results, out)
        return result
    finally:
        if lock is not None:
            lock.release()


def _folder_lock(out: Path, fold: int | None) -> RunLock:
    """The lock of a results folder: ``.lock`` for a whole run, ``.lock_fold_K`` for a ``fold=K`` job (the jobs of
    one array run side by side). A second run into the folder, a second job of the same fold, or a whole run and a
    fold job at once is refused in one line."""
    lock = RunLock(out, LOCK_NAME if fold is None else f"{LOCK_NAME}_fold_{fold}")
    others = [RunLock(out, p.name) for p in (out.glob(f"{LOCK_NAME}_fold_*") if fold is None else [out / LOCK_NAME])]
    busy = next((other for other in others if other.held_elsewhere()), None)
    if busy is not None:
        raise busy.refusal()
    return lock.acquire()


def aggregate(folder: str | os.PathLike) -> FinetuneResult:
    """Merge ``folder/fold_*.json`` into ``results.json`` / ``results.md`` (atomically); UserError for fold files
    of different experiments or missing folds."""

    folder = Path(folder)
    results = merge_folds(folder)
    json_path, md_path = write_results(folder, results)
    from dnadiff.plots import finetune_plot

    return FinetuneResult(results["task"], folder, results, sorted(folder.glob("fold_*.json")),
                          sorted(folder.glob("classifier_fold_*.pt")), json_path, md_path,
                          plot_path=finetune_plot(results, folder))


def summary_line(results: dict, json_path) -> str:
    """``task: accuracy 0.712 ± 0.013 over 5 folds (held-out folds); baselines: ...; results in PATH``."""
    acc = results["summary"]["accuracy"]
    base = "; ".join(f"{name} {b['summary']['accuracy']['mean']:.3f}" for name, b in results["baselines"].items())
    runs = "folds" if results["protocol"] == "cv" else "seeds"
    std = "n/a" if math.isnan(acc["std"]) else f"{acc['std']:.3f}"
    head = (f"accuracy {acc['mean']:.3f} ± {std} over {len(results['folds'])} {runs}" if results["folds"]
            else "baselines only")
    return (f"{results['task']}: {head} ({results['summary_scope']})" + (f"; baselines: {base}" if base else "")
            + f"; results in {json_path}")


def classifier_factory(checkpoint, from_scratch: bool, model_size: str | None, num_classes: int, pooling: str,
                       download: bool = False):
    """(make_classifier, variant, model description) from ``checkpoint`` / ``from_scratch`` / ``model_size``."""

    if checkpoint and from_scratch:
        raise ParameterError("from_scratch", "from_scratch=True and a checkpoint given: choose one backbone source")
    if not checkpoint and not from_scratch:
        raise UserError("say where the backbone comes from: --checkpoint CKPT or --from-scratch")
    size = caduceus_spec(model_size, variant="ph") if model_size else None
    if checkpoint:
        backbone, spec = trainer.backbone_from_checkpoint(checkpoint, size, download=download)
        init = f"checkpoint {checkpoint}"

        def fresh_backbone():
            return copy.deepcopy(backbone)
    else:
        spec = size or caduceus_spec("470k", variant="ph")
        backbone = trainer.backbone_from_scratch(spec)
        init = "from scratch"

        def fresh_backbone():
            return trainer.backbone_from_scratch(spec)
    variant = trainer.rc_variant(backbone)
    params = count_parameters(backbone)
    description = (f"{spec.get('name', 'caduceus')}-{variant} d_model {spec.get('d_model')} x {spec.get('n_layer')} "
                   f"layers ({params:,} parameters), {init}")

    def make_classifier():
        return trainer.build_classifier(fresh_backbone(), num_classes, pooling)

    return make_classifier, variant, {"spec": spec, "variant": variant, "init": init,
                                      "parameters": params, "description": description}


def check_out(out, fold: int | None, force: bool) -> Path:
    """ParameterError, before any work, when ``out`` cannot take this run's results: an existing file, a folder
    that cannot be created or written, or (without ``force``) one holding results of a run (the fold's own
    file for ``fold=K``; any results or fold file otherwise). Creates nothing."""

    if out is None:
        raise ParameterError("out", "out=None: give a folder for the results")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ParameterError("out", f"out={path} is an existing file: give a folder for the results")
    existing = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError("out", f"out={path} cannot be written ({existing} is not a writable folder): "
                                    "choose another folder")
    if path.is_dir() and not force:
        held = [fold_path(path, fold)] if fold is not None else \
            [path / "results.json", path / "results.md", *sorted(path.glob("fold_*.json"))]
        held = [p for p in held if p.exists()]
        if held:
            raise UserError(f"--out {path} already holds results ({held[0].name}): choose another --out, "
                            "or add --force to overwrite them")
    return path


def rank() -> int:
    """Global rank of this process in a multi-process (DDP) run, 0 otherwise."""

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _baseline_names(baselines) -> tuple[str, ...]:
    known = ("kmer_logreg", "cnn")
    if baselines is True:
        return known
    if baselines is False or baselines is None:
        return ()
    names = tuple(baselines)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ParameterError("baselines", f"baselines={list(names)} names unknown baselines {unknown}: use True, "
                                          f"False or a subset of {list(known)}")
    return names


def plain_progress(task: str, protocol: str, folds: int, epochs: int, stream=None):
    """A progress callback printing one unwrapped line per event (for output that is no terminal):
    ``human_enhancers_cohn cv run 2/5: epoch 1/2, selection accuracy 0.655``."""

    def callback(event: str, index: int, epoch: int, value: float) -> None:
        head = f"{task} {protocol} run {index + 1}/{folds}"
        text = {"fold": f"{head}: started", "baselines": f"{head}: baselines",
                "epoch": f"{head}: epoch {epoch + 1}/{epochs}, selection accuracy {value:.3f}"}.get(event)
        if text:
            print(text, file=stream or sys.stderr, flush=True)

    return callback


@contextmanager
def _progress_display(progress, task: str, protocol: str, folds: int, fold: int | None, epochs: int,
                      notes: list[str]):
    """The progress callback of a run: a rich bar on stderr (``"bar"``), the caller's callable, or none."""
    if progress != "bar":
        yield progress
        return
    if not sys.stderr.isatty():  # a log file, SLURM, nohup: unwrapped notes and one plain line per epoch
        for note in notes:
            print(f"note: {note}", file=sys.stderr, flush=True)
        yield plain_progress(task, protocol, folds, epochs)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    for note in notes:
        console.print(f"note: {note}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        total_runs = 1 if fold is not None else folds
        runs = bar.add_task(f"{task} {protocol}", total=total_runs, status="")
        epoch_bar = bar.add_task("epochs", total=epochs, status="")
        started = []

        def callback(event: str, index: int, epoch: int, value: float) -> None:
            if event == "fold":
                bar.update(runs, completed=len(started), status=f"run {index + 1}/{folds}")
                started.append(index)
                bar.reset(epoch_bar, total=epochs)
                bar.update(epoch_bar, status="")
            elif event == "epoch":
                bar.update(epoch_bar, completed=epoch + 1, status=f"val acc {value:.3f}")
            elif event == "baselines":
                bar.update(epoch_bar, status="baselines")

        yield callback
        bar.update(runs, completed=total_runs, status="done")
