"""Kernels, apart from the modules that use them (mamba-ssm's ``ops/`` vs ``modules/``).

- :mod:`.scan`: the selective scan's sequential reference, the chunked pure-PyTorch scan, the optional CUDA
  kernels (mamba-ssm, causal-conv1d) resolved once at import, and the one dispatch, :func:`.scan.scan_backend`.
- :mod:`.cpu_scan` (+ ``cpu_scan.cpp``): the fused C++ conv + scan in channel-last layout, built on first use.
- :mod:`.triton_scan` (+ ``triton_scan_kernels``): the Triton scan, forward and backward.

Imports nothing of dnadiff but :mod:`dnadiff.errors`; ``dnadiff/models/`` stands above it.
"""
