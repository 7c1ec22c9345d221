"""Export any model source in the original Caduceus Hugging Face format: :func:`export` (``dnadiff export``).

``out`` gets ``config.json`` + ``model.safetensors`` with ``CaduceusForMaskedLM``'s key names, the LM head tied
to the embedding and the complement map (see :func:`dnadiff.checkpoints.huggingface.original_from_denoiser`).
With ``code_repo`` (or when the source is a hub id) the config's ``auto_map`` points at that repo's
remote code, so ``AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=True)`` loads it.
``out`` is written atomically (a temporary folder renamed into place) and never overwritten.
"""
from __future__ import annotations

import os
from pathlib import Path

from dnadiff.errors import ParameterError
from dnadiff.checkpoints.sources import is_hub_id, load_payload, model_from_payload
from dnadiff.checkpoints.huggingface import SETTINGS_KEY, dnadiff_settings, original_from_denoiser, write_hf_folder

#: the remote-code classes of the released Caduceus repos
AUTO_MAP = {"AutoConfig": "configuration_caduceus.CaduceusConfig", "AutoModel": "modeling_caduceus.Caduceus",
            "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM",
            "AutoModelForSequenceClassification": "modeling_caduceus.CaduceusForSequenceClassification"}


def check_out(out: Path) -> Path:
    """ParameterError when ``out`` exists (other than as an empty folder) or its parent folder is missing."""
    if out.is_symlink():
        target = os.readlink(out)
        raise ParameterError("out", f"out={out} is a symbolic link (to {target}{'' if out.exists() else ', which does not exist'}): "
                                    "give the folder's own path, or remove the link")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ParameterError("out", f"out={out} already exists and is not empty: choose a new folder or remove it first")
    if not out.parent.is_dir():
        raise ParameterError("out", f"out={out}: its folder {out.parent} does not exist: create it or choose another")
    return out


def export(source: str | os.PathLike, out: str | os.PathLike, format: str = "hf", code_repo: str | None = None,
           download: bool = False) -> tuple[Path, dict]:
    """Export any model source (model.pt, .ckpt, original folder, hub id) to the folder ``out`` in the original
    Caduceus format (``format="hf"``); returns (out, the config.json written). UserError before anything is
    written when ``out`` exists (other than empty) or ``code_repo`` is not ``owner/name``."""

    if format != "hf":
        raise ParameterError("format", f"format={format!r} is not an export format: use hf")
    if code_repo and not is_hub_id(code_repo):
        raise ParameterError("code_repo", f"code_repo={code_repo!r} is not a hub repo id: write it as owner/name")
    out = check_out(Path(out))
    payload = load_payload(source, download=download)
    original = payload.original or {}
    config, state = original_from_denoiser(model_from_payload(payload, str(source)), original.get("config"),
                                           original.get("embedding"))
    code_repo = code_repo or next((s for s in (original.get("source"), str(source)) if s and is_hub_id(s)), None)
    if code_repo:
        refs = config.get("auto_map") or AUTO_MAP
        config["auto_map"] = {k: f"{code_repo}--{str(v).split('--')[-1]}" for k, v in refs.items()}
    elif any("--" not in str(v) for v in (config.get("auto_map") or {}).values()):
        config.pop("auto_map")  # refers to code files this folder does not hold
    config[SETTINGS_KEY] = dnadiff_settings(payload)  # window, eps, ...: read back by dnadiff, ignored by the original code
    write_hf_folder(out, config, state)  # tied tensors stored once, the umask's permissions, disk errors in one line
    return out, config
