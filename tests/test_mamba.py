"""Mamba block (mamba-ssm names and semantics) and BiMamba (tied projections, both directions)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnadiff.ops import scan
from dnadiff.models.bimamba import BiMamba
from dnadiff.models.mamba import Mamba
from dnadiff.ops.scan import selective_scan_ref

# mamba_ssm.modules.mamba_simple.Mamba(d_model=32) state dict: names and shapes
MAMBA_SSM_SHAPES = {
    "A_log": (64, 16), "D": (64,), "in_proj.weight": (128, 32), "conv1d.weight": (64, 1, 4),
    "conv1d.bias": (64,), "x_proj.weight": (34, 64), "dt_proj.weight": (64, 2), "dt_proj.bias": (64,),
    "out_proj.weight": (32, 64),
}


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter away from its initial value so that a wrong formula shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def mamba_by_hand(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """Mamba v1 forward written step by step from mamba_simple.py's slow path (explicit causal conv)."""
    B, L, _ = x.shape
    xz = x @ m.in_proj.weight.t()
    xs, z = xz[..., : m.d_inner], xz[..., m.d_inner:]
    w = m.conv1d.weight[:, 0]  # [d_inner, d_conv]
    conv = torch.stack([m.conv1d.bias + sum(w[:, m.d_conv - 1 - j] * xs[:, i - j] for j in range(m.d_conv) if i - j >= 0)
                        for i in range(L)], dim=1)
    u = F.silu(conv)  # [B, L, d_inner]
    dbl = u @ m.x_proj.weight.t()
    dt, Bm, Cm = dbl[..., : m.dt_rank], dbl[..., m.dt_rank: m.dt_rank + m.d_state], dbl[..., m.dt_rank + m.d_state:]
    delta = dt @ m.dt_proj.weight.t()
    y = selective_scan_ref(u.transpose(1, 2), delta.transpose(1, 2), -torch.exp(m.A_log), Bm.transpose(1, 2),
                           Cm.transpose(1, 2), m.D, z=z.transpose(1, 2), delta_bias=m.dt_proj.bias,
                           delta_softplus=True)
    return y.transpose(1, 2) @ m.out_proj.weight.t()


def test_parameter_names_and_shapes_match_mamba_ssm():
    shapes = {k: tuple(v.shape) for k, v in Mamba(32).state_dict().items()}
    assert shapes == MAMBA_SSM_SHAPES


def test_initialisation_follows_mamba_ssm():
    m = Mamba(32, dt_min=0.001, dt_max=0.1)
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 - 1e-6 and dt.max() <= 0.1 + 1e-6
    assert torch.allclose(-torch.exp(m.A_log), -torch.arange(1, 17.0).expand(64, 16))
    assert torch.equal(m.D, torch.ones(64))
    assert m.dt_proj.weight.abs().max() <= 2 ** -0.5


def test_forward_equals_hand_written_mamba():
    torch.manual_seed(1)
    m = randomize(Mamba(16, d_state=8, d_conv=3)).double()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    assert (m(x) - mamba_by_hand(m, x)).abs().max() < 1e-10


def test_mamba_is_causal():
    m = randomize(Mamba(16)).double()
    x = torch.randn(1, 30, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20] += 1.0
    d = (m(x2) - m(x)).abs().amax(-1)[0]
    assert d[:20].max() == 0 and d[20:].min() > 0


def test_bimamba_ties_projections_and_adds_the_flipped_pass():
    bi = randomize(BiMamba(16, d_state=4)).double()
    assert bi.mamba_rev.in_proj.weight is bi.mamba_fwd.in_proj.weight
    assert bi.mamba_rev.out_proj.weight is bi.mamba_fwd.out_proj.weight
    assert "mamba_rev.in_proj.weight" in bi.state_dict()
    n_params = sum(p.numel() for p in bi.parameters())
    per_direction = sum(p.numel() for n, p in bi.mamba_rev.named_parameters()
                        if n not in ("in_proj.weight", "out_proj.weight"))
    assert n_params == sum(p.numel() for p in bi.mamba_fwd.parameters()) + per_direction
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    expected = bi.mamba_fwd(x) + bi.mamba_rev(x.flip(1)).flip(1)
    assert (bi(x) - expected).abs().max() < 1e-12


def test_bimamba_output_at_each_position_sees_every_position():
    bi = randomize(BiMamba(16, d_state=4)).double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    base = bi(x)
    for j in range(12):
        x2 = x.clone()
        x2[:, j] += 1.0
        changed = (bi(x2) - base).abs().amax(-1)[0]
        assert (changed > 1e-9).all(), f"changing position {j} left some outputs unchanged"


def test_gradients_reach_every_parameter():
    bi = BiMamba(16)
    bi(torch.randn(2, 10, 16)).square().sum().backward()
    for name, p in bi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.gpu
@pytest.mark.skipif(scan._mamba_scan is None or not torch.cuda.is_available(),
                    reason="mamba-ssm parity needs mamba_ssm and a CUDA GPU (absent here)")
def test_state_dict_moves_to_mamba_ssm_and_outputs_agree():
    from mamba_ssm.modules.mamba_simple import Mamba as MambaSSM

    ours = randomize(Mamba(64, kernels="pure")).cuda()
    theirs = MambaSSM(64).cuda()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 257, 64, device="cuda")
    assert (ours(x) - theirs(x)).abs().max() < 1e-3
    fused = Mamba(64, kernels="cuda").cuda()
    fused.load_state_dict(ours.state_dict())
    assert (fused(x) - ours(x)).abs().max() < 1e-3
