"""GPU checks (marked ``gpu``; skipped without CUDA): every available scan kernel against the pure scan
for Mamba, BiMamba and Caduceus Ph/PS under bfloat16 autocast (outputs and all gradients), the Triton
scan in float32 against the sequential recurrence, a bfloat16 training step on real DNA, and the GPU
code paths of pretrain / evaluate / sample / finetune through the CLI. Uses only the data bundled in
``data/`` so that ``benchmarks/gpu_check.sh`` can run it from a bare checkout. Also: activation
checkpointing under bf16 autocast for every kernel (issue 24)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from dnadiff.models import build_model
from dnadiff.ops import scan, triton_scan
from dnadiff.models.bimamba import BiMamba
from dnadiff.models.mamba import Mamba
from dnadiff.models.config import caduceus_spec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[1]
GENOME = REPO / "data" / "hg38" / "hg38_chr2_1-2333275.fa.gz"
ENHANCERS = REPO / "data" / "genomic_benchmarks" / "human_enhancers_cohn.test.tsv"
KINDS = ["mamba", "bimamba", "caduceus_ph", "caduceus_ps"]


def kernel_available(kernels: str) -> bool:
    return {"triton": triton_scan.available(), "cuda": scan._mamba_scan is not None}[kernels]


def build(kind: str, kernels: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "mamba":
        return Mamba(64, kernels=kernels)
    if kind == "bimamba":
        return BiMamba(64, kernels=kernels)
    return build_model(caduceus_spec("demo", variant=kind.split("_")[1], kernels=kernels, time_conditioning=True))


def forward_backward(model, kind, inputs, weight, autocast=True):
    """Forward (bf16 autocast or float32), float32 weighted-sum backward: (output, {name: grad}, with the
    input's gradient for Mamba/BiMamba)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model(*inputs)
    (out.float() * weight).sum().backward()
    grads = {name: p.grad.float() for name, p in model.named_parameters() if p.grad is not None}
    if kind in ("mamba", "bimamba"):
        grads["input"] = inputs[0].grad.float()
        inputs[0].grad = None
    return {"output": out.float(), **grads}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("kernels", ["triton", "cuda"])
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_matches_pure_scan_under_bf16_autocast(kind, kernels):
    """Same weights and inputs under bf16 autocast: the kernel and the pure scan (both with float32 states)
    agree on the output and every gradient to within 3x the bf16 noise floor measured in the same run
    (the pure scan under autocast against the pure scan in float32), or 2e-3 when that floor is smaller.
    A wrong kernel is off by O(1)."""
    if not kernel_available(kernels):
        pytest.skip(f"{kernels} scan not installed")
    pure = build(kind, "pure").cuda()
    fused = build(kind, kernels).cuda()
    fused.load_state_dict(pure.state_dict())
    g = torch.Generator(device="cuda").manual_seed(0)
    L = 300  # not a multiple of any block size
    if kind in ("mamba", "bimamba"):
        x = torch.randn(2, L, 64, device="cuda", generator=g).requires_grad_()
        inputs, out_dim = (x,), 64
    else:
        inputs, out_dim = (torch.randint(0, 4, (2, L), device="cuda", generator=g),
                           torch.rand(2, device="cuda", generator=g)), 4
    weight = torch.randn(2, L, out_dim, device="cuda", generator=g)
    exact = forward_backward(pure, kind, inputs, weight, autocast=False)
    ref = forward_backward(pure, kind, inputs, weight)
    got = forward_backward(fused, kind, inputs, weight)
    assert ref.keys() == got.keys()
    bad = {}
    for name in ref:
        floor = max(3 * rel(ref[name], exact[name]), 2e-3)
        if not rel(got[name], ref[name]) <= floor:
            bad[name] = (round(rel(got[name], ref[name]), 5), round(floor, 5))
    assert not bad, f"(error, allowed): {bad}"


@pytest.mark.parametrize("kernels", ["pure", "triton", "cuda"])
@pytest.mark.parametrize("kind", ["caduceus_ph", "caduceus_ps"])
def test_activation_checkpointing_on_gpu_under_bf16_autocast(kind, kernels):
    """Issue 24: checkpointed blocks (and the nested recompute of each Mamba direction) under bf16 autocast on
    the GPU give the plain backward's output and gradients: the recomputation replays the same kernels, so
    only the order of atomic additions in the kernels' backward differs (1e-3 relative allowed; a wrong
    recomputation is off by O(1))."""
    from dnadiff.models.checkpointing import set_activation_checkpointing

    if kernels != "pure" and not kernel_available(kernels):
        pytest.skip(f"{kernels} scan not installed")
    model = build(kind, kernels).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    inputs = (torch.randint(0, 4, (2, 300), device="cuda", generator=g), torch.rand(2, device="cuda", generator=g))
    weight = torch.randn(2, 300, 4, device="cuda", generator=g)
    plain = forward_backward(model, kind, inputs, weight)
    set_activation_checkpointing(model, 1)
    got = forward_backward(model, kind, inputs, weight)
    bad = {name: rel(got[name], plain[name]) for name in plain if not rel(got[name], plain[name]) <= 1e-3}
    assert plain.keys() == got.keys() and not bad, bad


@pytest.mark.parametrize("L", [256, 1000])
def test_triton_scan_float32_matches_sequential_recurrence(L):
    """Compiled Triton kernels, float32 inputs, lengths that are and are not multiples of the block."""
    if not triton_scan.available():
        pytest.skip("triton not installed")
    g = torch.Generator(device="cuda").manual_seed(0)
    b, d, n = 2, 96, 16
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    A = -torch.rand(d, n, device="cuda", generator=g) * 4 - 0.1
    args = [r(b, d, L), r(b, d, L), A, r(b, n, L), r(b, n, L), r(d), r(b, d, L), r(d)]
    args = [a.requires_grad_() for a in args]
    ref_args = [a.detach().double().requires_grad_() for a in args]

    def call(fn, a):
        u, delta, A, B, C, D, z, bias = a
        return fn(u, delta, A, B, C, D, z, bias, True)

    out, ref = call(triton_scan.selective_scan_triton, args), call(scan.selective_scan_ref, ref_args)
    assert rel(out.double(), ref) < 1e-5
    gy = torch.randn(ref.shape, device="cuda", generator=g)
    for name, a, b_ in zip("u delta A B C D z bias".split(), torch.autograd.grad(out, args, gy),
                           torch.autograd.grad(ref, ref_args, gy.double())):
        assert rel(a.double(), b_) < 1e-4, name


def test_bf16_training_step_learns_real_dna():
    """Caduceus demo size, kernels="auto" (a fused kernel when one is installed), bf16 autocast, AdamW on a
    fixed batch of hg38 windows: the masked-diffusion loss falls and stays finite."""
    from dnadiff.data.fasta import open_genome
    from dnadiff.data.intervals import whole_genome
    from dnadiff.data.windows import GenomeWindows
    from dnadiff.diffusion import MaskedDiffusion, get_schedule

    windows = iter(GenomeWindows(str(GENOME), whole_genome(open_genome(str(GENOME))), 512, mode="random", seed=0))
    x = torch.stack([next(windows)["tokens"] for _ in range(8)]).cuda()
    torch.manual_seed(0)
    model = build_model(caduceus_spec("demo", variant="ph", time_conditioning=True)).cuda()
    diffusion = MaskedDiffusion(vocab_size=4, schedule=get_schedule("loglinear"))
    backend = scan.scan_backend(torch.zeros(1, device="cuda"), "auto")
    if kernel_available("cuda") or kernel_available("triton"):
        assert backend in ("mamba-ssm", "triton")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        g = torch.Generator(device="cuda").manual_seed(step % 4)  # four fixed noise draws
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = diffusion.loss(model, x, x < 4, generator=g).loss
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.02, losses


# ---- the CLI on the GPU -----------------------------------------------------------------------------------

TINY = ["model.d_model=32", "model.n_layer=2", "data.window=256", "data.batch_size=8", "data.max_eval_windows=8",
        "train.val_every=10", "train.ckpt_every=10", "optim.warmup_steps=2"]


def device_options(command: str) -> list[str] | None:
    """The options that put ``dnadiff COMMAND`` on the GPU on this checkout (None: it has none yet)."""
    from dnadiff.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    options = {o for action in sub._actions for o in action.option_strings}
    if "--accelerator" in options:
        return ["--accelerator", "gpu"]
    if "--device" in options:
        return ["--device", "cuda"]
    return None


def run_on_gpu(argv: list[str]) -> None:
    """Run the CLI in this process and check it allocated GPU memory."""
    from dnadiff.cli import main

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    assert main(argv) == 0, argv
    assert torch.cuda.max_memory_allocated() > 0, f"{argv[0]} did not touch the GPU"


@pytest.fixture(scope="module")
def gpu_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu_pretrain")
    run_on_gpu(["pretrain", "--no-progress", "--config", "demo", "--genome", str(GENOME), "--out", str(out),
                "--max-steps", "20", "--accelerator", "gpu", "--devices", "1", *TINY])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["train/tokens_per_s"] > 0
    assert 0 < summary["val/bits_per_token"] < 3
    return out / "model.pt"


def test_pretrain_on_gpu_in_bf16(gpu_checkpoint):
    import yaml

    cfg = yaml.safe_load((gpu_checkpoint.parent / "config.yaml").read_text())
    assert cfg["train"]["precision"] in ("auto", "bf16-mixed")  # auto means bf16-mixed on a GPU


def test_evaluate_on_gpu(gpu_checkpoint, capsys):
    flags = device_options("evaluate")
    if flags is None:
        pytest.skip("evaluate has no device option on this checkout")
    capsys.readouterr()
    run_on_gpu(["evaluate", "--checkpoint", str(gpu_checkpoint), "--genome", str(GENOME), "--json", *flags,
                "--max-windows", "8", "--num-t", "2", "--markov-train-windows", "64", "--markov-max-order", "3"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 1.0 < result["perplexity"] < 4.5


def test_sample_on_gpu(gpu_checkpoint, tmp_path):
    flags = device_options("sample")
    if flags is None:
        pytest.skip("sample has no device option on this checkout")
    out = tmp_path / "samples.fa"
    run_on_gpu(["sample", "--checkpoint", str(gpu_checkpoint), "--num", "4", "--length", "256", "--steps", "32",
                "--out", str(out), *flags])
    seqs = ["".join(rec.splitlines()[1:]) for rec in out.read_text().split(">")[1:]]  # wrapped FASTA
    assert len(seqs) == 4 and all(len(s) == 256 and set(s) <= set("ACGT") for s in seqs)


def test_finetune_one_run_on_gpu(gpu_checkpoint, tmp_path):
    flags = device_options("finetune")
    if flags is None:
        pytest.skip("finetune has no device option on this checkout")
    train, test = split_enhancers(tmp_path, 600, 200)
    out = tmp_path / "ft"
    run_on_gpu(["finetune", "--task", "human_enhancers", "--data", str(train), "--test-data", str(test),
                "--checkpoint", str(gpu_checkpoint), "--protocol", "caduceus", "--folds", "1", "--max-epochs", "1",
                "--no-baselines", "--out", str(out), *flags])
    results = json.loads((out / "results.json").read_text())
    assert len(results["folds"]) == 1


def split_enhancers(folder: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    """Disjoint train and test tables drawn (seeded) from the bundled enhancer table, header kept."""
    import random

    lines = ENHANCERS.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    random.Random(0).shuffle(rows)  # the file is sorted by label
    train, test = folder / "train.tsv", folder / "test.tsv"
    train.write_text("\n".join([header, *rows[:n_train]]) + "\n")
    test.write_text("\n".join([header, *rows[n_train:n_train + n_test]]) + "\n")
    return train, test
