"""Mamba (v1) block in pure PyTorch, with mamba-ssm's parameter names and shapes.

A state dict moves unchanged between this module and ``mamba_ssm.modules.mamba_simple.Mamba``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``; no in/out biases).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dnadiff.ops.cpu_scan import causal_conv_silu_cl, selective_scan_cpu_cl
from dnadiff.ops import scan as ops
from dnadiff.ops.scan import check_kernels, scan_backend, selective_scan


class Mamba(nn.Module):
    """Selective state-space mixer: [B, L, d_model] -> [B, L, d_model]."""

    #: excluded from weight decay (see dnadiff.training.optim); also marked on the parameters, as mamba-ssm does
    no_weight_decay_params = ("A_log", "D")

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, kernels: str = "auto"):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.kernels = check_kernels(kernels)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # dt_proj: weights uniform in +-dt_rank^-0.5, bias = softplus^-1 of a log-uniform step in [dt_min, dt_max]
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # A = -exp(A_log): [d_inner, d_state]
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [B, L, d_model] -> [B, L, d_model]."""
        return self.out_proj(self.ssm(self.in_proj(hidden)))

    def ssm(self, xz: torch.Tensor) -> torch.Tensor:
        """Everything between the projections, channel-last: xz [B, L, 2 * d_inner] -> gated y [B, L, d_inner].

        On CPU the fused C++ scan takes the projections' outputs as they are (views, no layout copies);
        elsewhere the scan runs in mamba-ssm's [B, D, L] layout.
        """
        x, z = xz.chunk(2, dim=-1)  # [B, L, d_inner] views
        A = -torch.exp(_fp32_or_wider(self.A_log))
        D, bias = _fp32_or_wider(self.D), _fp32_or_wider(self.dt_proj.bias)
        backend = scan_backend(x, self.kernels, A)  # decided once per forward (delta will have x's dtype)
        if backend == "cpp":  # fused C++ conv and scan, all channel-last
            u = causal_conv_silu_cl(x, self.conv1d.weight[:, 0], self.conv1d.bias)
            dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
            delta = dt @ self.dt_proj.weight.t()  # [B, L, d_inner]; the bias goes in as delta_bias
            return selective_scan_cpu_cl(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
        u = self.conv(x.transpose(1, 2), backend)  # [B, d_inner, L]
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = dt @ self.dt_proj.weight.t()
        y = selective_scan(u, delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
                           z=z.transpose(1, 2), delta_bias=bias, delta_softplus=True, kernels=self.kernels,
                           backend=backend)
        return y.transpose(1, 2)

    def conv(self, x: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """Causal depthwise convolution then SiLU: [B, d_inner, L] -> [B, d_inner, L]; causal-conv1d's fused
        kernel next to mamba-ssm's scan (``backend`` as :func:`scan_backend` decided)."""
        if ops.causal_conv1d_fn is not None and (backend or scan_backend(x, self.kernels)) == "mamba-ssm":
            return ops.causal_conv1d_fn(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        return F.silu(self.conv1d(x)[..., : x.shape[-1]])


def _fp32_or_wider(p: torch.Tensor) -> torch.Tensor:
    """SSM parameters in float32 (as mamba-ssm does under half precision), float64 kept as is."""
    return p if p.dtype == torch.float64 else p.float()
