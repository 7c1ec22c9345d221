"""The one optimiser setup: which parameters get weight decay (exactly), and the warm-up + cosine schedule
against its closed form, for pretraining's module and fine-tuning alike."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from dnadiff.models import build_model
from dnadiff.training.optim import build_optimizer, parameter_groups, warmup_cosine, warmup_steps


def _layer_names(i: int) -> tuple[set, set]:
    base = f"backbone.layers.{i}"
    decay = {f"{base}.mixer.mamba_fwd.{n}" for n in ("in_proj.weight", "conv1d.weight", "x_proj.weight",
                                                     "dt_proj.weight", "out_proj.weight")}
    decay |= {f"{base}.mixer.mamba_rev.{n}" for n in ("conv1d.weight", "x_proj.weight", "dt_proj.weight")}
    no = {f"{base}.norm.weight"}
    for d in ("fwd", "rev"):
        no |= {f"{base}.mixer.mamba_{d}.{n}" for n in ("A_log", "D", "conv1d.bias", "dt_proj.bias")}
    return decay, no


@pytest.mark.parametrize("variant", ["ph", "ps"])
def test_parameter_groups_are_exactly_mambas(variant):
    model = build_model({"name": "caduceus", "d_model": 8, "n_layer": 2, "variant": variant,
                         "time_conditioning": True, "num_classes": 2})
    decay = {"time_embed.0.weight", "time_embed.2.weight"}
    no = {"backbone.embedding.weight", "backbone.norm_f.weight", "time_embed.0.bias", "time_embed.2.bias",
          "label_embed.weight"}
    for i in range(2):
        d, n = _layer_names(i)
        decay, no = decay | d, no | n
    groups = parameter_groups(model, 0.1)
    assert set(groups[0]["names"]) == decay and groups[0]["weight_decay"] == 0.1
    assert set(groups[1]["names"]) == no and groups[1]["weight_decay"] == 0.0
    # every distinct parameter exactly once (tied in/out projections and LM head included)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_marker_survives_deepcopy_and_classifier_head():
    from dnadiff.models.heads import SequenceClassifier

    backbone = copy.deepcopy(build_model({"name": "caduceus", "d_model": 8, "n_layer": 1}))
    groups = parameter_groups(SequenceClassifier(backbone, 2), 0.1)
    assert "backbone.backbone.layers.0.mixer.mamba_fwd.A_log" in groups[1]["names"]
    assert "score.weight" in groups[0]["names"] and "score.bias" in groups[1]["names"]


def test_frozen_parameters_are_left_out_and_batchnorm_is_not_decayed():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    net[2].weight.requires_grad_(False)
    groups = parameter_groups(net, 0.5)
    assert groups[0]["names"] == ["0.weight"]
    assert set(groups[1]["names"]) == {"0.bias", "1.weight", "1.bias", "2.bias"}


def test_warmup_cosine_closed_form():
    w, total, m = 10, 200, 0.1
    for s in range(w):
        assert warmup_cosine(s, w, total, m) == pytest.approx((s + 1) / w)
    for s in (10, 57, 105, 199, 200, 350):
        p = min(1.0, (s - w) / (total - w))
        assert warmup_cosine(s, w, total, m) == pytest.approx(m + (1 - m) * (1 + math.cos(math.pi * p)) / 2)
    assert warmup_cosine(10, w, total, m) == pytest.approx(1.0)
    assert warmup_cosine(105, w, total, m) == pytest.approx(m + (1 - m) / 2)  # half-way: midpoint
    assert warmup_cosine(200, w, total, m) == pytest.approx(m) == warmup_cosine(10_000, w, total, m)
    assert warmup_steps(200, 0.05) == 10 and warmup_steps(20, 0.01) == 1


def test_build_optimizer_applies_decay_groups_and_schedule():
    torch.manual_seed(0)
    model = build_model({"name": "caduceus", "d_model": 8, "n_layer": 1})
    opt, sched = build_optimizer(model, lr=1e-2, weight_decay=0.5, warmup=4, total=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(25):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-2 * warmup_cosine(s, 4, 20, 0.1) for s in range(25)])
    # with zero gradients AdamW only decays: A_log and D stay, in_proj shrinks by lr * wd per step
    model = build_model({"name": "caduceus", "d_model": 8, "n_layer": 1})
    opt, _ = build_optimizer(model, lr=1e-2, weight_decay=0.5, warmup=1, total=1, min_lr_ratio=1.0)
    mamba = model.backbone.layers[0].mixer.mamba_fwd
    before = {n: p.detach().clone() for n, p in (("A_log", mamba.A_log), ("D", mamba.D), ("in", mamba.in_proj.weight))}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(mamba.A_log, before["A_log"]) and torch.equal(mamba.D, before["D"])
    assert torch.allclose(mamba.in_proj.weight, before["in"] * (1 - 1e-2 * 0.5))


def test_pretraining_module_uses_the_same_groups():
    from dnadiff.training.diffusion_module import DiffusionModule

    module = DiffusionModule({"name": "caduceus", "d_model": 8, "n_layer": 1}, {"vocab_size": 4},
                             optim={"weight_decay": 0.1, "warmup_steps": 5, "max_steps": 50}, ema_decay=0)
    opt = module.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in module.named_parameters()}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "model.backbone.layers.0.mixer.mamba_fwd.A_log" in no_decay
    assert "model.backbone.layers.0.mixer.mamba_fwd.D" in no_decay
    assert "model.backbone.layers.0.mixer.mamba_fwd.in_proj.weight" not in no_decay
