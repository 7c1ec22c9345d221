"""Build a Hugging Face hub cache folder exactly as ``huggingface_hub`` lays it out, for offline tests:

    <cache>/models--<owner>--<name>/blobs/<hash>                  file contents
    <cache>/models--<owner>--<name>/snapshots/<commit>/<file>     relative symlinks to ../../blobs/<hash>
    <cache>/models--<owner>--<name>/refs/main                     the commit hash (no newline)
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def add_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> Path:
    """Put ``files`` (name -> bytes) into ``cache`` as revision ``commit`` of ``repo_id``; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(repr(sorted(files)).encode() + repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().clone().contiguous() for k, v in state.items()}, metadata={"format": "pt"})


def bin_bytes(state: dict[str, torch.Tensor], tmp: Path) -> bytes:
    path = tmp / "pytorch_model.bin.tmp"
    torch.save(state, path)
    data = path.read_bytes()
    path.unlink()
    return data


def original_files(config: dict, state: dict[str, torch.Tensor], weights: str, tmp: Path) -> dict[str, bytes]:
    """config.json + model.safetensors (weights="safetensors") or pytorch_model.bin (weights="bin")."""
    files = {"config.json": json.dumps(config, indent=2).encode()}
    if weights == "safetensors":
        files["model.safetensors"] = safetensors_bytes(state)
    else:
        files["pytorch_model.bin"] = bin_bytes(state, tmp)
    return files


def reference(shared_fixtures: Path, variant: str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """The reference fixture of one original Caduceus variant ("ph" or "ps"): its config.json, its
    state dict and the expected outputs the original code computed."""
    folder = shared_fixtures / "caduceus_reference"
    config = json.loads((folder / f"caduceus_{variant}.config.json").read_text())
    state = torch.load(folder / f"caduceus_{variant}.state_dict.pt", weights_only=True)
    expected = torch.load(folder / f"caduceus_{variant}.expected.pt", weights_only=True)
    return config, state, expected
