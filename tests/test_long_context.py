"""Long context (issue 24): activation checkpointing, the peak-memory estimate and its refusal,
bounded-memory inference."""
from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dnadiff.errors import UserError
from dnadiff.models import build_model
from dnadiff.models.checkpointing import set_activation_checkpointing
from dnadiff.config import load_config
from dnadiff.training.memory import (ActivationProfile, check_fits, estimate_peak_bytes, prepare_memory,
                                     profile_activations, resolve_checkpointing)


def caduceus(variant, kernels="auto", n_layer=3, d_model=8, **extra):
    torch.manual_seed(0)
    return build_model(dict(name="caduceus", variant=variant, d_model=d_model, n_layer=n_layer, kernels=kernels,
                            time_conditioning=True, **extra))


def grads(model, x, t, every):
    set_activation_checkpointing(model, every)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same RC-augmentation draws in every run
    model(x, t).logsumexp(-1).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


CASES = [("ps", "pure", {}), ("ph", "auto", {"rc_aug": True}), ("ps", "auto", {}), ("ph", "auto", {"conjoin": True})]


@pytest.mark.parametrize("variant, kernels, extra", CASES)
def test_checkpointed_gradients_equal_the_plain_ones_in_float64(variant, kernels, extra):
    """Every parameter's float64 gradient, checkpointing every block and in groups of 2, equals the plain
    backward's (PS, Ph with RC augmentation, Ph conjoined in eval mode; pure and fused CPU scans). The
    blocks' forward counts prove the recomputation happened: twice per step with checkpointing."""
    model = caduceus(variant, kernels, **extra).double()
    if extra.get("conjoin"):
        model.eval()  # conjoin averages f(x) and rc(f(rc(x))) in eval mode
    calls = []
    model.backbone.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    x, t = torch.randint(0, 5, (2, 29)), torch.rand(2, dtype=torch.float64)
    plain = grads(model, x, t, 0)
    plain_calls = len(calls)
    for every in (1, 2):
        calls.clear()
        got = grads(model, x, t, every)
        assert len(calls) == 2 * plain_calls
        assert set(got) == set(plain) and len(plain) > 10
        for name, value in plain.items():
            assert value.abs().sum() > 0, name
            torch.testing.assert_close(got[name], value, rtol=0, atol=1e-13, msg=name)


def test_checkpointed_transformer_gradients_equal_the_plain_ones():
    torch.manual_seed(0)
    model = build_model(dict(name="transformer", embed_size=6, num_outputs=4, d_model=16, n_layer=3, n_head=2,
                             max_len=32, dropout=0.0)).double()
    torch.nn.init.normal_(model.head.weight, std=0.1)  # zero-initialised head: no gradient would reach the blocks
    x, t = torch.randint(0, 5, (2, 20)), torch.rand(2, dtype=torch.float64)
    plain = grads(model, x, t, 0)
    got = grads(model, x, t, 1)
    for name, value in plain.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-13, msg=name)


def test_no_grad_forward_is_unchanged_by_checkpointing():
    model = caduceus("ps").eval()
    x, t = torch.randint(0, 5, (2, 50)), torch.rand(2)
    with torch.no_grad():
        plain = model(x, t)
        set_activation_checkpointing(model, 1)
        torch.testing.assert_close(model(x, t), plain, rtol=0, atol=0)


@pytest.mark.parametrize("value, window, expected", [("auto", 4096, 0), ("auto", 4097, 1), (True, 1024, 1),
                                                     (False, 1 << 20, 0), (4, 1024, 4)])
def test_the_checkpointing_setting(value, window, expected):
    assert resolve_checkpointing(value, window) == expected


def test_the_config_key_is_typed():
    assert load_config("demo")["train"]["activation_checkpointing"] == "auto"
    assert load_config("demo", ["train.activation_checkpointing=true"])["train"]["activation_checkpointing"] is True
    assert load_config("demo", ["train.activation_checkpointing=2"])["train"]["activation_checkpointing"] == 2
    for bad in ("0", "maybe", "-1", "1.5"):
        with pytest.raises(UserError) as err:
            load_config("demo", [f"train.activation_checkpointing={bad}"])
        assert str(err.value).startswith(f"train.activation_checkpointing={bad} is not allowed: use auto, true, false")


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_profile_counts_what_the_backward_keeps(variant):
    """A block's input is the running residual sum: H float32 values a token (H = 2 d_model for PS); identical
    blocks save identical bytes; and the per-token figure predicts the bytes saved at another length."""
    model = caduceus(variant, d_model=8, n_layer=3)
    profile = profile_activations(model)
    width = 16 if variant == "ps" else 8
    assert profile.boundary == width * 4
    assert len(profile.blocks) == 3 and len(set(profile.blocks)) == 1 and profile.blocks[0] > 8 * width
    assert profile.param_bytes == 4 * sum(p.numel() for p in model.parameters())
    # recomputed, a block keeps its input projection's output instead of every inner intermediate
    assert 0 < profile.lean_blocks[0] < profile.blocks[0] and 0 < profile.section < profile.blocks[0]
    longer = profile_activations(model, lengths=(256, 1024))
    assert longer.blocks == pytest.approx(profile.blocks, rel=0.02)
    assert longer.outside == pytest.approx(profile.outside, rel=0.02)


def test_profile_leaves_the_random_stream_alone():
    model = caduceus("ph", rc_aug=True)
    torch.manual_seed(5)
    profile_activations(model)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))


def test_estimate_closed_form():
    """Peak = runtime + 5 x parameter bytes + tokens x (outside + saved blocks + work); checkpointing in
    groups of k keeps one input per group plus the largest group."""
    from dnadiff.training import memory

    p = ActivationProfile(blocks=(100.0,) * 4, lean_blocks=(40.0,) * 4, section=30.0, outside=10.0, boundary=8.0,
                          param_bytes=1000)
    w = memory.WORK_FACTOR
    fixed = memory.RUNTIME_BYTES + 5 * 1000
    assert estimate_peak_bytes(p, 64, 2, 0) == fixed + 128 * (10 + 400 + w * 100)
    assert estimate_peak_bytes(p, 64, 2, 1) == fixed + 128 * (10 + 4 * 8 + 40 + w * 30)
    assert estimate_peak_bytes(p, 64, 2, 3) == fixed + 128 * (10 + 2 * 8 + 120 + w * 30)
    assert estimate_peak_bytes(p, 64, 2, training=False) == memory.RUNTIME_BYTES + 1000 + 128 * (8 + 100 + 5)


def test_a_run_that_cannot_fit_is_refused_in_one_line_naming_the_fixes():
    from dnadiff.training import memory

    p = ActivationProfile(blocks=(1000.0,) * 4, lean_blocks=(1000.0,) * 4, section=1000.0, outside=0.0,
                          boundary=10.0, param_bytes=0)
    # plain: 6000 B a token, checkpointed: 1000 + 40 + 2000 = 3040 B a token
    capacity = memory.RUNTIME_BYTES + 4 * 1024 * 3040
    with pytest.raises(UserError) as err:
        check_fits(p, window=1024, batch=8, every=0, capacity=capacity)
    text = str(err.value)
    assert "\n" not in text and text.startswith("data.window=1024 x data.batch_size=8 needs about")
    assert "train.activation_checkpointing=true" not in text  # 8 x 1024 x 3040 B does not fit either
    assert "data.batch_size=4 with checkpointing" in text and "data.window=512 with checkpointing" in text
    with pytest.raises(UserError, match="train.activation_checkpointing=true"):
        check_fits(p, window=1024, batch=4, every=0, capacity=capacity)
    assert check_fits(p, window=1024, batch=4, every=1, capacity=capacity) == capacity  # exactly fits


def test_prepare_memory_sets_checkpointing_and_checks(monkeypatch):
    from dnadiff.training import memory

    model = caduceus("ps")
    reused = []  # reuse_freed_memory changes malloc for the whole process: recorded here, not applied
    monkeypatch.setattr(memory, "reuse_freed_memory", lambda: reused.append(1) or True)
    cfg = load_config("demo", ["data.window=8192", "data.batch_size=2"])
    line = prepare_memory(cfg, model, device="cpu")
    assert model.backbone.checkpoint_every == 1 and "activation checkpointing every 1 blocks" in line
    assert reused == [1] and line.endswith("freed memory reused)")
    profile = profile_activations(model)
    need = estimate_peak_bytes(profile, 8192, 2, 1)
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device, processes=1: int(1.5 * need))
    assert "reused" not in prepare_memory(cfg, model, device="cpu") and reused == [1]  # fits, without headroom
    cfg["train"]["activation_checkpointing"] = False
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device, processes=1: memory.RUNTIME_BYTES + 10**6)
    with pytest.raises(UserError, match=r"needs about .* cpu memory has"):
        prepare_memory(cfg, model, device="cpu")
    cfg["train"]["memory_check"] = False
    assert "check skipped" in prepare_memory(cfg, model, device="cpu") and model.backbone.checkpoint_every == 0


class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages alive during the ops run inside it (peak in ``self.peak``)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.seen:
                    self.seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, storage.nbytes())
        return out

    def _free(self, key, nbytes):
        self.seen.discard(key)
        self.live -= nbytes


def test_no_grad_inference_memory_does_not_grow_with_depth():
    """Under no_grad the forward keeps no earlier layer's activations: the peak of live tensor bytes of a
    12-layer model is that of a 2-layer one (to within the extra weights), while a forward that records
    for the backward grows with depth."""
    x, t = torch.randint(0, 5, (1, 2048)), torch.rand(1)
    peaks = {}
    for n_layer in (2, 12):
        model = caduceus("ph", n_layer=n_layer, d_model=16, kernels="pure").eval()
        for grad in (False, True):
            with torch.set_grad_enabled(grad), LiveBytes() as mode:
                out = model(x, t)
                del out
            peaks[n_layer, grad] = mode.peak
    assert peaks[12, False] < 1.05 * peaks[2, False]
    assert peaks[12, True] > 3 * peaks[2, True]


# ---------------------------------------------------------------- end to end on the bundled hg38 piece
def hg38(shared_data):
    return str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")


TINY = ["model.d_model=16", "model.n_layer=2", "data.window=128", "data.batch_size=4", "data.max_eval_windows=8",
        "train.val_every=3", "train.ckpt_every=2", "optim.warmup_steps=2", "train.ema_decay=0.9"]


def pretrain(args):
    from dnadiff.cli import main

    return main(["pretrain", "--no-progress", "--config", "demo", *args])


@pytest.mark.slow
def test_checkpointed_training_resumes_exactly_and_equals_plain_training(shared_data, tmp_path, capsys):
    """6 plain steps == 4 checkpointed steps + a checkpointed resume to 6, weight for weight and EMA too."""
    from dnadiff.checkpoints.format import load_checkpoint

    genome = hg38(shared_data)
    full, part = tmp_path / "full", tmp_path / "part"
    assert pretrain(["--genome", genome, "--out", str(full), "--max-steps", "6", *TINY,
                     "train.activation_checkpointing=false"]) == 0
    assert "activation checkpointing off" in capsys.readouterr().out
    ckpt = [*TINY, "optim.total_steps=6", "train.activation_checkpointing=true"]
    assert pretrain(["--genome", genome, "--out", str(part), "--max-steps", "4", *ckpt]) == 0
    assert "activation checkpointing every 1 blocks" in capsys.readouterr().out
    assert pretrain(["--genome", genome, "--out", str(part), "--max-steps", "6", "--resume", *ckpt]) == 0
    a, b = (load_checkpoint(p / "checkpoints" / "last.ckpt") for p in (full, part))
    assert b["global_step"] == 6
    names = [n for n in a["state_dict"] if "model." in n]
    assert len(names) > 10
    for name in names:
        torch.testing.assert_close(b["state_dict"][name], a["state_dict"][name], rtol=0, atol=0, msg=name)
    for name, value in a["ema"]["shadow"].items():
        torch.testing.assert_close(b["ema"]["shadow"][name], value, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_the_7m_config_trains_on_hg38_with_checkpointing(shared_data, tmp_path, capsys):
    """The shipped 131k configuration (PS, d_model 256, 16 layers) trains a few steps on a shorter window
    of the real hg38 piece, checkpointed by the auto setting's explicit form; the loss is finite."""
    import json

    out = tmp_path / "7m"
    code = pretrain(["--config", "7m", "--genome", hg38(shared_data), "--out", str(out), "--max-steps", "2",
                     "data.window=256", "data.batch_size=1", "data.max_eval_windows=1", "train.val_every=2",
                     "train.val_num_t=1", "train.activation_checkpointing=true", "optim.warmup_steps=1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "activation checkpointing every 1 blocks" in printed and "pretrain done: 2 steps" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"] > 7_000_000 and 0 < summary["val/bits_per_token"] < 10


@pytest.mark.slow
def test_a_run_too_big_for_the_machine_is_refused_before_anything_is_written(shared_data, tmp_path, capsys):
    out = tmp_path / "big"
    code = pretrain(["--config", "7m", "--genome", hg38(shared_data), "--out", str(out), "data.window=65536",
                     "data.batch_size=8", "train.activation_checkpointing=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "data.window=65536 x data.batch_size=8 needs about" in err and "cpu memory has" in err
    assert "data.batch_size=" in err and "data.window=" in err and "Traceback" not in err
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_long_context_benchmark_prints_one_json_line(tmp_path):
    """benchmarks/long_context.py at toy windows: one JSON line, a plain and a checkpointed row measured in
    the same run with their ratio, an inference row, and the estimate next to each measured peak."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "long_context.py"), "--models", "470k",
                           "--windows", "64", "--infer-windows", "128", "--threads", "1", "--budget-s", "200"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    plain, ckpt, infer = (result[f"470k_ph_{k}"] for k in ("L64_b16_ckpt0", "L64_b16_ckpt1", "L128_b16_infer"))
    for row in (plain, ckpt):
        assert row["tokens"] == 1024 and row["train_tokens_per_s"] > 0 and row["train_estimate_gb"] > 0
    assert ckpt["every"] == 1 and plain["every"] == 0 and infer["infer_peak_rss_gb"] > 0
    assert set(result["470k_L64_ckpt_over_plain"]) == {"peak_rss", "train_time"}

