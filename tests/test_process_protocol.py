"""The one diffusion-process interface: MaskedDiffusion and GenMD4 both implement DiffusionProcess
(loss result, NELBO draws, exact discrete NELBO, reverse step, sampling); GenMD4's exact discrete-time
NELBO against exact answers; `dnadiff evaluate` on a GenMD4 checkpoint."""
import json
import math

import pytest
import torch

from dnadiff.diffusion import DiffusionProcess, GenMD4, LossResult, MaskedDiffusion, PolynomialSchedule
from test_genmd4 import ExactGenMD4Denoiser
from toy_distribution import all_sequences, entropy, random_joint

V, L = 3, 3


class RandomDenoiser(torch.nn.Module):
    """Fixed random logits per (position, z_t token): not exact, but deterministic."""

    time_conditioned = False

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(L, V + 1, V, generator=torch.Generator().manual_seed(5)))

    def forward(self, z, t):
        return self.table[torch.arange(z.shape[1])[None], z]


@pytest.mark.parametrize("process", [MaskedDiffusion(V, "cosine"), GenMD4(V, init_w=[0.5, 1.0, 2.0])])
def test_both_processes_implement_the_whole_protocol(process):
    assert isinstance(process, DiffusionProcess)
    den = RandomDenoiser()
    x = all_sequences(V, L)
    g = torch.Generator().manual_seed(0)
    result = process.loss(den, x, generator=g)
    assert isinstance(result, LossResult) and result.loss.ndim == 0 and not result.nelbo.requires_grad
    result.loss.backward()
    assert den.table.grad.abs().sum() > 0
    assert process.nelbo_draws(den, x, num_t=5, generator=g).shape == (len(x), 5)
    assert process.nelbo(den, x, exact_steps=3, generator=g).shape == (len(x),)
    probs = process.reverse_probs(torch.full((4, V), 1.0 / V), 0.6, 0.3)
    torch.testing.assert_close(probs.sum(-1).double(), torch.ones(4, dtype=torch.float64))
    assert process.sample(den, num=6, length=L, steps=4, generator=g).shape == (6, L)


def test_genmd4_discrete_nelbo_with_equal_exponents_is_the_polynomial_schedule_one():
    den = RandomDenoiser()
    x = all_sequences(V, L).repeat(3, 1)
    genmd4 = GenMD4(V, init_w=2.0)
    poly = MaskedDiffusion(V, PolynomialSchedule(2.0))
    for T in (1, 3, 8):
        a = genmd4.discrete_nelbo_sum(den, x, T, generator=torch.Generator().manual_seed(T))
        b = poly.discrete_nelbo_sum(den, x, T, generator=torch.Generator().manual_seed(T))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_genmd4_discrete_nelbo_upper_bounds_and_converges_with_exact_denoiser():
    """NELBO_T >= -log p in expectation, decreasing in T, -> H; T = 1 is the sum of the marginal entropies exactly."""
    joint = random_joint(V, L, seed=3)
    proc = GenMD4(V, init_w=[0.7, 1.5, 3.0])
    den = ExactGenMD4Denoiser(joint, proc.w.detach())
    seqs = all_sequences(V, L)
    H = entropy(joint)
    marginals = torch.einsum("s,slv->lv", joint, torch.nn.functional.one_hot(seqs, V).double())
    sum_marginal_entropy = float(-(marginals * marginals.log()).sum())
    g = torch.Generator().manual_seed(2)
    expected = {}
    for T in (1, 2, 8, 64):
        reps = 40
        per = proc.nelbo(den, seqs.repeat(reps, 1), exact_steps=T, generator=g).view(reps, -1).mean(0).double()
        expected[T] = float((joint * per).sum())
    assert expected[1] == pytest.approx(sum_marginal_entropy, abs=1e-5)  # t = 1 masks everything: no randomness
    values = list(expected.values())
    assert all(a > b - 0.01 for a, b in zip(values, values[1:])), values
    assert all(v >= H - 0.02 for v in values), (values, H)
    assert values[0] - H > 0.1 and values[-1] - H < 0.03, (values, H)


@pytest.mark.slow
def test_evaluate_works_on_a_genmd4_checkpoint(shared_data, tmp_path, capsys):
    from dnadiff.cli import main
    from dnadiff.checkpoints.sources import load_model

    genome = str(shared_data / "hg38" / "hg38_chr2_1-2333275.fa.gz")
    out = tmp_path / "run"
    tiny = ["model.d_model=16", "model.n_layer=1", "data.window=64", "data.batch_size=4", "data.max_eval_windows=4",
            "train.val_every=2", "train.ckpt_every=2", "optim.warmup_steps=1", "diffusion.schedule=genmd4"]
    assert main(["pretrain", "--no-progress", "--config", "demo", "--genome", genome, "--out", str(out),
                 "--max-steps", "3", *tiny]) == 0
    _, process, payload = load_model(out / "model.pt")
    assert isinstance(process, GenMD4) and set(payload.process_state) == {"raw_w"}
    torch.testing.assert_close(process.raw_w.detach(), payload.process_state["raw_w"])
    capsys.readouterr()
    common = ["evaluate", "--checkpoint", str(out / "model.pt"), "--genome", genome, "--json", "--max-windows", "4",
              "--markov-train-windows", "32", "--markov-max-order", "2"]
    assert main([*common, "--num-t", "2"]) == 0
    mc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*common, "--exact-steps", "4"]) == 0
    exact = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for result in (mc, exact):
        assert result["num_positions"] > 4 * 64 * 0.8 and math.isfinite(result["bits_per_nt"])
        # an almost untrained network: close to 2 bits per base, far from the 0 or inf of a broken bound
        assert 1.5 < result["bits_per_nt"] < 3.0, result


def test_lightning_checkpoints_with_the_old_genmd4_key_still_load(tmp_path):
    """Before issue 13 the learnable process sat under ``genmd4.`` in the Lightning state dict; now ``diffusion.``."""
    from dnadiff.checkpoints.sources import load_model
    from dnadiff.checkpoints.format import save_checkpoint
    from dnadiff.training.diffusion_module import DiffusionModule

    spec = {"name": "transformer", "vocab_size": 7, "num_outputs": 4, "d_model": 8, "n_layer": 1, "n_head": 2,
            "max_len": 16}
    module = DiffusionModule(spec, {"vocab_size": 4, "schedule": "genmd4", "init_w": [0.5, 1.0, 2.0, 3.0]}, ema_decay=0)
    state = module.state_dict()
    assert "diffusion.raw_w" in state
    old = {("genmd4." + k[len("diffusion."):] if k.startswith("diffusion.") else k): v for k, v in state.items()}
    ckpt = {"state_dict": old, "hyper_parameters": dict(module.hparams)}
    save_checkpoint(tmp_path / "old.ckpt", ckpt)
    _, process, _ = load_model(tmp_path / "old.ckpt")
    torch.testing.assert_close(process.w.detach(), torch.tensor([0.5, 1.0, 2.0, 3.0]))
    fresh = DiffusionModule(spec, {"vocab_size": 4, "schedule": "genmd4"}, ema_decay=0)
    fresh.on_load_checkpoint(ckpt)  # what Lightning calls before loading the state dict on resume
    fresh.load_state_dict(ckpt["state_dict"])
    torch.testing.assert_close(fresh.diffusion.w.detach(), torch.tensor([0.5, 1.0, 2.0, 3.0]))
