"""Training a tiny network with the loss brings its NELBO near the true entropy; EMA; core isolation."""
import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from dnadiff.diffusion import EMA, MaskedDiffusion, evaluate
from toy_distribution import entropy, markov_joint

V, L = 4, 8


class TinyDenoiser(nn.Module):
    """Embeds all L positions, mixes them with an MLP: sees the whole noisy sequence."""

    time_conditioned = False

    def __init__(self, hidden=256):
        super().__init__()
        self.emb = nn.Embedding(V + 1, 16)
        self.net = nn.Sequential(nn.Linear(L * 16, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, L * V))

    def forward(self, z, t):
        return self.net(self.emb(z).flatten(1)).view(-1, L, V)


def sample_chain(P0, P, n, g):
    x = torch.empty(n, L, dtype=torch.long)
    x[:, 0] = torch.multinomial(P0.float(), n, replacement=True, generator=g)
    for i in range(1, L):
        x[:, i] = torch.multinomial(P[x[:, i - 1]].float(), 1, generator=g)[:, 0]
    return x


@pytest.mark.slow
def test_training_reaches_true_entropy():
    g = torch.Generator().manual_seed(0)
    P0 = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    P = torch.softmax(3 * torch.randn(V, V, generator=g, dtype=torch.float64), -1)
    H_tok = entropy(markov_joint(P0, P, L)) / L
    torch.manual_seed(0)
    model = TinyDenoiser()
    ema = EMA(model, decay=0.995)
    diff = MaskedDiffusion(V, "linear")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(1500):
        x = sample_chain(P0, P, 256, g)
        loss = diff.loss(model, x, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    test = sample_chain(P0, P, 4000, g)
    batches = [{"tokens": b} for b in test.split(1000)]
    with ema.average_parameters(model):
        rep = evaluate(diff, model, batches, num_t=16, generator=g)
    uniform = math.log(V)
    assert rep.nats_per_token < H_tok + 0.06, (rep.nats_per_token, H_tok)
    assert rep.nats_per_token > H_tok - 4 * rep.nats_stderr - 0.01  # an upper bound on the entropy
    assert H_tok < uniform - 0.3  # the toy is far from uniform, so this is a real test


def test_ema_closed_form_with_warmup():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9, warmup=True)
    expected = 0.0
    for n, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
    assert ema.shadow["weight"].item() == pytest.approx(expected)
    with ema.average_parameters(model):
        assert model.weight.item() == pytest.approx(expected)
    assert model.weight.item() == 5.0  # restored
    state = ema.state_dict()
    other = EMA(model, decay=0.5)
    other.load_state_dict(state)
    assert other.shadow["weight"].item() == pytest.approx(expected) and other.num_updates == 5


def test_diffusion_core_imports_nothing_else_from_dnadiff():
    core = Path(__file__).resolve().parents[1] / "dnadiff" / "diffusion"
    for path in core.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                assert not mod.startswith("dnadiff") or mod.startswith("dnadiff.diffusion"), (path, mod)
                assert node.level <= 1, (path, "relative import leaves the package")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("dnadiff") or alias.name.startswith("dnadiff.diffusion")
