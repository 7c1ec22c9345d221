"""`dnadiff export`: write a model in the original Caduceus Hugging Face format.

    dnadiff export --checkpoint OUT/model.pt --format hf --out DIR [--code-repo OWNER/NAME]

DIR gets ``config.json`` + ``model.safetensors`` with ``CaduceusForMaskedLM``'s key names, the LM head tied
to the embedding and the complement map (see :func:`dnadiff.models.original.original_from_denoiser`).
With ``--code-repo`` (or when the source is a hub id) the config's ``auto_map`` points at that repo's
remote code, so ``AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)`` loads it.
DIR is written atomically (a temporary folder renamed into place) and never overwritten.
"""
from __future__ import annotations

import os
from pathlib import Path

from dnadiff.errors import UserError

#: the remote-code classes of the released Caduceus repos
AUTO_MAP = {"AutoConfig": "configuration_caduceus.CaduceusConfig", "AutoModel": "modeling_caduceus.Caduceus",
            "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM",
            "AutoModelForSequenceClassification": "modeling_caduceus.CaduceusForSequenceClassification"}


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, a pretraining .ckpt, an original Caduceus folder or a Hugging Face hub id")
    p.add_argument("--format", default="hf", choices=("hf",), help="hf: config.json + model.safetensors (Caduceus)")
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--code-repo", help="hub repo with the Caduceus remote code for config.auto_map, e.g. "
                                       "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16")
    p.add_argument("--download", action="store_true", help="fetch a hub id missing from the Hugging Face cache")


def check_out(out: Path) -> Path:
    """UserError when ``out`` exists (other than as an empty folder) or its parent folder is missing."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty: choose a new --out or remove it first")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} does not exist: create it or choose another --out")
    return out


def export_hf(source: str | os.PathLike, out: str | os.PathLike, code_repo: str | None = None,
              download: bool = False) -> tuple[Path, dict]:
    """Export any model source to ``out`` in the original format; returns (out, the config written)."""
    from dnadiff.loading import is_hub_id, load_payload, model_from_payload
    from dnadiff.models.original import SETTINGS_KEY, dnadiff_settings, original_from_denoiser, write_hf_folder

    out = check_out(Path(out))
    payload = load_payload(source, download=download)
    original = payload.get("original") or {}
    config, state = original_from_denoiser(model_from_payload(payload, str(source)), original.get("config"),
                                           original.get("embedding"))
    code_repo = code_repo or next((s for s in (original.get("source"), str(source)) if s and is_hub_id(s)), None)
    if code_repo:
        refs = config.get("auto_map") or AUTO_MAP
        config["auto_map"] = {k: f"{code_repo}--{str(v).split('--')[-1]}" for k, v in refs.items()}
    elif any("--" not in str(v) for v in (config.get("auto_map") or {}).values()):
        config.pop("auto_map")  # refers to code files this folder does not hold
    config[SETTINGS_KEY] = dnadiff_settings(payload)  # window, eps, ...: read back by dnadiff, ignored by the original code
    write_hf_folder(out, config, state)  # issue 27: tied tensors once, umask permissions, disk errors in one line
    return out, config


def run(args) -> int:
    from dnadiff.loading import is_hub_id

    if args.code_repo and not is_hub_id(args.code_repo):
        raise UserError(f"--code-repo {args.code_repo!r} is not a hub repo id: write it as owner/name")
    out, config = export_hf(args.checkpoint, args.out, args.code_repo, args.download)
    load = ("load with AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)" if "auto_map" in config
            else "add --code-repo OWNER/NAME for transformers' AutoModelForMaskedLM")
    print(f"exported Caduceus-{'PS' if config['rcps'] else 'Ph'} d_model {config['d_model']} n_layer "
          f"{config['n_layer']} -> {out} (config.json, model.safetensors); {load}")
    return 0
