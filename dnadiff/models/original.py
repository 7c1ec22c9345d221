"""Checkpoints of the original Caduceus (Hugging Face ``CaduceusForMaskedLM``): load, save back, convert.

Original key names differ from dnadiff's only by prefixes::

    caduceus.backbone.embeddings.word_embeddings[.embedding].weight  <->  embedding.weight
    caduceus.backbone.layers.{i}.mixer[.submodule].mamba_{fwd,rev}.*  <->  layers.{i}.mixer.mamba_{fwd,rev}.*
    caduceus.backbone.layers.{i}.norm.weight, caduceus.backbone.norm_f.weight  <->  same without prefix
    lm_head.weight / lm_head.lm_head.weight (tied to the embedding), complement_map buffers (PS)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from dnadiff.data.tokenizer import CADUCEUS_IDS, EMBED_SIZE
from dnadiff.errors import UserError
from dnadiff.models.caduceus import CaduceusBackbone, CaduceusDenoiser

PREFIX = "caduceus.backbone."


class OriginalCaduceusMLM(nn.Module):
    """dnadiff's backbone in the original vocabulary: ids [B, L] -> MLM logits [B, L, padded_vocab]."""

    def __init__(self, backbone: CaduceusBackbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.logits(self.backbone(input_ids)).float()


def _padded_vocab(config: dict) -> int:
    multiple = config.get("pad_vocab_size_multiple", 8)
    return -(-config["vocab_size"] // multiple) * multiple


def _complement_map(config: dict) -> list[int]:
    cmap = {int(k): int(v) for k, v in (config.get("complement_map") or {}).items()}
    return [cmap.get(i, i) for i in range(_padded_vocab(config))]


def backbone_from_config(config: dict) -> CaduceusBackbone:
    """Build an (untrained) dnadiff backbone with the architecture of an original Caduceus config."""
    unsupported = [f"{k}={config.get(k)!r}" for k, ok in [
        ("rms_norm", True), ("bidirectional", True), ("bidirectional_strategy", "add"),
        ("bidirectional_weight_tie", True)] if config.get(k, ok) != ok]
    if unsupported:
        raise UserError(f"unsupported Caduceus config ({', '.join(unsupported)}): only RMSNorm, bidirectional "
                        "'add' with tied projections (as in the released checkpoints) can be loaded")
    ssm = config.get("ssm_cfg") or {}
    return CaduceusBackbone(
        _padded_vocab(config), config["d_model"], config["n_layer"], "ps" if config.get("rcps") else "ph",
        _complement_map(config), norm_eps=config.get("norm_epsilon", 1e-5),
        fused_add_norm=config.get("fused_add_norm", True), d_state=ssm.get("d_state", 16),
        d_conv=ssm.get("d_conv", 4), expand=ssm.get("expand", 2), dt_rank=ssm.get("dt_rank", "auto"))


def _ours(key: str) -> str | None:
    """Original key -> dnadiff backbone key (None for keys with no parameter of their own)."""
    if not key.startswith(PREFIX):
        return None  # lm_head: tied to the embedding
    key = key[len(PREFIX):]
    if key.startswith("embeddings.word_embeddings."):
        return "embedding.weight" if key.endswith("weight") else None  # complement_map comes from config
    return key.replace(".mixer.submodule.", ".mixer.")


def load_original_caduceus(config: dict, state_dict: dict) -> nn.Module:
    """Original config + ``CaduceusForMaskedLM.state_dict()`` -> module: ids [B, L] -> logits [B, L, padded_vocab].

    Raises UserError when keys are missing or unexpected, or the LM head is not tied to the embedding.
    """
    backbone = backbone_from_config(config)
    ours = {}
    for key, value in state_dict.items():
        mapped = _ours(key)
        if mapped is None and key.startswith("lm_head") and key.endswith("weight"):
            emb = state_dict.get(PREFIX + "embeddings.word_embeddings.weight",
                                 state_dict.get(PREFIX + "embeddings.word_embeddings.embedding.weight"))
            if emb is None or not torch.equal(value, emb):
                raise UserError(f"{key} differs from the input embedding: only checkpoints with the LM head tied "
                                "to the embedding (as CaduceusForMaskedLM saves them) can be loaded")
        elif mapped is not None:
            ours[mapped] = value
    missing, unexpected = backbone.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise UserError(f"the checkpoint does not fit its config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}): pass the config.json saved with this checkpoint")
    return OriginalCaduceusMLM(backbone)


def original_state_dict(model: OriginalCaduceusMLM) -> dict[str, torch.Tensor]:
    """Save back: the state dict of ``model`` under the original ``CaduceusForMaskedLM`` key names."""
    backbone = model.backbone
    ps = backbone.variant == "ps"
    out = {}
    for key, value in backbone.state_dict().items():
        if key == "embedding.weight":
            out[PREFIX + "embeddings.word_embeddings" + (".embedding" if ps else "") + ".weight"] = value
            out["lm_head.lm_head.weight" if ps else "lm_head.weight"] = value
        else:
            out[PREFIX + (key.replace(".mixer.", ".mixer.submodule.") if ps else key)] = value
    if ps:
        comp = backbone.embedding.complement.clone()
        out[PREFIX + "embeddings.word_embeddings.complement_map"] = comp
        out["lm_head.complement_map"] = comp.clone()
    return out


def denoiser_from_original(config: dict, state_dict: dict, **kwargs) -> CaduceusDenoiser:
    """Original checkpoint -> :class:`CaduceusDenoiser` over dnadiff's 7-token vocabulary.

    Embedding rows are re-indexed: dnadiff row k = original row ``CADUCEUS_IDS[k]``; every other weight is
    copied. ``kwargs`` go to :class:`CaduceusDenoiser` (e.g. time_conditioning, num_classes, kernels).
    """
    original = load_original_caduceus(config, state_dict).backbone
    ssm = config.get("ssm_cfg") or {}
    denoiser = CaduceusDenoiser(vocab_size=EMBED_SIZE, d_model=config["d_model"], n_layer=config["n_layer"],
                                variant=original.variant, d_state=ssm.get("d_state", 16),
                                d_conv=ssm.get("d_conv", 4), expand=ssm.get("expand", 2), **kwargs)
    if not denoiser.backbone.swap_halves == original.swap_halves:
        raise UserError("PS checkpoints saved with fused_add_norm=False cannot be converted: use a fused one")
    rows = torch.tensor([CADUCEUS_IDS[k] for k in range(EMBED_SIZE)])
    weights = original.state_dict()
    weights["embedding.weight"] = weights["embedding.weight"][rows]
    denoiser.backbone.load_state_dict(weights)
    return denoiser
