"""Optional fused C++ selective scan for CPU tensors, compiled on first use.

``cpu_scan.cpp`` runs the core recurrence of :mod:`dnadiff.models.scan` (one sequential loop over
positions per batch row and channel, the state in a local array, rows spread over threads with
``at::parallel_for``) and its adjoint backward. It is built with ``torch.utils.cpp_extension.load``
(needs a C++ compiler and ninja) the first time a CPU scan asks for it; torch caches the build in
its extension directory (one per checkout and CPU kind) and guards it with a file lock; a lock
left by a killed compile is removed once it is older than any build takes. Any failure to build or load logs one
warning and leaves :func:`available` False, so callers fall back to the pure PyTorch scan.
``DNADIFF_CPU_KERNEL=0`` in the environment disables the extension.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_scan.cpp")
DTYPES = (torch.float32, torch.float64)
_state: dict = {}  # "module": the loaded extension or None after a failure


def disabled_by_env() -> bool:
    """True when ``DNADIFF_CPU_KERNEL`` is set to 0 / false / no / off."""
    return os.environ.get("DNADIFF_CPU_KERNEL", "1").strip().lower() in ("0", "false", "no", "off")


def extension():
    """The compiled extension module, building it on the first call; None when it cannot be had."""
    if disabled_by_env():
        return None
    if "module" not in _state:
        try:
            from torch.utils.cpp_extension import load

            name = f"dnadiff_cpu_scan_{_cpu_tag()}_{_source_tag()}"
            _remove_stale_lock(name)
            _state["module"] = load(name=name, sources=[str(SOURCE)],
                                    extra_cflags=["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"], extra_ldflags=["-fopenmp"],
                                    verbose=False)
        except Exception as error:  # no compiler, no ninja, compile or load error: use the pure scan
            log.warning("fused CPU selective scan unavailable, using the pure PyTorch scan (%s: %s)",
                        type(error).__name__, str(error).strip().splitlines()[-1] if str(error).strip() else "")
            _state["module"] = None
    return _state["module"]


def _cpu_tag() -> str:
    """Short hash of this CPU's model and instruction-set flags: the build uses -march=native, so a
    cache directory shared by machines with different CPUs must keep one build per kind of CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text = "".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        text = ""
    return hashlib.sha1(f"{platform.machine()}|{platform.processor()}|{text}".encode()).hexdigest()[:10]


def _source_tag() -> str:
    """Short hash of this checkout's kernel source (its path and contents): two checkouts never share
    a build directory, so they never rebuild each other's extension or wait on each other's lock."""
    digest = hashlib.sha1(str(SOURCE.resolve()).encode())
    digest.update(SOURCE.read_bytes())
    return digest.hexdigest()[:10]


STALE_LOCK_SECONDS = 900  # a build takes 1-2 minutes; a lock this old was left by a killed build


def _remove_stale_lock(name: str) -> None:
    """Remove the build lock a killed compile left behind (torch would wait on it forever)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            log.warning("removing a stale build lock left by an interrupted compile: %s", lock)
            lock.unlink(missing_ok=True)
    except (ImportError, OSError):
        pass


def available() -> bool:
    """True when the fused CPU kernel is enabled and builds (compiles it on the first call)."""
    return extension() is not None


def supports(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor) -> bool:
    """True when the fused kernel can take these tensors: CPU, float32 or float64, one dtype."""
    return (u.device.type == "cpu" and u.dtype in DTYPES and delta.dtype == u.dtype and A.dtype == u.dtype
            and available())


class _FusedScan(torch.autograd.Function):
    """y[b, d, l] = <C_l, h_l> (no skip, no gate; delta already positive), via the C++ kernels."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        ctx.save_for_backward(u, delta, A, B, C)
        return extension().forward(u, delta, A, B, C)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C = ctx.saved_tensors
        return tuple(extension().backward(u, delta, A, B, C, gy))


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Fused C++ selective scan, same arguments and result as ``scan.selective_scan_ref``.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D, delta_bias: [D]. Differentiable in all of
    them. Requires :func:`supports` (u, delta, A) to be True. Returns y: [B, D, L].
    """
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y = _FusedScan.apply(u, delta, A, B.to(u.dtype), C.to(u.dtype))
    if D is not None:
        y = y + u * D[:, None]
    return y if z is None else y * F.silu(z)
