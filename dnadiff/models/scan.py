"""Mamba's selective scan: a sequential reference, a chunked pure-PyTorch scan, and dispatch to mamba-ssm.

The recurrence (per batch b, channel d, state n; mamba-ssm's ``selective_scan_ref``)::

    delta = softplus(delta + delta_bias)          (when delta_softplus)
    h_l   = exp(delta_l * A) * h_{l-1} + delta_l * u_l * B_l
    y_l   = <C_l, h_l> + D * u_l,    out = y * silu(z)

Shapes everywhere: ``u, delta, z: [B, D, L]``, ``A: [D, N]``, ``B, C: [B, N, L]``, ``D, delta_bias: [D]``.

The pure path never loops in Python over positions. The length is cut into K chunks of T positions;
a loop over the T offsets runs all chunks at once (local scans from a zero state, with the running
product of decays), then a loop over the K chunks adds each chunk's incoming state times that
product. Only products of decays in (0, 1] appear, so no exponent can overflow, whatever the decay.
Gradients come from the adjoint recurrence (a reverse scan with the same decays), recomputing the
states instead of storing them, tile by tile over channels so the working set stays in cache.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dnadiff.errors import UserError

try:  # fused CUDA kernels, used only for CUDA tensors
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_scan
except ImportError:  # pragma: no cover - depends on the machine
    _mamba_scan = None

KERNELS = ("auto", "pure", "cuda")
TILE_ELEMENTS = 1 << 22  # [L, B, d_tile, N] elements processed at once by the pure scan


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Plain sequential recurrence (one step per position), for tests. Returns y: [B, D, L]."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[-1]):
        h = torch.exp(delta[:, :, i, None] * A) * h + (delta[:, :, i] * u[:, :, i])[..., None] * B[:, None, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
    y = torch.stack(ys, dim=-1)
    return _skip_and_gate(y, u, D, z)


def _skip_and_gate(y, u, D, z):
    if D is not None:
        y = y + u * D[:, None]
    return y if z is None else y * F.silu(z)


def _chunk_states(decay: torch.Tensor, state: torch.Tensor, chunk: int) -> torch.Tensor:
    """In place: turn inputs x_l into states h_l = decay_l * h_{l-1} + x_l (h_{-1} = 0) along dim 0.

    decay, state: [L, ...] with L a multiple of ``chunk``; ``decay`` is overwritten by the running
    products of decays inside each chunk. Returns ``state`` (now holding h).
    """
    K = state.shape[0] // chunk
    a = decay.view(K, chunk, *decay.shape[1:])
    h = state.view(K, chunk, *state.shape[1:])
    for t in range(1, chunk):  # local scans of every chunk at once
        h[:, t].addcmul_(a[:, t], h[:, t - 1])
        a[:, t].mul_(a[:, t - 1])
    for k in range(1, K):  # carry the last state of chunk k-1 into chunk k
        h[k].addcmul_(a[k], h[k - 1, -1].unsqueeze(0))
    return state


def _chunk_for(length: int) -> int:
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(length)))))


class _ChunkedScan(torch.autograd.Function):
    """y[b, d, l] = <C_l, h_l> for the recurrence above (no skip, no gate; delta already positive)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        ctx.save_for_backward(u, delta, A, B, C)
        y = u.new_empty(u.shape)
        for sl, (dl, ul, Bl, Cl, _) in _tiles(u, delta, A, B, C, None):
            a, h = _decays_and_inputs(dl, ul, A[sl], Bl)
            h = _chunk_states(a, h, _chunk_for(h.shape[0]))
            y[:, sl] = torch.einsum("lbdn,lbn->bdl", h, Cl)[..., : u.shape[-1]]
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C = ctx.saved_tensors
        gu, gdelta, gA = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A)
        gB, gC = torch.zeros_like(B.permute(2, 0, 1)), torch.zeros_like(C.permute(2, 0, 1))  # [L, B, N]
        L = u.shape[-1]
        for sl, (dl, ul, Bl, Cl, gl) in _tiles(u, delta, A, B, C, gy):
            chunk = _chunk_for(dl.shape[0])
            a, h = _decays_and_inputs(dl, ul, A[sl], Bl)
            h = _chunk_states(a, h, chunk)
            gC += torch.einsum("lbdn,lbd->lbn", h, gl)[:L]
            # adjoint: g_l = C_l gy_l + a_{l+1} g_{l+1}, a reverse scan with decays shifted by one
            a, x = _decays_and_inputs(dl, ul, A[sl], Bl)
            a_rev = torch.cat([torch.ones_like(a[:1]), a.flip(0)[:-1]])
            g = _chunk_states(a_rev, (gl.unsqueeze(-1) * Cl.unsqueeze(2)).flip(0), chunk).flip(0)
            g_du = torch.einsum("lbdn,lbn->lbd", g, Bl)  # d loss / d (delta * u)
            du = dl * ul
            gB += torch.einsum("lbdn,lbd->lbn", g, du)[:L]
            m = g.mul_(h.sub_(x))  # g_l * a_l * h_{l-1}: gradient through the decay a_l = exp(delta_l A)
            gdelta[:, sl] = (g_du * ul + torch.einsum("lbdn,dn->lbd", m, A[sl]))[:L].permute(1, 2, 0)
            gA[sl] = torch.einsum("lbdn,lbd->dn", m, dl)
            gu[:, sl] = (g_du * dl)[:L].permute(1, 2, 0)
        return gu, gdelta, gA, gB.permute(1, 2, 0), gC.permute(1, 2, 0)


def _tiles(u, delta, A, B, C, gy):
    """Yield (channel slice, time-major padded tensors) over channel tiles of the pure scan.

    Each item: dl, ul, gl [Lp, B, d_tile]; Bl, Cl [Lp, B, N] with Lp a multiple of the chunk length;
    padded positions have delta = 0 (decay 1, no input) and gy = 0, so they change nothing.
    """
    b, d, L = u.shape
    chunk = _chunk_for(L)
    pad = (-L) % chunk
    tm = lambda x: F.pad(x, (0, pad)).permute(2, 0, 1)  # noqa: E731  [B, *, L] -> [Lp, B, *]
    Bl, Cl = tm(B).contiguous(), tm(C).contiguous()
    step = max(1, TILE_ELEMENTS // max(1, (L + pad) * b * A.shape[1]))
    for start in range(0, d, step):
        sl = slice(start, min(d, start + step))
        gl = None if gy is None else tm(gy[:, sl]).contiguous()
        yield sl, (tm(delta[:, sl]).contiguous(), tm(u[:, sl]).contiguous(), Bl, Cl, gl)


def _decays_and_inputs(dl, ul, A, Bl):
    """a = exp(delta * A) and x = delta * u * B, both [Lp, B, d, N] (fresh, contiguous)."""
    a = torch.exp(dl.unsqueeze(-1) * A)
    x = (dl * ul).unsqueeze(-1) * Bl.unsqueeze(2)
    return a, x


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Chunked pure-PyTorch selective scan (same arguments and result as :func:`selective_scan_ref`).

    Differentiable in u, delta, A, B, C, D, z and delta_bias. Returns y: [B, D, L].
    """
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y = _ChunkedScan.apply(u, delta, A, B.to(u.dtype), C.to(u.dtype))
    return _skip_and_gate(y, u, D, z)


def check_kernels(kernels: str) -> str:
    """Validate a ``kernels`` setting ("auto", "pure" or "cuda"); returns it."""
    if kernels not in KERNELS:
        raise UserError(f"unknown kernels setting {kernels!r}: use one of {', '.join(KERNELS)}")
    if kernels == "cuda" and (_mamba_scan is None or not torch.cuda.is_available()):
        raise UserError("kernels='cuda' needs mamba-ssm and a CUDA GPU: install `pip install mamba-ssm` "
                        "on a CUDA machine or use kernels='auto'")
    return kernels


def use_cuda_kernels(x: torch.Tensor, kernels: str) -> bool:
    """True when mamba-ssm's fused kernels should run for tensor ``x`` under setting ``kernels``."""
    return kernels != "pure" and _mamba_scan is not None and x.is_cuda


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, kernels="auto"):
    """Selective scan through mamba-ssm's fused kernel on CUDA when available, else the chunked scan.

    Same arguments as :func:`selective_scan_ref`; ``kernels`` in {"auto", "pure", "cuda"}. Returns [B, D, L].
    """
    if use_cuda_kernels(u, kernels):
        return _mamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
