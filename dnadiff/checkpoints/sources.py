"""One model loader for every command: a dnadiff ``model.pt``, a pretraining Lightning ``.ckpt``, an original
Caduceus folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), or a Hugging Face hub id.

    from dnadiff.checkpoints.sources import load_model
    model, process, payload = load_model("kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16")

Hub ids resolve through ``huggingface_hub``'s own cache resolution (``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE`` as it reads them), offline unless ``download=True``. Weights are read without pickle
(``safetensors``) or with ``torch.load(weights_only=True)``. This module imports no Lightning.

Every source becomes a :class:`~dnadiff.checkpoints.format.ModelFile` (``dnadiff-model/1``). An original
checkpoint is converted into dnadiff's DNA vocabulary (:func:`dnadiff.checkpoints.huggingface.denoiser_from_original`)
with MDLM's log-linear masked diffusion, and its original config and full embedding are kept under
``payload.original`` so that ``dnadiff export`` can write every original row back.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from dnadiff.config import DNA_KEYS, DataConfig
from dnadiff.data.info import DataInfo
from dnadiff.errors import UserError
from dnadiff.checkpoints.format import (MODEL_FORMAT, ModelFile, build_process, load_checkpoint,
                                        model_payload_from_lightning)
from dnadiff.checkpoints.huggingface import check_config, denoiser_from_original, load_original_caduceus, read_dnadiff_settings

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
#: sharded checkpoints: an index ({"weight_map": {tensor name: shard file}}) beside the shards
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SHARD_PATTERNS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")
#: data settings of a converted original checkpoint (its training window is not in its config)
ORIGINAL_DATA = DataInfo.from_dict({k: v for k, v in DataConfig().to_dict().items() if k in DNA_KEYS})
ORIGINAL_DIFFUSION = {"vocab_size": 4, "schedule": "loglinear"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")


def is_hub_id(source: str) -> bool:
    """True for ``owner/name`` or ``owner/name@revision`` that is not an existing local path."""
    return bool(_HUB_ID.match(str(source))) and not Path(source).exists() and not str(source).endswith((".pt", ".ckpt"))


def hub_snapshot(repo_id: str, revision: str | None = None, download: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The local snapshot folder of a hub model repo, from ``huggingface_hub``'s cache.

    Offline (``local_files_only``) unless ``download``; then only config.json and the weights are fetched.
    ``cache_dir`` defaults to huggingface_hub's (``HF_HUB_CACHE``, else ``HF_HOME/hub``).
    Raises UserError (one line) when the id is not cached, or downloading is off or fails.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    name = f"{repo_id}@{revision}" if revision else repo_id
    if download and constants.HF_HUB_OFFLINE:
        raise UserError(f"cannot download {name}: HF_HUB_OFFLINE is set; unset it or put the model in {cache}")
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=not download,
                                   allow_patterns=["config.json", *WEIGHT_FILES, *INDEX_FILES, *SHARD_PATTERNS])
    except LocalEntryNotFoundError as err:
        if download:  # the hub could not be reached (no network, proxy, DNS) and the cache lacks the files
            cause = err.__cause__ or err.__context__ or err
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:160]
            raise UserError(f"could not download {name}: the Hugging Face hub could not be reached ({first}); "
                            f"check the network (or HF_ENDPOINT / proxy settings), or put the model in {cache}") from None
        raise UserError(f"{name} is no local path and not in the Hugging Face cache {cache}: add --download to "
                        "fetch it from the hub, set HF_HOME / HF_HUB_CACHE to the cache that holds it, or fix the "
                        "path") from None
    except Exception as err:  # network, authentication, unknown repo: huggingface_hub's own errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"could not download {name} ({first}): check the id, the network and your token") from None
    return Path(folder)


def resolve(source: str | os.PathLike, download: bool = False, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local path for ``source``: the path itself, or a hub id's snapshot folder (see :func:`hub_snapshot`)."""
    path = Path(source)
    if path.exists():
        return path
    if is_hub_id(str(source)):
        repo_id, _, revision = str(source).partition("@")
        return hub_snapshot(repo_id, revision or None, download, cache_dir)
    raise UserError(f"checkpoint {source} does not exist: give a model.pt, a .ckpt, a folder with config.json and "
                    "model.safetensors (or pytorch_model.bin), or a hub id such as owner/name")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of ``model.safetensors`` (no pickle) or ``pytorch_model.bin`` (``weights_only=True``), or of
    every shard an index file (``*.index.json``, see :func:`read_sharded`) names."""
    if path.name.endswith(".index.json"):
        return read_sharded(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise UserError(f"{path} is not a readable safetensors file ({first}): re-download or re-export it") from None
    state = load_checkpoint(path)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors: give the pytorch_model.bin saved with the model")
    return state


def read_sharded(index: Path) -> dict[str, torch.Tensor]:
    """The tensors of a sharded checkpoint: ``index`` (``model.safetensors.index.json`` or
    ``pytorch_model.bin.index.json``, ``{"metadata": ..., "weight_map": {name: shard file}}``, as
    ``save_pretrained(max_shard_size=...)`` writes it) and the shards beside it.

    UserError (one line) for an index that is not JSON or has no weight_map of names to plain file names in
    its folder, a missing shard, or a shard lacking a tensor the index assigns to it."""
    try:
        meta = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{index} is not readable JSON ({str(err)[:120]}): re-download the checkpoint") from None
    weight_map = meta.get("weight_map") if isinstance(meta, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())):
        raise UserError(f"{index} has no weight_map of tensor names to shard files: re-download the checkpoint")
    shards = list(dict.fromkeys(weight_map.values()))
    suffix = ".safetensors" if index.name.startswith("model.safetensors") else ".bin"
    for shard in shards:
        if Path(shard).name != shard or shard in (".", "..") or not shard.endswith(suffix):
            raise UserError(f"{index} names the shard {shard!r}, not a {suffix} file beside it: re-download the "
                            "checkpoint")
        if not (index.parent / shard).is_file():
            raise UserError(f"shard {shard} of {index} is missing: download every file the index names "
                            "(e.g. `huggingface-cli download OWNER/NAME`)")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors = read_weights(index.parent / shard)
        wanted = [k for k, v in weight_map.items() if v == shard]
        lacking = [k for k in wanted if k not in tensors]
        if lacking:
            raise UserError(f"shard {shard} lacks {lacking[0]}, which {index.name} assigns to it: re-download the "
                            "checkpoint")
        state.update({k: tensors[k] for k in wanted})
    return state


def read_original(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state dict) of an original Caduceus folder: ``config.json`` + ``model.safetensors`` (preferred),
    ``pytorch_model.bin`` or a sharded checkpoint (``*.index.json`` + shards). The config is checked field by
    field (:func:`dnadiff.checkpoints.huggingface.check_config`) before any weight is read. UserError naming what is
    missing or unreadable."""
    folder = Path(folder)
    config_path = folder / "config.json"
    weights = [folder / name for name in WEIGHT_FILES + INDEX_FILES if (folder / name).is_file()]
    missing = ([] if config_path.is_file() else ["config.json"]) + ([] if weights else [" or ".join(WEIGHT_FILES)])
    if missing:
        raise UserError(f"{folder} is not a Caduceus checkpoint folder: {' and '.join(missing)} missing "
                        "(a dnadiff run folder holds model.pt: point to it)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{config_path} is not valid JSON ({err}): re-download or re-export the checkpoint") from None

    return check_config(config, str(config_path)), read_weights(weights[0])


def original_payload(config: dict, state: dict[str, torch.Tensor], source: str = "") -> ModelFile:
    """An original Caduceus checkpoint as a :class:`ModelFile` over dnadiff's DNA vocabulary.

    ``payload.original = {"config", "embedding" [V_orig, d], "source"}`` keeps what the conversion drops. A
    folder written by ``dnadiff export`` gets back its data settings (window ...), diffusion process (eps ...) and
    inference settings from the config's ``"dnadiff"`` entry.
    """

    data, diffusion, model = ORIGINAL_DATA, ORIGINAL_DIFFUSION, {}
    settings = read_dnadiff_settings(config, f"{source or 'the'} config.json")  # a `dnadiff export`: its own settings
    if settings is not None:
        data = DataInfo.from_dict({**ORIGINAL_DATA.to_dict(), **settings[0]}, f"{source or 'the'} config.json")
        diffusion, model = {**ORIGINAL_DIFFUSION, **settings[1]}, settings[2]
        build_process(diffusion)  # checked before anything is built
    denoiser = denoiser_from_original(config, state, **model)
    full = load_original_caduceus(config, state).backbone.embedding.weight.detach().clone()
    return ModelFile(denoiser.config.to_spec(), diffusion, denoiser.state_dict(), data,
                     original={"config": config, "embedding": full, "source": str(source)})


def load_payload(source: str | os.PathLike, download: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> ModelFile:
    """The :class:`ModelFile` of any source (model.pt, Lightning .ckpt, original folder, hub id)."""
    path = resolve(source, download, cache_dir)
    if path.is_dir():
        if (path / "model.pt").is_file() and not (path / "config.json").is_file():
            path = path / "model.pt"  # a dnadiff run folder
        else:
            config, state = read_original(path)
            return original_payload(config, state, str(source))
    payload = load_checkpoint(path)
    if payload.get("format") == MODEL_FORMAT:
        return ModelFile.from_dict(payload, str(path))
    if "state_dict" in payload and "hyper_parameters" in payload:
        return model_payload_from_lightning(payload, str(path))
    raise UserError(f"{path} is not a dnadiff model checkpoint (no 'format: {MODEL_FORMAT}'): use the model.pt "
                    "written by `dnadiff pretrain`, its .ckpt, or an original Caduceus folder")


def model_from_payload(payload: ModelFile, where: str = "the checkpoint") -> torch.nn.Module:
    """The eval-mode denoiser of a :class:`ModelFile` (UserError if the weights do not fit the spec)."""
    from dnadiff.models import build_model

    model = build_model(payload.model)
    try:
        model.load_state_dict(payload.state_dict)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:160]
        raise UserError(f"weights do not fit the model described in {where} ({detail}): the file is damaged or "
                        "from another version") from None
    return model.eval()


def load_model(source: str | os.PathLike, map_location: str | torch.device = "cpu", download: bool = False,
               cache_dir: str | os.PathLike | None = None):
    """Load any model source into an eval-mode denoiser.

    Returns:
        (denoiser nn.Module on ``map_location``, diffusion process (MaskedDiffusion or GenMD4), :class:`ModelFile`).
    """
    return model_and_process(load_payload(source, download, cache_dir), str(source), map_location)


def model_and_process(payload: ModelFile, where: str = "the checkpoint", map_location: str | torch.device = "cpu"):
    """(eval-mode denoiser on ``map_location``, diffusion process, :class:`ModelFile`) of a model file."""
    model = model_from_payload(payload, where).to(map_location)
    process = build_process(payload.diffusion)
    if payload.process_state and isinstance(process, torch.nn.Module):
        process.load_state_dict(payload.process_state)
    return model, process, payload
