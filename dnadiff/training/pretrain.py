"""Masked-diffusion pretraining as a library call: :func:`pretrain` (what ``dnadiff pretrain`` runs).

    import dnadiff
    run = dnadiff.pretrain(genome="hg38.fa", config="demo", out="runs/demo", max_steps=200)
    run.model_path, run.val_bits_per_token, run.tokens_per_s

Every input is checked before the run folder is created or touched (a refused call writes nothing); the
folder is locked while the run uses it; ``resume`` continues the step count, optimizer, EMA, data stream and
masking noise exactly; multi-GPU and multi-node go through Lightning's strategies (``strategy="ddp"``).
Writes ``OUT/config.yaml`` (the resolved config), ``OUT/provenance.json`` (config, versions, device, command
line: :mod:`dnadiff.provenance`), ``OUT/checkpoints/`` (Lightning checkpoints, ``last.ckpt``),
``OUT/logs/metrics.csv``, ``OUT/curves.png`` (with matplotlib), ``OUT/model.pt`` (EMA weights, what :func:`dnadiff.load` reads) and
``OUT/summary.json``; text and pixel runs also a few samples.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import lightning as L
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint

from dnadiff.atomic import atomic_write
from dnadiff.devices import lightning_devices
from dnadiff.errors import ParameterError, UserError

#: a plain progress line at most this often when the output is no terminal (``progress="lines"``)
PROGRESS_LINE_SECONDS = 30.0
from dnadiff.models import count_parameters
from dnadiff.models.config import model_config
from dnadiff.provenance import write_provenance
from dnadiff.training.callbacks import (AtomicCheckpointIO, ProgressLines, StepBar, StepCallback, Throughput,
                                        WindowAudit, scalar_metrics)
from dnadiff.checkpoints.format import load_checkpoint, save_checkpoint
from dnadiff.keys import check_value
from dnadiff.data.info import DataInfo
from dnadiff.rc import rc_policy
from dnadiff.config import load_config, validate
from dnadiff.training.data_sources import build_data, genome_path
from dnadiff.training.estimate import estimate_run, warmup_warning
from dnadiff.training.warm_start import OPTION_KEYS, apply_init, check_modality, describe, init_model_spec
from dnadiff.training.memory import prepare_memory
from dnadiff.training.modalities import model_io, save_samples
from dnadiff.training.diffusion_module import DiffusionModule
from dnadiff.training.run_folder import RunLock, appending_csv_logger, clean_start, holds_run, trim_metrics
from dnadiff.logs import quiet_frameworks
from dnadiff.checkpoints.sources import load_payload
from dnadiff.data.tokenizer import MASK


@dataclass
class PretrainResult:
    """What a pretraining run produced.

    ``metrics`` holds every scalar Lightning logged last (``val/bits_per_token``, ``train/tokens_per_s``, ...).
    """

    out: Path
    model_path: Path
    steps: int
    seconds: float
    parameters: int
    unit: str
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def val_bits_per_token(self) -> float:
        """Held-out NELBO in bits per token (per nucleotide for DNA) of the EMA weights; NaN if never validated."""
        return float(self.metrics.get("val/bits_per_token", math.nan))

    @property
    def tokens_per_s(self) -> float:
        return float(self.metrics.get("train/tokens_per_s", math.nan))

    def summary(self) -> str:
        """One line: steps, time, size, held-out bits and perplexity, speed, where the model is."""
        bits = self.val_bits_per_token
        return (f"{self.steps} steps in {self.seconds} s, {self.parameters:,} parameters, val {bits:.4f} {self.unit} "
                f"(perplexity {math.exp(bits * math.log(2)):.3f}), {self.tokens_per_s:,.0f} tokens/s -> {self.model_path}")


def pretrain(
    genome: str | os.PathLike | None = None,
    *,
    dhs: str | os.PathLike | None = None,
    text: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/pretrain",
    overrides: Mapping[str, object] | Sequence[str] = (),
    bed: str | os.PathLike | None = None,
    val_contigs: str | Sequence[str] | None = None,
    test_contigs: str | Sequence[str] | None = None,
    decompress: bool = False,
    max_steps: int | None = None,
    seed: int | None = None,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = 1,
    precision: str = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    resume: str | os.PathLike | bool | None = None,
    force: bool = False,
    init: str | os.PathLike | None = None,
    download: bool = False,
    progress: str | None | Callable[[int, dict], None] = "bar",
    logger: str = "csv",
) -> PretrainResult:
    """Pretrain a masked-diffusion model; returns a :class:`PretrainResult` (``.model_path`` for :func:`dnadiff.load`).

    Args:
        genome / dhs / text / images: the data source, exactly one (a FASTA plain or bgzip; a class-labelled
            DHS table; a UTF-8 text file; ``"digits"`` or a CIFAR-10 folder).
        config: a YAML path or a bundled name (``configs/pretrain/``: ``demo``, ``470k``, ``7m``, ...;
            default ``470k`` for DNA, ``dhs_conditional``, ``text8_tiny``, ``digits_tiny``).
        out: the run folder. overrides: config values, ``{"optim.lr": 1e-3}`` or ``["optim.lr=1e-3"]``.
        bed, val_contigs, test_contigs, decompress: genome options (see the README).
        max_steps, seed: override ``train.max_steps`` / ``train.seed``.
        accelerator, devices, precision, strategy, num_nodes: Lightning's (``precision="auto"``: the config's,
            else bf16-mixed on a GPU and 32-true on the CPU).
        resume: continue the run in ``out`` (True: from ``out/checkpoints/last.ckpt``, or a checkpoint path);
            force: start over in a folder that holds a run; run a CPU job estimated to take over 12 hours (timed on
                a few real steps first, see :mod:`dnadiff.training.estimate`).
        init: start from a model (an original Caduceus folder or hub id: MDLM's generative fine-tuning of the
            MLM; or a dnadiff model.pt); download: fetch a hub id missing from the cache.
        progress: ``"bar"`` (one bar: step/total, tokens/s, bits/token, ETA; plain lines when stderr is no
            terminal), ``"lines"`` (a plain line every 30 s and after each validation), None, or
            ``callable(step, metrics)`` called every ``train.log_every`` steps.
        logger: "csv" (``OUT/logs/metrics.csv`` only, the default), "tensorboard" or "wandb" (also Lightning's
            logger of that name; the CSV log is always kept).
    Raises:
        UserError / ParameterError (one line naming the parameter or file and the fix), before anything is written.
    """
    arguments = dict(locals())

    with quiet_frameworks():
        return _pretrain(**arguments)


def _pretrain(genome, dhs, text, images, config, out, overrides, bed, val_contigs, test_contigs, decompress,
              max_steps, seed, accelerator, devices, precision, strategy, num_nodes, resume, force, init, download,
              progress, logger="csv") -> PretrainResult:

    # every input is checked before the run folder is created or touched
    if max_steps is not None:
        max_steps = check_value(max_steps, "max_steps", "int", lo=1)
    if seed is not None:
        seed = check_value(seed, "seed", "int", lo=0, hi=2**63 - 1)
    num_nodes = check_value(num_nodes, "num_nodes", "int", lo=1, hi=100_000)
    check_logger(logger)
    if progress not in ("bar", "lines", None) and not callable(progress):
        raise ParameterError("progress", f"progress={progress!r} is not a progress mode: use 'bar', 'lines', None "
                                         "or a callable(step, metrics)")
    cfg = resolve_config(config, overrides, genome=genome, dhs=dhs, text=text, images=images, bed=bed,
                         val_contigs=val_contigs, test_contigs=test_contigs, decompress=decompress,
                         max_steps=max_steps, seed=seed)
    device = lightning_devices(accelerator, devices, precision, strategy)  # checked before anything is created
    if precision in (None, "auto") and cfg["train"].get("precision", "auto") != "auto":
        device["precision"] = cfg["train"]["precision"]  # the config's choice unless precision says otherwise
    init_payload = None
    if init:

        init_payload = load_payload(init, download=download)
        asked = dict(cfg["model"])
        cfg["model"] = init_model_spec(cfg["model"], init_payload)
        for key in _override_keys(overrides, "model"):  # an architecture override the source would silently replace
            if key in asked and key not in OPTION_KEYS and cfg["model"].get(key, asked[key]) != asked[key]:
                raise ParameterError("init", f"init={init} brings its own architecture (model.{key}="
                                             f"{cfg['model'].get(key)}), so the override model.{key}={asked[key]} "
                                             "cannot apply: drop it, or pretrain from scratch without init")
    out = check_out(Path(out), resuming=bool(resume), force=force)
    if cfg["data"].get("genome"):
        cfg["data"]["genome"] = str(genome_path(cfg["data"]["genome"], cfg["data"].get("decompress", False)))
    resumed = resolve_resume(resume, out)
    variant = cfg["model"].get("variant", "ph") if cfg["model"].get("name", "caduceus") == "caduceus" else None
    if not rc_policy(variant).augment:  # RC-equivariant by construction (PS): augmentation would change nothing
        cfg["data"]["rc_aug"] = False
    seed = int(cfg["train"]["seed"])
    L.seed_everything(seed, workers=True, verbose=False)
    dm, data_info = build_data(cfg, seed)
    if hasattr(dm, "check_readable"):
        dm.check_readable()
    if init_payload is not None:
        check_modality(init_payload, data_info, str(init))
    module = build_module(cfg, data_info)
    cfg["model"] = dict(module.hparams.model_spec)  # every field resolved and checked, as model.pt stores it
    if init_payload is not None:
        apply_init(module, init_payload, str(init))
        if progress is not None:
            print(describe(init_payload, str(init)), flush=True)
    if resumed is not None:
        check_resume(*resumed, module, data_info)
    trainer = make_trainer(cfg, device, num_nodes, out, progress, logger)
    memory_line = prepare_memory(cfg, module.model, trainer)  # activation checkpointing; refuses a run that cannot fit
    if trainer.is_global_zero and progress is not None:
        print(memory_line, flush=True)
    estimate = None
    if launching_process():  # a few real steps on the device, before the run folder is touched
        warning = warmup_warning(cfg)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        start_step = int(resumed[1].get("global_step", 0)) if resumed else 0
        estimate = estimate_run(cfg, module, device, start_step, force)
        if progress is not None:
            print(estimate["line"], flush=True)  # information, on stdout (stderr is for warnings and errors)
    lock = RunLock(out) if trainer.is_global_zero and launching_process() else None
    try:
        if lock is not None:
            lock.acquire()
            clean_start(out, resumed[0] if resumed else None, fresh=force)
            if resumed is not None:
                trim_metrics(out / "logs" / "metrics.csv", int(resumed[1].get("global_step", 0)))
            atomic_write(out / "config.yaml", lambda f: f.write(yaml.safe_dump(cfg, sort_keys=False).encode()))
            write_provenance(out, config=cfg, device=device,
                             extra={"resumed_from": str(resumed[0]) if resumed else None, "init": str(init) if init else None,
                                    "estimate": {k: v for k, v in (estimate or {}).items() if k != "line"} or None})
        summary = fit(trainer, module, dm, resumed, out, init_payload.original if init_payload else None,
                      progress is not None)
    finally:
        if lock is not None:
            lock.release()
    metrics = {k: v for k, v in summary.items() if k not in ("steps", "seconds", "parameters")}
    return PretrainResult(out=out, model_path=out / "model.pt", steps=summary["steps"], seconds=summary["seconds"],
                          parameters=summary["parameters"], unit=data_info.unit, metrics=metrics, config=cfg)


def _override_keys(overrides, section: str) -> list[str]:
    """The keys of ``section`` that ``overrides`` (``{"model.d_model": 8}`` or ``["model.d_model=8"]``) set."""
    keys = overrides.keys() if isinstance(overrides, Mapping) else [str(item).split("=", 1)[0] for item in overrides]
    return [k.strip().split(".", 1)[1] for k in keys if k.strip().startswith(f"{section}.") and "." in k.strip()]


def resolve_config(config, overrides, *, genome=None, dhs=None, text=None, images=None, bed=None, val_contigs=None,
                   test_contigs=None, decompress=False, max_steps=None, seed=None) -> dict:
    """The checked config of a run: defaults <- the YAML (a path or a bundled name) <- ``overrides`` <- the
    explicit arguments (data source, contigs, ``max_steps``, ``seed``)."""

    default = ("text8_tiny" if text else "digits_tiny" if images else "dhs_conditional" if dhs else "470k")
    cfg = load_config(str(config) if config else default, overrides)
    data = cfg["data"]
    for key, value in (("genome", genome), ("dhs", dhs), ("text", text), ("images", images), ("bed", bed)):
        if value:
            data[key] = str(value)
    for key, value in (("val_contigs", val_contigs), ("test_contigs", test_contigs)):
        if value:
            data[key] = value if isinstance(value, str) else ",".join(map(str, value))
    if decompress:
        data["decompress"] = True
    if max_steps is not None:
        cfg["train"]["max_steps"] = max_steps
    if seed is not None:
        cfg["train"]["seed"] = seed
    return validate(cfg)


def check_out(out: Path, resuming: bool, force: bool) -> Path:
    """Check that ``out`` can hold this run, creating nothing (UserError otherwise).

    A folder holding a previous run is refused unless resuming or starting over (``force``).
    """

    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"out={out} is a file, not a folder: choose a folder for the run")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError("out", f"out={out} cannot be written ({existing} is not writable): choose another folder")
    if out.is_dir() and holds_run(out) and not resuming and not force and launching_process():
        raise UserError(f"{out} already holds a pretraining run: continue it with --resume, start over with --force, "
                        f"or choose another --out")
    return out


def resolve_resume(resume, out: Path) -> tuple[Path, dict] | None:
    """(checkpoint path, its contents) to resume from, checked to load safely (UserError if missing or corrupt)."""

    if not resume:
        return None
    path = out / "checkpoints" / "last.ckpt" if resume is True or resume == "last" else Path(resume)
    ckpt = load_checkpoint(path)
    if "hyper_parameters" not in ckpt or "model_spec" not in (ckpt.get("hyper_parameters") or {}):
        raise UserError(f"{path} is not a `dnadiff pretrain` checkpoint: resume from OUT/checkpoints/last.ckpt")
    return path, ckpt


def check_resume(path: Path, ckpt: dict, module, data_info: DataInfo) -> None:
    """UserError (one line) when the checkpoint cannot continue this config: a different model,
    diffusion process or window, or weights of other shapes."""

    hp = ckpt["hyper_parameters"]
    for section, old, new in (("model", model_config(hp.get("model_spec", {})).to_spec(),
                               model_config(module.hparams.model_spec).to_spec()),
                              ("diffusion", hp.get("diffusion_spec", {}), module.hparams.diffusion_spec),
                              ("data", {"window": (hp.get("data_info") or {}).get("window", data_info.window)},
                               {"window": data_info.window})):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key) and not (section == "model" and key in ("num_classes",) and
                                                     not old.get(key) and not new.get(key)):
                raise UserError(f"{path} was trained with {section}.{key}={old.get(key)}, this run asks for "
                                f"{section}.{key}={new.get(key)}: resume with the run's own settings "
                                f"(its config.yaml) or start a new run with another --out")
    state = module.state_dict()
    for key, value in (ckpt.get("state_dict") or {}).items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{path} holds {key} of shape {tuple(value.shape)}, this model has "
                            f"{tuple(state[key].shape)}: resume with the run's own model settings (its config.yaml)")


def build_module(cfg: dict, data_info: DataInfo):
    """The :class:`DiffusionModule` of a checked config for this data (model sizes set from the data)."""

    model = dict(cfg["model"])
    io = model_io(data_info)
    if not data_info.kind.caduceus:  # the model's sizes come from the data
        model.update(io)
        if model.get("name") == "caduceus":
            raise UserError("Caduceus is a DNA model: use model.name=transformer (e.g. --config text8_tiny)")
    elif model.get("name") == "transformer":  # sizes from the data (max_len: the transformer's own default)
        model.setdefault("embed_size", model.pop("vocab_size", io["embed_size"]))
        model.setdefault("num_outputs", io["num_outputs"])
    if data_info.conditional:
        model["num_classes"] = len(data_info.class_names)
    model = model_config(model).to_spec()  # every field, checked (ConfigError names a bad key or value)
    diffusion = {"vocab_size": data_info.vocab_size, **cfg["diffusion"]}
    t, o = cfg["train"], dict(cfg["optim"])
    o["max_steps"] = o.pop("total_steps", None) or t["max_steps"]  # horizon of the cosine decay
    o.pop("grad_clip", None)
    module = DiffusionModule(model, diffusion, optim=o, ema_decay=float(t["ema_decay"]),
                             label_dropout=float(t["label_dropout"]), val_num_t=int(t["val_num_t"]), data_info=data_info,
                             seed=int(t["seed"]))
    if data_info.kind.caduceus:  # the tokens come from the tokenizer: its MASK must be the diffusion's mask id

        assert module.diffusion.mask_id == MASK, "the tokenizer's mask id must be the diffusion's (V = 4)"
    return module

LOGGERS = ("csv", "tensorboard", "wandb")


def check_logger(logger: str) -> None:
    """ParameterError for an unknown logger, or one whose package is missing (with the pip command)."""
    if logger not in LOGGERS:
        raise ParameterError("logger", f"logger={logger!r} is unknown: use one of {', '.join(LOGGERS)}")
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(logger)
    if package:
        import importlib.util

        if importlib.util.find_spec(package) is None:
            raise ParameterError("logger", f"logger={logger} needs the {package} package: pip install {package}, "
                                           "or use logger=csv")


def make_trainer(cfg: dict, device: dict, num_nodes: int, out: Path, progress="bar", logger: str = "csv"):
    """The Lightning ``Trainer`` of a run: step checkpoints into ``out/checkpoints`` (atomic), the appending CSV
    log ``out/logs/metrics.csv`` always (the curves come from it), plus ``logger="tensorboard"``
    (``out/tensorboard``) or ``"wandb"`` (Lightning's loggers; offline unless wandb is logged in), throughput,
    the chosen progress display."""

    t = cfg["train"]
    max_steps = int(t["max_steps"])
    loggers = [appending_csv_logger(out)]
    if logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out, name="tensorboard", version=""))
    elif logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=str(out), project="dnadiff", name=out.name))
    callbacks = [ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step}", auto_insert_metric_name=False,
                                 every_n_train_steps=int(t["ckpt_every"]), save_last=True, save_top_k=1,
                                 enable_version_counter=False),
                 Throughput()]
    if t.get("audit"):
        callbacks.append(WindowAudit(out))
    if progress == "bar" and not sys.stderr.isatty():  # a log file, SLURM, nohup: plain lines, time-based
        progress = "lines"
    if progress == "bar":
        callbacks.append(StepBar())
    elif progress == "lines":
        callbacks.append(ProgressLines(PROGRESS_LINE_SECONDS))
    elif callable(progress):
        callbacks.append(StepCallback(progress, int(t["log_every"])))
    return _trainer(L, max_steps=max_steps, val_check_interval=min(int(t["val_every"]), max_steps),
                    check_val_every_n_epoch=None, num_sanity_val_steps=0, **device, num_nodes=num_nodes,
                    gradient_clip_val=float(cfg["optim"]["grad_clip"]) or None, logger=loggers,
                    callbacks=callbacks, plugins=[AtomicCheckpointIO()], default_root_dir=out,
                    log_every_n_steps=int(t["log_every"]), enable_model_summary=False,
                    enable_progress_bar=False, use_distributed_sampler=False)


def _trainer(L, **options):
    """``L.Trainer(**options)``; Lightning's refusal of an option combination becomes one line."""

    try:
        return L.Trainer(**options)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"Lightning refused --accelerator {options['accelerator']} --devices {options['devices']} "
                        f"--strategy {options['strategy']} ({first[:200]}): change these options") from None


def write_curves(out: Path, dm, data_info: DataInfo) -> Path | None:
    """``out/curves.png`` (:func:`dnadiff.plots.pretrain_curves`); for a genome, with the order-k Markov
    baseline fitted on 256 training windows and scored on the validation windows the model was scored on."""
    from dnadiff.plots import pretrain_curves

    markov = None
    if data_info.kind.markov_baseline and hasattr(dm, "eval_dataloader"):
        from dnadiff.eval.markov import fit_markov

        _, markov = fit_markov(dm.eval_dataloader("train", num_windows=256), dm.val_dataloader(), max_order=6)
    return pretrain_curves(out, markov.bits_per_nt if markov else None, markov.order if markov else None,
                           unit="bits/" + ("nt" if data_info.kind.markov_baseline else "token"))


def launching_process() -> bool:
    """True in the process the user started (not in a DDP worker Lightning launched, nor on another node)."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def fit(trainer, module, dm, resume, out: Path, original: dict | None = None, verbose: bool = True) -> dict:
    """Train, save last.ckpt, model.pt (with ``original``: the original rows and config an ``init`` model came
    from, for :func:`dnadiff.export`) and summary.json; returns the summary."""

    start = time.time()
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume[0]) if resume else None)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1)
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, handler)  # Lightning leaves Ctrl-C ignored for the rest of the process
        raise KeyboardInterrupt(interrupted_message(out, int(trainer.global_step))) from None
    # the end state, whatever ckpt_every was (the full training state: resume continues from it)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)
    metrics = scalar_metrics(trainer)
    summary = {"steps": int(trainer.global_step), "seconds": round(time.time() - start, 1),
               "parameters": count_parameters(module.model), **metrics}
    if trainer.is_global_zero:
        payload = module.export_payload(summary)
        if original:
            payload.original = original
        save_checkpoint(out / "model.pt", payload)
        atomic_write(out / "summary.json", lambda f: f.write((json.dumps(summary, indent=1) + "\n").encode()))
        curves = write_curves(out, dm, module.data_info)
        if verbose and curves is not None:
            print(f"curves -> {curves}")
        data_info = module.data_info
        if data_info.kind.samples_file:
            path = write_samples(module, data_info, out)
            if verbose:
                print(f"samples -> {path}")
    return summary


def interrupted_message(out: Path, step: int) -> str:
    """What an interrupted run can do next: resume from its last checkpoint, or start again when it has none."""
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        return (f"at step {step}; continue from the last checkpoint ({last}) with `--resume` "
                f"(`resume=True` in Python)")
    return (f"at step {step}, before the first checkpoint (every train.ckpt_every steps): nothing to resume; "
            "start again with --force")


def write_samples(module, data_info: DataInfo, out: Path, num: int = 16) -> Path:
    """A few samples of a text or pixel model (EMA weights): OUT/samples.txt or OUT/samples.png."""

    model = module.model.cpu().eval()
    if module.ema is not None:
        module.ema.to("cpu").copy_to(model)
    window = int(data_info.window)
    tokens = module.diffusion.sample(model, num=num, length=window, steps=min(window, 256), sampler="cached")
    return save_samples(data_info, tokens, out / "samples")
