"""`dnadiff pretrain --init`: MDLM's generative fine-tuning of an original Caduceus MLM. The first step computes
the MLM's function in dnadiff's vocabulary (its [MASK] row is the diffusion's mask), training lowers the
loss on real DNA, and the output carries none of Lightning's chatter."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dnadiff.training.pretrain import build_module
from dnadiff.data.tokenizer import CADUCEUS_IDS, MASK, to_caduceus_ids
from dnadiff.errors import UserError
from dnadiff.checkpoints.sources import load_payload
from dnadiff.data.info import DataInfo
from dnadiff.checkpoints.huggingface import load_original_caduceus
from dnadiff.config import load_config
from dnadiff.training.warm_start import apply_init, init_model_spec
from hf_cache import add_repo, original_files, reference

REPO = Path(__file__).resolve().parents[1]
DNA_INFO = DataInfo(window=64)
BASES = [CADUCEUS_IDS[k] for k in range(4)]
CHATTER = ["GPU available", "TPU available", "HPU available", "litlogger", "LeafSpec", "weights_only",
           "`Trainer.fit` stopped"]


def write_original(folder: Path, config, state, tmp: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in original_files(config, state, "safetensors", tmp).items():
        (folder / name).write_bytes(data)
    return folder


def module_from_init(source, overrides=()):
    """The pretraining module exactly as `dnadiff pretrain --init SOURCE` builds it (before training)."""
    cfg = load_config("demo", list(overrides))
    payload = load_payload(source)
    cfg["model"] = init_model_spec(cfg["model"], payload)
    module = build_module(cfg, DNA_INFO)
    apply_init(module, payload, str(source))
    return module


@pytest.mark.parametrize("variant", ["ph", "ps"])
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_first_step_is_the_original_mlm_at_masked_positions(shared_fixtures, tmp_path, variant, time_conditioning):
    config, state, expected = reference(shared_fixtures, variant)
    folder = write_original(tmp_path / "orig", config, state, tmp_path)
    module = module_from_init(folder, [f"model.time_conditioning={str(time_conditioning).lower()}"])
    model = module.model.eval()
    assert (model.backbone.d_model, len(model.backbone.layers), model.backbone.variant) == (32, 2, variant)
    original = load_original_caduceus(config, state).eval()
    ids = torch.as_tensor([[{7: 0, 8: 1, 9: 2, 10: 3, 11: 5}[int(i)] for i in row] for row in expected["input_ids"]])
    g = torch.Generator().manual_seed(0)
    masked = (torch.rand(ids.shape, generator=g) < 0.4) & (ids < 4)
    z = torch.where(masked, torch.full_like(ids, MASK), ids)  # MASK -> the original [MASK] = 3
    t = torch.rand(3, generator=g)
    with torch.no_grad():
        got = model(z, t)
        want = original(to_caduceus_ids(z))[..., BASES]
        assert (got[masked] - want[masked]).abs().max() < 1e-4
        # unmasked input: the reference outputs of the original code itself
        assert (model(ids, t) - expected["logits"][..., BASES]).abs().max() < 1e-4
        # the first training loss is the diffusion loss of the original MLM (same noise)
        mlm = lambda zz, tt, labels=None: original(to_caduceus_ids(zz))[..., BASES]  # noqa: E731
        x, valid = ids.clamp_max(3), ids < 4
        ours = module.diffusion.loss(model, x, valid, generator=torch.Generator().manual_seed(1)).loss
        theirs = module.diffusion.loss(mlm, x, valid, generator=torch.Generator().manual_seed(1)).loss
        assert torch.allclose(ours, theirs, atol=1e-5) and ours > 0
    shadow = module.ema.shadow
    assert all(torch.equal(shadow[n], p) for n, p in model.named_parameters())


def test_init_refuses_other_modalities_and_misfits(shared_fixtures, tmp_path):
    from dnadiff.checkpoints.format import ModelFile, save_checkpoint
    from dnadiff.training.warm_start import check_modality

    config, state, _ = reference(shared_fixtures, "ph")
    folder = write_original(tmp_path / "orig", config, state, tmp_path)
    with pytest.raises(UserError, match="models dna, but the data is text"):
        check_modality(load_payload(folder), DataInfo(modality="text"), str(folder))
    payload = load_payload(folder)
    bad = ModelFile({**payload.model, "num_classes": 3}, payload.diffusion,
                        {**payload.state_dict, "label_embed.weight": torch.zeros(4, 32)}, payload.data)
    save_checkpoint(tmp_path / "classes.pt", bad)
    with pytest.raises(UserError, match="does not fit the model to train"):
        module_from_init(tmp_path / "classes.pt")


def run_cli(args, env_extra, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    # the pure-PyTorch scan: these runs test loading and output, not the (separately tested) fused CPU kernel
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DNADIFF_CPU_KERNEL": "0", **env_extra})
    return subprocess.run([sys.executable, "-m", "dnadiff.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_generative_finetuning_from_a_hub_id_lowers_the_loss_quietly(shared_fixtures, shared_data, tmp_path):
    from dnadiff.diffusion import evaluate
    from dnadiff.checkpoints.sources import load_model
    from dnadiff.training.data_sources import build_dna

    config, state, _ = reference(shared_fixtures, "ph")
    add_repo(tmp_path / "hub", "kuleshov-group/caduceus-ph_fixture", original_files(config, state, "safetensors", tmp_path))
    hg38 = str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")
    out = tmp_path / "run"
    tiny = ["data.window=128", "data.batch_size=8", "data.max_eval_windows=16", "train.val_every=20",
            "optim.warmup_steps=5", "train.ema_decay=0.9"]
    done = run_cli(["pretrain", "--no-progress", "--config", "demo", "--genome", hg38, "--out", str(out),
                    "--max-steps", "40", "--init", "kuleshov-group/caduceus-ph_fixture", *tiny],
                   {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert not [line for line in printed.splitlines() if any(c in line for c in CHATTER)], printed
    lines = done.stdout.splitlines()
    assert lines[0].startswith("init from kuleshov-group/caduceus-ph_fixture: original Caduceus MLM")
    assert lines[-1].startswith("pretrain done: 40 steps") and sum(line.startswith("step ") for line in lines) == 2
    assert "FutureWarning" not in done.stderr and "DeprecationWarning" not in done.stderr, done.stderr
    # the fine-tuned model scores the same held-out windows and noise better than the MLM it started from
    trained, process, payload = load_model(out / "model.pt")
    assert payload.original["config"] == config
    init, _, _ = load_model(tmp_path / "hub" / "models--kuleshov-group--caduceus-ph_fixture" / "snapshots"
                            / next(iter(os.listdir(tmp_path / "hub" / "models--kuleshov-group--caduceus-ph_fixture"
                                                   / "snapshots"))))
    dm, _ = build_dna({**payload.data.to_dict(), "max_eval_windows": 32}, hg38, seed=0)
    batches = list(dm.eval_dataloader("val", 32))
    before = evaluate(process, init, batches, num_t=8, generator=torch.Generator().manual_seed(0))
    after = evaluate(process, trained, batches, num_t=8, generator=torch.Generator().manual_seed(0))
    assert before.num_tokens == after.num_tokens > 3000
    assert after.bits_per_token < before.bits_per_token - 0.02, (before.bits_per_token, after.bits_per_token)
    # the run's Lightning checkpoint is a source too, read (and sampled) without importing Lightning
    from_ckpt, _, _ = load_model(out / "checkpoints" / "last.ckpt")
    z = batches[0]["tokens"][:2]
    with torch.no_grad():
        assert torch.equal(from_ckpt(z, torch.full((2,), 0.5)), trained(z, torch.full((2,), 0.5)))
    script = ("import sys, dnadiff.generate as g; g.load(sys.argv[1]).generate(1, length=16, steps=4, seed=0); "
              "print(any(m.startswith(('lightning', 'pytorch_lightning')) for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DNADIFF_CPU_KERNEL": "0"}
    done = subprocess.run([sys.executable, "-c", script, str(out / "checkpoints" / "last.ckpt")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


@pytest.mark.slow
def test_verbose_restores_the_framework_messages(shared_data, tmp_path):
    hg38 = str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")
    done = run_cli(["pretrain", "--no-progress", "--verbose", "--config", "demo", "--genome", hg38, "--out",
                    str(tmp_path / "v"), "--max-steps", "1", "model.d_model=16", "model.n_layer=1", "data.window=64",
                    "data.batch_size=2", "data.max_eval_windows=2", "train.val_every=1"], {})
    assert done.returncode == 0, done.stderr
    assert "GPU available" in done.stderr and "`Trainer.fit` stopped" in done.stderr
