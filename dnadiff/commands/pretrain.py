"""`dnadiff pretrain`: masked-diffusion pretraining with Lightning (CPU, GPU, DDP, FSDP).

    dnadiff pretrain --genome hg38.fa [--config 470k] [--bed FILE] [--out DIR] [--max-steps N]
                     [--devices N] [--strategy ddp|fsdp] [--resume [CKPT]] [key=value ...]
    dnadiff pretrain --text FILE --config text8_tiny      # or --images digits|CIFAR_DIR
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from dnadiff.commands.devices import add_device_arguments, lightning_device_kwargs
from dnadiff.errors import UserError
from dnadiff.training.config import option


def add_arguments(p) -> None:
    src = p.add_argument_group("data source (exactly one)")
    src.add_argument("--genome", help="genome FASTA, plain or bgzip (a .fai is built if missing)")
    src.add_argument("--dhs", help="class-labelled DHS sequences (DNA-Diffusion format) for conditional pretraining")
    src.add_argument("--text", help="a UTF-8 text file (character or byte level, see data.text_level)")
    src.add_argument("--images", help="'digits' (scikit-learn's bundled 8x8 digits) or a CIFAR-10 python batches folder")
    p.add_argument("--config", help="YAML config path or a name in configs/pretrain/ "
                                    "(default: 470k for DNA, dhs_conditional for --dhs, text8_tiny for text, digits_tiny for images); "
                                    "every key, its default and allowed range: configs/README.md")
    p.add_argument("--bed", help="BED of usable intervals: chrom start end [split]")
    p.add_argument("--val-contigs", help="comma-separated held-out validation contigs")
    p.add_argument("--test-contigs", help="comma-separated held-out test contigs")
    p.add_argument("--decompress", action="store_true",
                   help="for a plain-gzip FASTA: decompress it once into a cache instead of failing")
    p.add_argument("--out", default="runs/pretrain", help="output directory (default runs/pretrain)")
    p.add_argument("--max-steps", type=option("int", lo=1), help="training steps (overrides train.max_steps)")
    p.add_argument("--seed", type=option("int", lo=0, hi=2**63 - 1), help="random seed (overrides train.seed)")
    add_device_arguments(p)  # --accelerator, --devices, --precision (overrides train.precision), --strategy
    p.add_argument("--num-nodes", type=option("int", lo=1, hi=100_000), default=1, help="nodes for multi-node training")
    p.add_argument("--resume", nargs="?", const="last", help="resume from a checkpoint (default OUT/checkpoints/last.ckpt)")
    p.add_argument("--force", action="store_true", help="start over in an --out folder that holds a previous run "
                                                             "(its checkpoints and metrics log are removed)")
    p.add_argument("--init", help="start from a model: an original Caduceus folder or hub id (MDLM's generative "
                                  "fine-tuning of the MLM; architecture from its config) or a dnadiff model.pt")
    p.add_argument("--download", action="store_true", help="fetch an --init hub id missing from the Hugging Face cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3 data.window=512")


def check_out(out: Path, resuming: bool, force: bool) -> Path:
    """Check ``--out`` can hold this run, creating nothing (UserError otherwise).

    A folder holding a previous run is refused unless resuming (``--resume``) or starting over (``--force``).
    """
    from dnadiff.training.run_folder import holds_run

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: choose a folder for the run")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {out} cannot be written ({existing} is not writable): choose another --out")
    if out.is_dir() and holds_run(out) and not resuming and not force and _launching_process():
        raise UserError(f"{out} already holds a pretraining run: continue it with --resume, start over with --force, "
                        f"or choose another --out")
    return out


def config_from_args(args) -> dict:
    from dnadiff.training.config import load_config, validate

    if args.resume and "=" in args.resume and not Path(args.resume).exists():  # `--resume key=value ...`
        args.overrides = [args.resume, *(args.overrides or [])]
        args.resume = "last"
    default = ("text8_tiny" if args.text else "digits_tiny" if args.images else
               "dhs_conditional" if args.dhs else "470k")
    cfg = load_config(args.config or default, args.overrides or [])
    data = cfg["data"]
    for key in ("genome", "dhs", "text", "images", "bed"):
        if getattr(args, key, None):
            data[key] = getattr(args, key)
    if args.val_contigs:
        data["val_contigs"] = args.val_contigs
    if args.test_contigs:
        data["test_contigs"] = args.test_contigs
    if args.decompress:
        data["decompress"] = True
    if args.max_steps is not None:
        cfg["train"]["max_steps"] = args.max_steps
    if args.seed is not None:
        cfg["train"]["seed"] = args.seed
    return validate(cfg)


def resolve_resume(resume: str | None, out: Path) -> tuple[Path, dict] | None:
    """(checkpoint path, its contents) to resume from, checked to load safely (UserError if missing or corrupt)."""
    from dnadiff.training.checkpoint import load_checkpoint

    if resume is None:
        return None
    path = out / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)
    ckpt = load_checkpoint(path)
    if "hyper_parameters" not in ckpt or "model_spec" not in (ckpt.get("hyper_parameters") or {}):
        raise UserError(f"{path} is not a `dnadiff pretrain` checkpoint: resume from OUT/checkpoints/last.ckpt")
    return path, ckpt


def check_resume(path: Path, ckpt: dict, module, data_info: dict) -> None:
    """UserError (one line) when the checkpoint cannot continue this config: a different model,
    diffusion process or window, or weights of other shapes."""
    from dnadiff.models.config import model_config

    hp = ckpt["hyper_parameters"]
    for section, old, new in (("model", model_config(hp.get("model_spec", {})).to_spec(),
                               model_config(module.hparams.model_spec).to_spec()),
                              ("diffusion", hp.get("diffusion_spec", {}), module.hparams.diffusion_spec),
                              ("data", {"window": (hp.get("data_info") or {}).get("window", data_info.get("window"))},
                               {"window": data_info.get("window")})):
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


def build_module(cfg: dict, data_info: dict):
    from dnadiff.models.config import model_config
    from dnadiff.training.modalities import model_io
    from dnadiff.training.module import DiffusionModule

    model = dict(cfg["model"])
    io = model_io(data_info)
    if data_info["modality"] != "dna":
        model.update(io)
        if model.get("name") == "caduceus":
            raise UserError("Caduceus is a DNA model: use model.name=transformer (e.g. --config text8_tiny)")
    elif model.get("name") == "transformer":  # sizes from the data (max_len: the transformer's own default)
        model.setdefault("embed_size", model.pop("vocab_size", io["embed_size"]))
        model.setdefault("num_outputs", io["num_outputs"])
    if data_info.get("class_names"):
        model["num_classes"] = len(data_info["class_names"])
    model = model_config(model).to_spec()  # every field, checked (ConfigError names a bad key or value)
    diffusion = {"vocab_size": data_info["vocab_size"], **cfg["diffusion"]}
    t, o = cfg["train"], dict(cfg["optim"])
    o["max_steps"] = o.pop("total_steps", None) or t["max_steps"]  # horizon of the cosine decay
    o.pop("grad_clip", None)
    module = DiffusionModule(model, diffusion, optim=o, ema_decay=float(t["ema_decay"]),
                             label_dropout=float(t["label_dropout"]), val_num_t=int(t["val_num_t"]), data_info=data_info,
                             seed=int(t["seed"]))
    if data_info["modality"] == "dna":  # the tokens come from the tokenizer: its MASK must be the diffusion's mask id
        from dnadiff.data.tokenizer import MASK

        assert module.diffusion.mask_id == MASK, "the tokenizer's mask id must be the diffusion's (V = 4)"
    return module


def make_trainer(cfg: dict, args, out: Path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    from dnadiff.training.callbacks import AtomicCheckpointIO, ProgressLines, Throughput, WindowAudit
    from dnadiff.training.run_folder import appending_csv_logger

    t = cfg["train"]
    max_steps = int(t["max_steps"])
    loggers = [appending_csv_logger(out)]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(out, name="tensorboard", version=""))
    except ImportError:
        pass
    device = lightning_device_kwargs(args)
    if getattr(args, "precision", "auto") == "auto" and t.get("precision", "auto") != "auto":
        device["precision"] = t["precision"]  # the config's choice unless --precision says otherwise
    callbacks = [ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step}", auto_insert_metric_name=False,
                                 every_n_train_steps=int(t["ckpt_every"]), save_last=True, save_top_k=1,
                                 enable_version_counter=False),
                 Throughput()]
    if t.get("audit"):
        callbacks.append(WindowAudit(out))
    callbacks.append(ProgressLines() if args.no_progress else RichProgressBar())
    return _trainer(L, max_steps=max_steps, val_check_interval=min(int(t["val_every"]), max_steps),
                     check_val_every_n_epoch=None, num_sanity_val_steps=0, **device, num_nodes=args.num_nodes,
                     gradient_clip_val=float(cfg["optim"]["grad_clip"]) or None, logger=loggers,
                     callbacks=callbacks, plugins=[AtomicCheckpointIO()], default_root_dir=out,
                     log_every_n_steps=int(t["log_every"]), enable_model_summary=False,
                     enable_progress_bar=not args.no_progress, use_distributed_sampler=False)


def _trainer(L, **options):
    """``L.Trainer(**options)``; Lightning's refusal of an option combination becomes one line."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**options)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"Lightning refused --accelerator {options['accelerator']} --devices {options['devices']} "
                        f"--strategy {options['strategy']} ({first[:200]}): change these options") from None


def run(args) -> int:
    import lightning as L
    import yaml

    from dnadiff.training.checkpoint import atomic_write
    from dnadiff.training.data import build_data, genome_path
    from dnadiff.training.init import apply_init, check_modality, describe, init_model_spec
    from dnadiff.training.run_folder import RunLock, clean_start, trim_metrics

    # every input is checked before the run folder is created or touched
    cfg = config_from_args(args)
    lightning_device_kwargs(args)  # device options checked before anything is created
    init = None
    if args.init:
        from dnadiff.loading import load_payload

        init = load_payload(args.init, download=args.download)
        cfg["model"] = init_model_spec(cfg["model"], init)
    out = check_out(Path(args.out), resuming=args.resume is not None, force=args.force)
    if cfg["data"].get("genome"):
        cfg["data"]["genome"] = str(genome_path(cfg["data"]["genome"], cfg["data"].get("decompress", False)))
    resume = resolve_resume(args.resume, out)
    if cfg["model"].get("variant") == "ps":  # RC-equivariant by construction: RC augmentation would change nothing
        cfg["data"]["rc_aug"] = False
    seed = int(cfg["train"]["seed"])
    L.seed_everything(seed, workers=True, verbose=False)
    dm, data_info = build_data(cfg, seed)
    if hasattr(dm, "check_readable"):
        dm.check_readable()
    if init is not None:
        check_modality(init, data_info, args.init)
    module = build_module(cfg, data_info)
    cfg["model"] = dict(module.hparams.model_spec)  # every field resolved and checked, as model.pt stores it
    if init is not None:
        apply_init(module, init, args.init)
        print(describe(init, args.init), flush=True)
    if resume is not None:
        check_resume(*resume, module, data_info)
    trainer = make_trainer(cfg, args, out)
    from dnadiff.training.memory import prepare_memory  # issue 24: activation checkpointing + memory check
    memory_line = prepare_memory(cfg, module.model, trainer)  # refuses a run that cannot fit, touching nothing
    if trainer.is_global_zero:
        print(memory_line, flush=True)
    lock = RunLock(out) if trainer.is_global_zero and _launching_process() else None
    try:
        if lock is not None:
            lock.acquire()
            clean_start(out, resume[0] if resume else None, fresh=args.force)
            if resume is not None:
                trim_metrics(out / "logs" / "metrics.csv", int(resume[1].get("global_step", 0)))
            atomic_write(out / "config.yaml", lambda f: f.write(yaml.safe_dump(cfg, sort_keys=False).encode()))
        summary = _fit(trainer, module, dm, resume, out, (init or {}).get("original"))
    finally:
        if lock is not None:
            lock.release()
    if trainer.is_global_zero:
        bits = summary.get("val/bits_per_token", math.nan)
        print(f"pretrain done: {summary['steps']} steps in {summary['seconds']} s, "
              f"{summary['parameters']:,} parameters, val {bits:.4f} {data_info['unit']} "
              f"(perplexity {math.exp(bits * math.log(2)):.3f}), "
              f"{summary.get('train/tokens_per_s', math.nan):,.0f} tokens/s -> {out / 'model.pt'}")
    return 0


def _launching_process() -> bool:
    """True in the process the user started (not in a DDP worker Lightning launched, nor on another node)."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def _fit(trainer, module, dm, resume, out: Path, original: dict | None = None) -> dict:
    """Train, save last.ckpt, model.pt (with ``original``: the original rows and config an --init model came
    from, for `dnadiff export`) and summary.json; returns the summary."""
    from dnadiff.training.checkpoint import atomic_write, save_checkpoint

    start = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume[0]) if resume else None)
    # the end state, whatever ckpt_every was (the full training state: --resume continues from it)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    summary = {"steps": int(trainer.global_step), "seconds": round(time.time() - start, 1),
               "parameters": sum(p.numel() for p in module.model.parameters()), **metrics}
    if trainer.is_global_zero:
        payload = module.export_payload(summary)
        if original:
            payload["original"] = original
        save_checkpoint(out / "model.pt", payload)
        atomic_write(out / "summary.json", lambda f: f.write((json.dumps(summary, indent=1) + "\n").encode()))
        data_info = module.hparams.data_info
        if data_info["modality"] != "dna":
            write_samples(module, data_info, out)
    return summary


def write_samples(module, data_info: dict, out: Path, num: int = 16) -> Path:
    """A few samples of a text or pixel model (EMA weights): OUT/samples.txt or OUT/samples.png."""
    from dnadiff.training.modalities import save_samples

    model = module.model.cpu().eval()
    if module.ema is not None:
        module.ema.to("cpu").copy_to(model)
    window = int(data_info["window"])
    tokens = module.diffusion.sample(model, num=num, length=window, steps=min(window, 256), sampler="cached")
    path = save_samples(data_info, tokens, out / "samples")
    print(f"samples -> {path}")
    return path
