"""A table of bad inputs across `pretrain`, `evaluate`, `finetune`, `sample` and the Python API.

Each case runs the CLI in-process (``dnadiff.cli.main(argv)``) or calls the API and asserts: exit
code 2 (or :class:`dnadiff.errors.UserError`), exactly one line on stderr naming the problem (a
pattern per case) and the fix (``problem: fix``), no traceback, nothing written (the outputs the
command would create do not exist) and no existing file changed (every file of the fixture folder
keeps its bytes and modification time). Every case fails while the inputs are checked, before any
training or sampling starts, so the whole table runs in seconds.

Classes: numeric options and config values at 0, negative, non-numeric, non-finite and past their
bounds; unknown keys and choices; path options missing, a folder, binary, empty, of the wrong
format, a dangling link, unreadable; malformed configs (bad YAML, not a mapping, Python tags);
corrupt checkpoints (garbage, truncated, not a dict, no dnadiff format, a folder); corrupt genomes
(truncated bgzip, an index that does not describe its FASTA); outputs that exist or cannot be
written; impossible device requests; inconsistent generation requests.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from dnadiff.cli import main
from dnadiff.errors import UserError

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------------------------------------- assets
def _toy_genome(rng) -> str:
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (3000, 1500)]
    return "".join(f">c{i}\n" + "\n".join(s[j:j + 60] for j in range(0, len(s), 60)) + "\n" for i, s in enumerate(seqs))


def _bgzip(text: str, path: Path) -> None:
    from Bio import bgzf

    with bgzf.BgzfWriter(str(path), "wb") as handle:
        handle.write(text.encode())


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Every input file the cases point at (written once; the cases must leave them as they are)."""
    from dnadiff.data.fasta import open_genome
    from dnadiff.checkpoints.format import save_checkpoint
    from dnadiff.training.diffusion_module import DiffusionModule

    a = tmp_path_factory.mktemp("assets")
    os.environ.setdefault("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    rng = np.random.default_rng(0)
    genome = _toy_genome(rng)
    (a / "genome.fa").write_text(genome)
    open_genome(a / "genome.fa").close()  # its .fai exists before the cases run
    _bgzip("".join(f">g{i}\n" + "".join(rng.choice(list("ACGT"), size=3000)) + "\n" for i in range(40)), a / "genome.fa.gz")
    open_genome(a / "genome.fa.gz").close()
    blob = (a / "genome.fa.gz").read_bytes()
    (a / "truncated.fa.gz").write_bytes(blob[: len(blob) // 2])
    (a / "allN.fa").write_text(">c1\n" + "N" * 4000 + "\n")
    open_genome(a / "allN.fa").close()
    # an index describing another file: same names, wrong offsets/lengths, kept modification time
    (a / "stale.fa").write_text(">c0\n" + "ACGT" * 700 + "\n>c1\n" + "GATTACA" * 200 + "\n")
    shutil.copy(a / "genome.fa.fai", a / "stale.fa.fai")
    with gzip.open(a / "plain.fa.gz", "wt") as handle:
        handle.write(genome)
    (a / "adir").mkdir()
    (a / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (a / "empty.txt").write_bytes(b"")
    (a / "notfasta.txt").write_text("hello world\nthis is not DNA\n")
    os.symlink(a / "gone.fa", a / "dangling.fa")
    (a / "existing.fa").write_text(">keep\nACGT\n")
    (a / "a_file").write_text("x\n")
    # checkpoints
    torch.manual_seed(0)
    module = DiffusionModule({"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 8, "n_layer": 1,
                              "n_head": 2, "max_len": 64}, {"vocab_size": 4, "schedule": "linear"}, ema_decay=0.9,
                             data_info={"modality": "dna", "window": 16, "class_names": [], "genome": str(a / "genome.fa"),
                                        "batch_size": 2, "num_workers": 0, "max_n_frac": 0.1, "rc_aug": False,
                                        "holdout_frac": 0.05, "max_eval_windows": 2, "val_contigs": [],
                                        "test_contigs": [], "bed": None})
    save_checkpoint(a / "model.pt", module.export_payload({}))
    (a / "garbage.pt").write_bytes(b"PK\x03\x04" + b"\x00garbage" * 64)
    good = (a / "model.pt").read_bytes()
    (a / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save(torch.zeros(3), a / "tensor.pt")
    torch.save({"state_dict": _Evil(a / "pwned")}, a / "evil.pt")  # runs code if ever unpickled fully
    torch.save({"weight": torch.zeros(2)}, a / "statedict.pt")
    # configs
    (a / "malformed.yaml").write_text("optim: {lr: 1e-3\ntrain: [\n")
    (a / "list.yaml").write_text("- 1\n- 2\n")
    (a / "python.yaml").write_text(f"train: !!python/object/apply:os.system ['touch {a}/pwned']\n")
    (a / "unknown.yaml").write_text("optim: {learning_rate: 0.1}\n")
    (a / "badvalue.yaml").write_text("train: {val_every: 0}\n")
    (a / "section.yaml").write_text("optim: 3\n")
    # tables
    seqs = ["".join(rng.choice(list("ACGT"), size=60)) for _ in range(24)]
    (a / "good.tsv").write_text("seq\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(seqs)))
    (a / "noseq.tsv").write_text("foo\tbar\n1\t2\n")
    (a / "badcontig.bed").write_text("chrZ\t0\t100\n")
    (a / "unreadable.fa").write_text(">c1\nACGT\n")
    (a / "unreadable.fa").chmod(0)
    os.mkfifo(a / "fifo")  # opening it would block
    (a / "cr_only.fa").write_bytes(genome.replace("\n", "\r").encode())
    os.symlink(a / "existing.fa", a / "link.fa")  # outputs that are not regular files
    if ROOT_USER:
        os.mknod(a / "devnull", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    (a / "emptydir").mkdir()
    os.symlink(a / "emptydir", a / "emptydir_link")
    dhs_header = "dhs_id\tsequence\tTAG\tdata_label\n"
    (a / "dhs_header_only.txt").write_text(dhs_header)
    (a / "dhs_bad_cell.txt").write_text(dhs_header + "".join(f"d{i}\t{s[:20]}\tLIVER\ttraining\n" for i, s in enumerate(seqs)))
    _tables(a, seqs)
    _hf_folders(a)
    _coordinates(a)
    return a


def _coordinates(a: Path) -> None:
    """Genomic Benchmarks coordinate folders on the toy genomes' contigs (c0/c1 and g0/g1)."""
    import csv

    def write(name, contigs, rows=None):
        for split, cls in (("train", "negative"), ("train", "positive"), ("test", "negative"), ("test", "positive")):
            folder = a / name / "human_enhancers_cohn" / split
            folder.mkdir(parents=True, exist_ok=True)
            with gzip.open(folder / f"{cls}.csv.gz", "wt", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(["id", "region", "start", "end", "strand"])
                offset = 0 if split == "train" else 1000
                writer.writerows(rows or [(f"{split}{cls}{i}", contigs[i % 2], offset + 50 * i, offset + 50 * i + 40,
                                           "+-"[i % 2]) for i in range(8)])

    write("coords_c", ["c0", "c1"])
    write("coords_g", ["g0", "g1"])
    write("coords_bad_row", ["c0", "c1"], rows=[("x1", "c0", "10", "50", "+"), ("x2", "c0", "", "90", "+")])


def _tables(a: Path, seqs: list[str]) -> None:
    """Fine-tuning tables with one flaw each (issue 27)."""
    rows = [f"{s}\t{i % 2}" for i, s in enumerate(seqs)]
    (a / "short_row.tsv").write_text("seq\tlabel\n" + "\n".join(rows[:1] + [seqs[1]] + rows[2:]) + "\n")
    (a / "huge_label.tsv").write_text("seq\tlabel\n" + "\n".join(rows[:3] + [f"{seqs[3]}\t{10**20}"] + rows[4:]) + "\n")
    (a / "empty_label.tsv").write_text("seq\tlabel\n" + "\n".join(rows[:4] + [f"{seqs[4]}\t"] + rows[5:]) + "\n")
    (a / "mixed_labels.tsv").write_text("seq\tlabel\n" + "\n".join(rows[:5] + [f"{seqs[5]}\tpositive"] + rows[6:]) + "\n")
    (a / "few_per_class.tsv").write_text("seq\tlabel\n" + "\n".join(rows[:6]) + "\n")  # 3 per class: 2 folds need 4
    (a / "header_only.tsv").write_text("seq\tlabel\n")
    (a / "bad_dna.tsv").write_text("seq\tlabel\n" + "\n".join(rows[:7] + ["ACGTXYZ\t1"] + rows[8:]) + "\n")
    (a / "other_classes.tsv").write_text("seq\tlabel\n" + "\n".join(f"{s}\t{i % 3 + 5}" for i, s in enumerate(seqs[:6])) + "\n")


def _hf_folders(a: Path) -> None:
    """Original Caduceus folders (as save_pretrained writes them: tied tensors once) with one flaw each."""
    import json

    from safetensors.torch import save_file

    from dnadiff.checkpoints.huggingface import OriginalCaduceusMLM, backbone_from_config, default_config, original_state_dict

    def stored_once(state):  # save_pretrained's alias removal: the first name per shared storage is kept
        seen, out = set(), {}
        for name, tensor in state.items():
            if tensor.untyped_storage().data_ptr() not in seen:
                seen.add(tensor.untyped_storage().data_ptr())
                out[name] = tensor
        return out

    torch.manual_seed(0)
    good = {v: default_config(8, 1, v) for v in ("ph", "ps")}
    states = {v: stored_once(original_state_dict(OriginalCaduceusMLM(backbone_from_config(c)))) for v, c in good.items()}
    assert all(sum("mamba_rev.in_proj" in k or k.startswith("lm_head") and k.endswith("weight") for k in st) == 0
               for st in states.values())

    def folder(name, config, state=None, variant="ph", files=None):
        path = a / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        state = states[variant] if state is None else state
        if files is None:
            save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
        for file, data in (files or {}).items():
            (path / file).write_text(data)

    ph, ps = good["ph"], good["ps"]
    folder("hf_dstate_str", {**ph, "ssm_cfg": {**ph["ssm_cfg"], "d_state": "16"}})
    folder("hf_dtrank_str", {**ph, "ssm_cfg": {**ph["ssm_cfg"], "dt_rank": "four"}})
    folder("hf_cmap_list", {**ph, "complement_map": list(range(16))})
    folder("hf_pad0", {**ph, "pad_vocab_size_multiple": 0})
    folder("hf_dmodel_huge", {**ph, "d_model": 2**40})
    folder("hf_nlayer_huge", {**ph, "n_layer": 10**12})
    folder("hf_vocab_huge", {**ph, "vocab_size": 10**10})
    folder("hf_rcps_str", {**ps, "rcps": "false"}, variant="ps")
    folder("hf_rcps_true_on_ph", {**ph, "rcps": True})
    folder("hf_rcps_false_on_ps", {**ps, "rcps": False}, variant="ps")
    folder("hf_missing_tensor", ph, {k: v for k, v in states["ph"].items() if not k.endswith("mamba_rev.A_log")})
    folder("hf_int8", ph, {**states["ph"], "caduceus.backbone.norm_f.weight": torch.ones(8, dtype=torch.int8)})
    folder("hf_shard_missing", ph, files={"model.safetensors.index.json": json.dumps(
        {"weight_map": {k: "model-00001-of-00002.safetensors" for k in states["ph"]}})})
    folder("hf_settings_bad", {**ph, "dnadiff": {"format": "dnadiff-hf-settings/1", "data": {"window": "512"}}})


class _Evil:
    """A pickle that would run ``touch PATH`` when loaded without ``weights_only``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK):
            out[str(p.relative_to(folder))] = (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        elif not p.is_dir():
            out[str(p.relative_to(folder))] = ("other", p.lstat().st_mtime_ns)
    return out


# ---------------------------------------------------------------------------------------------- the table
P = ["pretrain", "--genome", "{A}/genome.fa", "--out", "{A}/run_out", "--config", "demo", "--no-progress",
     "--max-steps", "1", "model.d_model=8", "model.n_layer=1", "data.window=64", "data.batch_size=2"]
E = ["evaluate", "--checkpoint", "{A}/model.pt", "--genome", "{A}/genome.fa", "--max-windows", "2"]
S = ["sample", "--checkpoint", "{A}/model.pt", "--num", "2", "--length", "8", "--steps", "2", "--out", "{A}/new.fa"]
F = ["finetune", "--task", "human_enhancers_cohn", "--data", "{A}/good.tsv", "--from-scratch", "--model-size", "demo",
     "--folds", "2", "--max-epochs", "1", "--max-examples", "8", "--no-baselines", "--out", "{A}/ft_out"]


def with_option(base: list[str], option: str, value: str | None) -> list[str]:
    """``base`` with ``option`` set to ``value`` (replaced when present, removed when None)."""
    argv = list(base)
    if option in argv:
        i = argv.index(option)
        del argv[i : i + 2]
    return argv + ([option, value] if value is not None else [])


CASES: list = []


X = ["export", "--checkpoint", "{A}/model.pt", "--out", "{A}/hf_out"]
BASES = {"pretrain": P, "evaluate": E, "sample": S, "finetune": F, "export": X}


def case(cls: str, argv: list[str], pattern: str, *marks):
    """One row: ``argv`` must be refused with a message matching ``pattern``; ``cls`` names its class."""
    base = BASES[argv[0]]
    changed = [x.replace("{A}/", "") for x in argv if x not in base] or [x.replace("{A}/", "") for x in argv[1:3]]
    name = f"{argv[0]}:{cls}:" + " ".join(changed)
    CASES.append(pytest.param(argv, pattern, id=name[:90], marks=list(marks)))


# numeric options: 0, negative, non-numeric (and non-finite / past bounds where they have bounds)
for base, options in ((P, {"--max-steps": ["0", "-3", "abc", "1.5"], "--seed": ["-1", "abc"], "--num-nodes": ["0", "-1", "abc"],
                           "--devices": ["0", "-1", "abc"]}),
                      (E, {"--max-windows": ["0", "-1", "abc"], "--batch-size": ["0", "-2", "abc"], "--num-t": ["0", "-1", "abc"],
                           "--exact-steps": ["0", "-1", "abc"], "--markov-max-order": ["-1", "99", "abc"],
                           "--markov-train-windows": ["0", "-1", "abc"], "--seed": ["-1", "abc"]}),
                      (S, {"--num": ["0", "-1", "abc"], "--length": ["0", "-5", "abc"], "--steps": ["0", "-1", "abc"],
                           "--temperature": ["0", "-1", "abc", "nan", "inf"], "--top-p": ["0", "-0.5", "1.5", "abc"],
                           "--guidance": ["-1", "abc", "nan", "1e308"], "--seed": ["-1", "abc"],
                           "--batch-size": ["0", "-1", "abc"], "--eta": ["-1", "abc", "nan", "inf"],
                           "--block-length": ["0", "abc"], "--gamma": ["-1", "abc", "nan", "1e308"]}),
                      (F, {"--folds": ["0", "-1", "abc"], "--max-epochs": ["0", "-1", "abc"], "--batch-size": ["0", "abc"],
                           "--max-length": ["0", "abc"], "--max-examples": ["0", "-4", "abc"], "--seed": ["-1", "abc"]})):
    for option, values in options.items():
        for value in values:
            case("number", with_option(base, option, value), re.escape(option))

# config values: 0, negative, non-numeric, non-finite, past the bounds, wrong type
CONFIG_VALUES = {
    "data.window": ["0", "-5", "abc", "1.5"], "data.batch_size": ["0", "-1", "abc"], "data.num_workers": ["-1", "abc"],
    "data.max_n_frac": ["-0.1", "1.5", "abc"], "data.holdout_frac": ["0", "0.5", "abc"], "data.max_eval_windows": ["0", "-1"],
    "data.rc_aug": ["maybe", "2"], "data.text_level": ["word"], "data.pixel_order": ["zigzag"],
    "optim.lr": ["abc", "0", "-1", ".nan", ".inf"], "optim.weight_decay": ["-1"], "optim.betas": ["[0.9]", "[1.0,0.9]", "abc"],
    "optim.warmup_steps": ["-1", "abc"], "optim.min_lr_ratio": ["2", "-1"], "optim.grad_clip": ["-1", "abc"],
    "optim.total_steps": ["0", "-1"], "train.max_steps": ["0", "abc"], "train.val_every": ["0", "-1", "abc"],
    "train.ckpt_every": ["0", "abc"], "train.ema_decay": ["1", "-0.1", "abc"], "train.val_num_t": ["0", "abc"],
    "train.seed": ["-1", "abc"], "train.label_dropout": ["1", "-0.5"], "train.precision": ["fp8"], "train.log_every": ["0"],
}
for key, values in CONFIG_VALUES.items():
    for value in values:
        case("config", P + [f"{key}={value}"], re.escape(f"{key}=") + ".*use ")

# config structure and keys
case("config", P + ["optim.learning_rate=1"], "learning_rate")
case("config", P + ["foo.bar=1"], "foo.bar")
case("config", P + ["lr=1"], "section")
case("config", P + ["model.d_model=abc"], "model")
case("config", P + ["model.d_model=0"], "model.d_model")
case("config", P + ["model.n_layer=0"], "model.n_layer")
case("config", P + ["model.n_layer=-1"], "model.n_layer")
case("config", P + ["model.d_state=0"], "model.d_state")
case("config", P + ["model.d_conv=abc"], "model.d_conv")
case("config", P + ["model.kernels=banana"], "kernels")
case("config", P + ["model.bogus=1"], "bogus")
case("config", P + ["model.expand=0"], "model")
case("config", P + ["model.variant=xx"], "xx")
case("config", P + ["model.name=xx"], "xx")
case("config", P + ["diffusion.eps=-1"], "eps")
case("config", P + ["diffusion.eps=abc"], "eps")
case("config", P + ["diffusion.schedule=banana"], "banana")
case("config", with_option(P, "--config", "nonexistent_config"), "nonexistent_config")
case("config", with_option(P, "--config", "{A}/malformed.yaml"), "malformed.yaml.*YAML")
case("config", with_option(P, "--config", "{A}/list.yaml"), "list.yaml.*mapping")
case("config", with_option(P, "--config", "{A}/python.yaml"), "python.yaml")
case("config", with_option(P, "--config", "{A}/unknown.yaml"), "learning_rate")
case("config", with_option(P, "--config", "{A}/badvalue.yaml"), "train.val_every=0")
case("config", with_option(P, "--config", "{A}/section.yaml"), "optim")
case("config", with_option(P, "--config", "{A}/binary.bin"), "binary.bin")
case("config", with_option(P, "--config", "{A}/adir"), "adir")

# pretrain: paths, sources, devices, run folder
for value, pattern in (("{A}/missing.fa", "missing.fa"), ("{A}/adir", "adir"), ("{A}/binary.bin", "binary.bin"),
                       ("{A}/empty.txt", "empty.txt"), ("{A}/notfasta.txt", "notfasta.txt.*FASTA"),
                       ("{A}/plain.fa.gz", "bgzip"), ("{A}/dangling.fa", "dangling.fa"),
                       ("{A}/truncated.fa.gz", "truncated.fa.gz"), ("{A}/stale.fa", "stale.fa"),
                       ("{A}/allN.fa", "N")):
    case("path", with_option(P, "--genome", value), pattern)
case("path", with_option(P, "--genome", "{A}/unreadable.fa"), "unreadable.fa",
     pytest.mark.skipif(ROOT_USER, reason="root reads files without read permission"))
case("path", P + ["--bed", "{A}/missing.bed"], "missing.bed")
case("path", P + ["--bed", "{A}/adir"], "adir")
case("path", P + ["--bed", "{A}/binary.bin"], "binary.bin")
case("path", P + ["--bed", "{A}/badcontig.bed"], "chrZ")
case("path", P + ["--val-contigs", "chrZ"], "chrZ")
case("path", with_option(P, "--out", "{A}/a_file"), "a_file")
case("path", with_option(P, "--out", "{A}/a_file/sub"), "a_file")
case("source", with_option(P, "--genome", None), "data source")
case("source", P + ["--text", "{A}/notfasta.txt"], "one data source")
case("source", ["pretrain", "--text", "{A}/missing.txt", "--out", "{A}/run_out"], "missing.txt")
case("source", ["pretrain", "--text", "{A}/binary.bin", "--out", "{A}/run_out", "data.text_level=char"], "binary.bin")
case("source", ["pretrain", "--images", "{A}/missing_dir", "--out", "{A}/run_out"], "missing_dir")
case("source", ["pretrain", "--images", "{A}/adir", "--out", "{A}/run_out"], "CIFAR-10")
case("source", ["pretrain", "--dhs", "{A}/missing.txt", "--out", "{A}/run_out"], "missing.txt")
# the DHS table is read and checked before the run folder exists (a corrected rerun is then not refused)
case("table", ["pretrain", "--dhs", "{A}/dhs_header_only.txt", "--out", "{A}/run_out", "--max-steps", "1"], "dhs_header_only")
case("table", ["pretrain", "--dhs", "{A}/dhs_bad_cell.txt", "--out", "{A}/run_out", "--max-steps", "1"], "LIVER")
case("device", P + ["--accelerator", "banana"], "banana")
case("device", P + ["--accelerator", "gpu"], "GPU",
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"))
case("device", P + ["--strategy", "nonsense"], "nonsense")
case("checkpoint", P + ["--resume", "{A}/missing.ckpt"], "missing.ckpt")
case("checkpoint", P + ["--resume", "{A}/garbage.pt"], "garbage.pt.*corrupt")
case("checkpoint", P + ["--resume", "{A}/adir"], "adir")
case("checkpoint", P + ["--resume", "{A}/model.pt"], "model.pt.*not a `dnadiff pretrain` checkpoint")
case("checkpoint", P + ["--resume"], "last.ckpt.*does not exist")

# evaluate: checkpoints, genome, region, split
for value, pattern in (("{A}/missing.pt", "missing.pt"), ("{A}/adir", "adir"), ("{A}/binary.bin", "binary.bin"),
                       ("{A}/garbage.pt", "garbage.pt.*corrupt"), ("{A}/truncated.pt", "truncated.pt.*corrupt"),
                       ("{A}/empty.txt", "empty.txt"), ("{A}/tensor.pt", "tensor.pt"), ("{A}/statedict.pt", "statedict.pt")):
    case("checkpoint", with_option(E, "--checkpoint", value), pattern)
for value, pattern in (("{A}/missing.fa", "missing.fa"), ("{A}/adir", "adir"), ("{A}/binary.bin", "binary.bin"),
                       ("{A}/truncated.fa.gz", "truncated.fa.gz"), ("{A}/stale.fa", "stale.fa"), ("{A}/allN.fa", "N")):
    case("path", with_option(E, "--genome", value), pattern)
case("region", E + ["--region", "chrZ:1-10"], "chrZ")
case("region", E + ["--region", "c0:50-10"], "c0:50-10")
case("region", E + ["--region", "c0:1-99999999"], "c0")
case("region", E + ["--region", "nonsense::"], "nonsense")
case("choice", E + ["--split", "banana"], "banana")
case("source", E + ["--text", "{A}/notfasta.txt"], "--text does not fit this dna checkpoint")
case("source", E + ["--images", "digits"], "--images does not fit")
case("device", E + ["--devices", "abc"], "abc")
case("device", E + ["--accelerator", "gpu"], "GPU",
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"))
case("choice", E + ["--split", "val", "--region", "c0:1-100"], "not allowed with")

# sample: checkpoints, outputs, requests
for value, pattern in (("{A}/missing.pt", "missing.pt"), ("{A}/adir", "adir"), ("{A}/binary.bin", "binary.bin"),
                       ("{A}/garbage.pt", "garbage.pt.*corrupt"), ("{A}/tensor.pt", "tensor.pt"),
                       ("{A}/statedict.pt", "statedict.pt")):
    case("checkpoint", with_option(S, "--checkpoint", value), pattern)
case("output", with_option(S, "--out", "{A}/existing.fa"), "existing.fa.*--force")
case("output", with_option(S, "--out", "{A}/adir"), "adir.*folder")
case("output", with_option(S, "--out", "{A}/missing_dir/x.fa"), "missing_dir")
case("output", with_option(S, "--out", "{A}/a_file/x.fa"), "a_file")
case("request", S + ["--prefix", "XYZ"], "prefix")
case("request", S + ["--prefix", "ACGTACGTACGT"], "prefix")
case("request", with_option(S, "--length", None) + ["--template", "ACGT"], "template")
case("request", with_option(S, "--length", None) + ["--template", "ACGNNXQ"], "template")
case("request", S + ["--prefix", "AC", "--template", "ACNN"], "prefix")
case("request", S + ["--class", "K562"], "K562")
case("request", S + ["--guidance", "2"], "guidance")
case("choice", S + ["--sampler", "banana"], "banana")
case("request", S + ["--eta", "0.5"], "--eta.*remdm")  # the cached sampler does not remask
case("request", S + ["--block-length", "4"], "--block-length.*confidence")
case("output", with_option(S, "--out", "{A}/link.fa") + ["--force"], "link.fa.*symbolic link")
case("output", with_option(S, "--out", "{A}/devnull") + ["--force"], "devnull.*character device",
     pytest.mark.skipif(not ROOT_USER, reason="mknod needs root"))
case("output", with_option(X, "--out", "{A}/emptydir_link"), "emptydir_link.*symbolic link")
case("output", with_option(X, "--out", "{A}/dangling.fa"), "dangling.fa.*does not exist")
case("request", P + ["--init", "{A}/model.pt", "model.d_model=16"], "model.d_model=16")
case("path", S + ["--report", "--real", "{A}/missing.fa"], "missing.fa")
case("path", S + ["--report", "--real", "{A}/adir"], "adir")
case("path", S + ["--report", "--real", "{A}/binary.bin"], "binary.bin")
case("path", S + ["--report", "--real", "{A}/noseq.tsv"], "noseq.tsv")
case("path", S + ["--report", "--real", "{A}/allN.fa"], "allN.fa.*not mostly N")
case("long job", with_option(S, "--length", "100000000000"), "--length.*--force")
case("path", S + ["--report", "--train", "{A}/missing.fa"], "missing.fa.*--train")
case("path", S + ["--report", "--train", "{A}/adir"], "adir.*--train")
case("path", S + ["--report", "--train", "{A}/binary.bin"], "binary.bin.*--train")
case("device", S + ["--devices", "abc"], "abc")
case("device", S + ["--devices", "0"], "--devices")
case("device", S + ["--accelerator", "gpu"], "GPU",
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"))

# finetune: task, data, backbone
case("choice", with_option(F, "--task", "banana"), "banana")
case("choice", F + ["--protocol", "banana"], "banana")
case("choice", with_option(F, "--model-size", "huge"), "huge")
for value, pattern in (("{A}/missing.tsv", "missing.tsv"), ("{A}/adir", "adir"), ("{A}/binary.bin", "binary.bin"),
                       ("{A}/empty.txt", "empty.txt"), ("{A}/noseq.tsv", "noseq.tsv")):
    case("path", with_option(F, "--data", value), pattern)
for value, pattern in (("{A}/missing.pt", "missing.pt"), ("{A}/garbage.pt", "garbage.pt.*corrupt"),
                       ("{A}/binary.bin", "binary.bin"), ("{A}/tensor.pt", "tensor.pt")):
    case("checkpoint", [x for x in F if x != "--from-scratch"] + ["--checkpoint", value], pattern)
case("source", [x for x in F if x != "--from-scratch"], "--checkpoint")
case("source", F + ["--checkpoint", "{A}/model.pt"], "not allowed with")
case("path", F + ["--test-data", "{A}/missing.tsv"], "missing.tsv")
case("path", F + ["--test-data", "{A}/binary.bin"], "binary.bin")
case("path", with_option(F, "--data", None) + ["--genome", "{A}/genome.fa", "--coordinates", "{A}/missing_dir"], "missing_dir")
case("path", with_option(F, "--data", None) + ["--cache", "{A}/missing_dir"], "missing_dir")
case("number", F + ["--fold", "5"], "--fold 5")
case("number", F + ["--fold", "-1"], "--fold")
case("number", F + ["--micro-batch", "0"], "--micro-batch")
case("device", F + ["--devices", "abc"], "abc")
case("device", F + ["--accelerator", "gpu"], "GPU",
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"))

# issue 27: Hugging Face folders as they exist in the wild, every config.json field checked before anything is built
for name, pattern in (("hf_dstate_str", "ssm_cfg.d_state='16'"), ("hf_dtrank_str", "ssm_cfg.dt_rank='four'"),
                      ("hf_cmap_list", "complement_map"), ("hf_pad0", "pad_vocab_size_multiple=0"),
                      ("hf_dmodel_huge", "parameters"), ("hf_nlayer_huge", "parameters"), ("hf_vocab_huge", "parameters"),
                      ("hf_rcps_str", "rcps='false'"), ("hf_rcps_true_on_ph", "rcps=true .*Caduceus-Ph layout"),
                      ("hf_rcps_false_on_ps", "rcps=false .*Caduceus-PS layout"),
                      ("hf_missing_tensor", "does not fit its config.*mamba_rev.A_log"), ("hf_int8", "int8"),
                      ("hf_shard_missing", "shard model-00001-of-00002.safetensors .* is missing"),
                      ("hf_settings_bad", "dnadiff.data.window='512'")):
    case("hf file", with_option(S, "--checkpoint", "{A}/" + name), pattern)
for name, pattern in (("hf_rcps_str", "rcps='false'"), ("hf_dmodel_huge", "parameters")):
    case("hf file", with_option(E, "--checkpoint", "{A}/" + name), pattern)
    case("hf file", [x for x in F if x != "--from-scratch"] + ["--checkpoint", "{A}/" + name], pattern)

# issue 27: fine-tuning tables, one line naming the file, the line and the fix
for name, pattern in (("short_row.tsv", r"short_row.tsv line 3 has 1 column.*no label.*fill in"),
                      ("huge_label.tsv", r"huge_label.tsv line 5: label '100000000000000000000' is beyond the 64-bit"),
                      ("empty_label.tsv", r"empty_label.tsv line 6: the label cell is empty"),
                      ("mixed_labels.tsv", r"mixed_labels.tsv line 7: label 'positive' is a name"),
                      ("few_per_class.tsv", r"3 example\(s\), fewer than 2 x 2 folds.*at least 4 examples per class"),
                      ("header_only.tsv", r"header_only.tsv has a header but no examples"),
                      ("bad_dna.tsv", r"bad_dna.tsv line 9: sequence 'ACGTXYZ' is not DNA")):
    case("table", with_option(F, "--data", "{A}/" + name), pattern)
case("table", F + ["--test-data", "{A}/other_classes.tsv"], r"other_classes.tsv line 2: labels .* do not occur")

# issue 27: every route to a genome goes through open_genome's checks
FC = with_option(F, "--data", None)
case("path", FC + ["--genome", "{A}/stale.fa", "--coordinates", "{A}/coords_c"], "stale.fa")
case("path", FC + ["--genome", "{A}/truncated.fa.gz", "--coordinates", "{A}/coords_g"], "truncated.fa.gz")
case("path", FC + ["--genome", "{A}/plain.fa.gz", "--coordinates", "{A}/coords_c"], "bgzip")
case("path", FC + ["--genome", "{A}/notfasta.txt", "--coordinates", "{A}/coords_c"], "notfasta.txt.*FASTA")
case("table", FC + ["--genome", "{A}/genome.fa", "--coordinates", "{A}/coords_bad_row"], r"negative.csv.gz line 3 lacks the start cell")

# issue 27: a FIFO, a device or a folder is named as such (not "does not exist") and never opened
case("path", with_option(S, "--checkpoint", "{A}/fifo"), "fifo is a FIFO")
case("path", with_option(S, "--checkpoint", "/dev/zero"), "/dev/zero is a character device")
case("path", with_option(E, "--genome", "{A}/fifo"), "fifo is a FIFO")
case("path", with_option(F, "--data", "{A}/fifo"), "fifo is a FIFO")
case("path", with_option(F, "--data", "/dev/zero"), "/dev/zero is a character device")

# issue 27: CR-only line endings named as such (not blamed on the index just built: a loop)
case("path", with_option(P, "--genome", "{A}/cr_only.fa"), "cr_only.fa uses CR-only line endings.*tr ")
case("path", with_option(E, "--genome", "{A}/cr_only.fa"), "cr_only.fa uses CR-only line endings")

# issue 27: a malicious pickle is named as such, in one whole sentence, never hinting at weights_only=False
case("checkpoint", with_option(S, "--checkpoint", "{A}/evil.pt"), r"evil.pt holds pickled Python objects \(\w+.system\)[^`]*; use a model.pt")
case("checkpoint", with_option(E, "--checkpoint", "{A}/evil.pt"), r"evil.pt holds pickled Python objects")

# argument syntax
case("syntax", ["sample", "--num", "2", "--out", "{A}/new.fa"], "--checkpoint")
case("syntax", P + ["--no-such-option"], "no-such-option")
case("syntax", ["evaluate", "--genome", "{A}/genome.fa"], "--checkpoint")

OUTPUTS = ("run_out", "new.fa", "ft_out", "pwned", "missing_dir", "hf_out")


@pytest.mark.parametrize("argv, pattern", CASES)
def test_cli_refuses_in_one_line_and_writes_nothing(assets, capsys, argv, pattern):
    argv = [x.replace("{A}", str(assets)) for x in argv]
    before = snapshot(assets)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and re.search(pattern, err), err
    assert ": error: " in err and re.search(r"\w.*: \S", err.split(": error: ", 1)[1]), err  # problem: fix
    for name in OUTPUTS:
        assert not (assets / name).exists(), f"{name} was written"
    assert snapshot(assets) == before


# ---------------------------------------------------------------------------------------------- the Python API
def _api_cases():
    from dnadiff import generate

    def gen(a):
        return generate.load(a / "model.pt")

    return [
        ("load missing", lambda a: generate.load(a / "missing.pt"), "missing.pt"),
        ("load folder", lambda a: generate.load(a / "adir"), "adir"),
        ("load binary", lambda a: generate.load(a / "binary.bin"), "binary.bin"),
        ("load garbage", lambda a: generate.load(a / "garbage.pt"), "corrupt"),
        ("load truncated", lambda a: generate.load(a / "truncated.pt"), "corrupt"),
        ("load tensor", lambda a: generate.load(a / "tensor.pt"), "tensor.pt"),
        ("load state dict", lambda a: generate.load(a / "statedict.pt"), "statedict.pt"),
        ("num 0", lambda a: gen(a).generate(0, length=8), "num"),
        ("length 0", lambda a: gen(a).generate(2, length=0), "length"),
        ("steps 0", lambda a: gen(a).generate(2, length=8, steps=0), "steps"),
        ("temperature 0", lambda a: gen(a).generate(2, length=8, temperature=0.0), "temperature"),
        ("top_p 2", lambda a: gen(a).generate(2, length=8, top_p=2.0), "top-p"),
        ("guidance -1", lambda a: gen(a).generate(2, length=8, guidance=-1.0), "guidance"),
        ("batch_size 0", lambda a: gen(a).generate(2, length=8, batch_size=0), "batch"),
        ("template without N", lambda a: gen(a).generate(2, template="ACGT"), "template"),
        ("unknown class", lambda a: gen(a).generate(2, length=8, class_name="K562"), "K562"),
        ("bad prefix", lambda a: gen(a).generate(2, length=8, prefix="XYZ"), "prefix"),
        ("write_fasta to a folder", lambda a: generate.write_fasta(["ACGT"], a / "adir"), "folder"),
        ("write_fasta missing folder", lambda a: generate.write_fasta(["ACGT"], a / "missing_dir" / "x.fa"), "missing_dir"),
        ("open_genome binary", lambda a: _open(a / "binary.bin"), "binary.bin"),
        ("open_genome truncated bgzip", lambda a: _open(a / "truncated.fa.gz"), "truncated.fa.gz"),
        ("open_genome stale index", lambda a: _open(a / "stale.fa"), "stale.fa"),
        ("cifar binary", lambda a: _cifar(a / "binary.bin"), "binary.bin"),
        ("config value", lambda a: _config(["optim.lr=abc"]), "optim.lr=abc"),
        ("config key", lambda a: _config(["train.speed=3"]), "train.speed"),
    ]


def _open(path):
    from dnadiff.data.fasta import open_genome

    open_genome(path).close()


def _cifar(path):
    from dnadiff.data.pixels import read_cifar10_batch

    read_cifar10_batch(path)


def _config(overrides):
    from dnadiff.config import load_config

    load_config("demo", overrides)


API_CASES = [pytest.param(fn, pattern, id=f"api:{name}") for name, fn, pattern in _api_cases()]


@pytest.mark.parametrize("call, pattern", API_CASES)
def test_api_raises_user_error_in_one_line(assets, call, pattern):
    before = snapshot(assets)
    with pytest.raises(UserError) as err:
        call(assets)
    message = str(err.value)
    assert "\n" not in message and re.search(pattern, message), message
    assert ": " in message, message
    for name in OUTPUTS:
        assert not (assets / name).exists()
    assert snapshot(assets) == before


def test_the_table_is_broad():
    assert len(CASES) + len(API_CASES) >= 150
    classes = {p.id.split(":")[1] for p in CASES}
    assert {"number", "config", "path", "checkpoint", "output", "device", "request", "long job"} <= classes
    commands = {p.id.split(":")[0] for p in CASES}
    assert commands == {"pretrain", "evaluate", "sample", "finetune", "export"}
