"""Start pretraining from a trained model: ``dnadiff pretrain --init SOURCE``.

With an original Caduceus MLM (folder or hub id) this is MDLM's generative fine-tuning: the checkpoint is
converted into dnadiff's DNA vocabulary by :func:`dnadiff.checkpoints.sources.load_payload` (A/C/G/T, N and PAD rows
re-indexed; the MLM's ``[MASK]`` row becomes the diffusion's mask embedding, so a model that never saw time
starts from its own mask), the architecture comes from the checkpoint, and training continues with the
diffusion loss. Any other source (a dnadiff ``model.pt`` or ``.ckpt``) continues the same way.

Options that are not architecture (time or label conditioning, kernels, conjoining, RC augmentation) come
from the config; conditioning the source lacks starts at zero, so the first step computes the source's function.
"""
from __future__ import annotations

import dataclasses

import torch

from dnadiff.errors import UserError
from dnadiff.migrations import MODEL_KEYS
from dnadiff.models.config import model_config

#: model-spec keys that the config decides; every other key (the architecture) comes from the source
OPTION_KEYS = ("time_conditioning", "num_classes", "kernels", "conjoin", "rc_aug")
_NEW_CONDITIONING = ("time_embed.", "label_embed.")


def init_model_spec(config_model: dict, payload) -> dict:
    """The model spec to train: the source's architecture with the config's options (time conditioning
    the source already has is kept)."""

    source = model_config(payload.model)
    spec = source.to_spec()
    defaults = {f.name: f.default for f in dataclasses.fields(source) if f.default is not dataclasses.MISSING}
    config_model = {MODEL_KEYS.get(k, k): v for k, v in config_model.items()}
    for key in OPTION_KEYS:
        if key not in defaults:  # not an option of this model (e.g. kernels of the transformer)
            continue
        if key != "time_conditioning" or not spec.get(key):
            spec[key] = config_model.get(key, defaults[key])
    return spec


def check_modality(payload, data_info, source: str) -> None:
    """UserError when the source (a ModelFile) models another modality than the data (a DataInfo)."""
    theirs, ours = payload.data.modality, data_info.modality
    if theirs != ours:
        raise UserError(f"--init {source} models {theirs}, but the data is {ours}: "
                        f"start from a {ours} model or drop --init")


@torch.no_grad()
def apply_init(module, payload, source: str) -> None:
    """Copy the source's weights into ``module.model`` (new time/label embeddings start at zero output) and
    restart the EMA from them. UserError when the weights do not fit."""
    from dnadiff.diffusion import EMA

    model = module.model
    try:
        missing, unexpected = model.load_state_dict(payload.state_dict, strict=False)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"--init {source} does not fit the model to train ({(lines[1:] or lines or [''])[0][:160]}): "
                        "drop model.* overrides that change the architecture") from None
    unfit = [k for k in missing if not k.startswith(_NEW_CONDITIONING)] + list(unexpected)
    if unfit:
        raise UserError(f"--init {source} does not fit the model to train ({', '.join(unfit[:3])}): the source is "
                        "class- or time-conditioned differently; match the config to it or drop --init")
    time_embed = getattr(model, "time_embed", None)
    if time_embed is not None and any(k.startswith("time_embed.") for k in missing):
        last = time_embed[-1]
        last.weight.zero_()
        last.bias.zero_()
    label_embed = getattr(model, "label_embed", None)
    if label_embed is not None and "label_embed.weight" in missing:
        label_embed.weight.zero_()
    if module.ema is not None:
        module.ema = EMA(model, module.ema.decay, module.ema.warmup)


def describe(payload, source: str) -> str:
    """One line: where the weights come from (a ModelFile) and the architecture taken from them."""
    spec = payload.model
    arch = ", ".join(f"{k} {spec[k]}" for k in ("variant", "d_model", "n_layer") if k in spec)
    kind = "original Caduceus MLM ([MASK] row -> diffusion mask)" if payload.original else "dnadiff model"
    return f"init from {source}: {kind}, {spec.get('name')} {arch}"
