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


#: the character vocabulary of the original Caduceus tokenizer (``[CLS]``=0 ... ``A``=7 ... ``N``=11)
ORIGINAL_VOCAB = ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]", "A", "C", "G", "T", "N"]
_ORIGINAL_COMPLEMENT = {7: 10, 8: 9, 9: 8, 10: 7}


def check_config(config) -> dict:
    """UserError unless ``config`` is a mapping with the fields every Caduceus config has (d_model, n_layer,
    vocab_size as positive integers; ssm_cfg a mapping when present)."""
    if not isinstance(config, dict):
        raise UserError(f"the Caduceus config is a {type(config).__name__}, not a JSON object: use the "
                        "config.json saved with the checkpoint")
    bad = [k for k in ("d_model", "n_layer", "vocab_size")
           if not isinstance(config.get(k), int) or isinstance(config.get(k), bool) or config[k] < 1]
    if bad or not isinstance(config.get("ssm_cfg") or {}, dict):
        raise UserError(f"the Caduceus config lacks valid {', '.join(bad or ['ssm_cfg'])}: use the config.json "
                        "saved with the checkpoint (d_model, n_layer, vocab_size as positive integers)")
    return config


def default_config(d_model: int, n_layer: int, variant: str, d_state: int = 16, d_conv: int = 4,
                   expand: int = 2) -> dict:
    """An original ``CaduceusForMaskedLM`` config.json (the fields of the released checkpoints'
    configs) for the character vocabulary, padded to 16 rows."""
    padded = 16
    complement = {str(i): _ORIGINAL_COMPLEMENT.get(i, i) for i in range(padded)}
    return {"d_model": d_model, "n_layer": n_layer, "vocab_size": len(ORIGINAL_VOCAB),
            "ssm_cfg": {"d_state": d_state, "d_conv": d_conv, "expand": expand, "use_fast_path": False},
            "rms_norm": True, "fused_add_norm": True, "residual_in_fp32": False, "pad_vocab_size_multiple": 8,
            "rcps": variant == "ps", "complement_map": complement, "bidirectional": True,
            "bidirectional_strategy": "add", "bidirectional_weight_tie": True, "norm_epsilon": 1e-5,
            "architectures": ["CaduceusForMaskedLM"], "model_type": "caduceus"}


def backbone_from_config(config: dict) -> CaduceusBackbone:
    """Build an (untrained) dnadiff backbone with the architecture of an original Caduceus config."""
    check_config(config)
    ssm = config.get("ssm_cfg") or {}
    unsupported = [f"{k}={config.get(k)!r}" for k, ok in [
        ("rms_norm", True), ("bidirectional", True), ("bidirectional_strategy", "add"),
        ("bidirectional_weight_tie", True)] if config.get(k, ok) != ok]
    unsupported += [f"ssm_cfg.{k}={ssm[k]!r}" for k, ok in [("bias", False), ("conv_bias", True)]
                    if k in ssm and ssm[k] != ok]
    if unsupported:
        raise UserError(f"unsupported Caduceus config ({', '.join(unsupported)}): only RMSNorm, bidirectional "
                        "'add' with tied projections (as in the released checkpoints) can be loaded")
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
    try:
        missing, unexpected = backbone.load_state_dict(ours, strict=False)
    except RuntimeError as err:  # shapes differ from the config's
        raise UserError(f"the checkpoint does not fit its config ({str(err).splitlines()[-1].strip()[:160]}): pass the "
                        "config.json saved with this checkpoint") from None
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
    if config.get("norm_epsilon", 1e-5) != 1e-5 or ssm.get("dt_rank", "auto") not in ("auto", -(-config["d_model"] // 16)):
        raise UserError("only Caduceus configs with norm_epsilon 1e-5 and dt_rank 'auto' (as released) convert into a "
                        "diffusion denoiser: use such a checkpoint")
    denoiser = CaduceusDenoiser(vocab_size=EMBED_SIZE, d_model=config["d_model"], n_layer=config["n_layer"],
                                variant=original.variant, d_state=ssm.get("d_state", 16),
                                d_conv=ssm.get("d_conv", 4), expand=ssm.get("expand", 2), **kwargs)
    if not denoiser.backbone.swap_halves == original.swap_halves:
        raise UserError("PS checkpoints saved with fused_add_norm=False cannot be converted: use a fused one")
    rows = torch.tensor([CADUCEUS_IDS[k] for k in range(EMBED_SIZE)])
    if original.embedding.weight.shape[0] <= int(rows.max()):
        raise UserError(f"the checkpoint's vocabulary has {original.embedding.weight.shape[0]} rows, fewer than the "
                        "character tokenizer's 12: only Caduceus DNA checkpoints (A=7 ... N=11) can be converted")
    weights = original.state_dict()
    weights["embedding.weight"] = weights["embedding.weight"][rows]
    denoiser.backbone.load_state_dict(weights)
    return denoiser


def original_from_denoiser(denoiser: CaduceusDenoiser, config: dict | None = None,
                           embedding: torch.Tensor | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Back to the original format: a dnadiff Caduceus denoiser -> (config.json dict, original state dict).

    The inverse of :func:`denoiser_from_original`: dnadiff embedding row k goes to original row
    ``CADUCEUS_IDS[k]`` (A/C/G/T, N, the diffusion mask -> ``[MASK]``, PAD -> ``[PAD]``). The other original
    rows (``[CLS]``, ``[SEP]``, ... and the padding rows) come from ``embedding`` [V_orig, d] when given (the
    original checkpoint the model started from), else zeros (logit 0 under the tied head). ``config`` (the
    original config the model started from) keeps its extra fields; its architecture fields are checked.
    Raises UserError for what the original format cannot hold (time or label conditioning).
    """
    if not isinstance(denoiser, CaduceusDenoiser):
        raise UserError(f"only Caduceus models can be exported to the Hugging Face Caduceus format, not "
                        f"{type(denoiser).__name__}: export a model pretrained with model.name=caduceus")
    if denoiser.time_embed is not None or denoiser.label_embed is not None:
        raise UserError("this model is time- or class-conditioned, which the original Caduceus cannot hold: "
                        "export a model trained with time_conditioning false and no classes")
    back = denoiser.backbone
    mamba = back.layers[0].mixer.mamba_fwd if len(back.layers) else None
    arch = default_config(back.d_model, len(back.layers), back.variant,
                          d_state=mamba.d_state if mamba else 16, d_conv=mamba.d_conv if mamba else 4,
                          expand=mamba.d_inner // back.d_model if mamba else 2)
    if config is not None:
        check_config(config)
        ssm = config.get("ssm_cfg") or {}
        for key in ("d_model", "n_layer"):
            if config[key] != arch[key]:
                raise UserError(f"the stored original config has {key}={config[key]} but the model {arch[key]}: "
                                "the checkpoint is inconsistent; export it without its original config")
        arch = {**config, "rcps": arch["rcps"], "ssm_cfg": {**ssm, **{k: arch["ssm_cfg"][k] for k in
                                                                       ("d_state", "d_conv", "expand")}}}
    original = OriginalCaduceusMLM(backbone_from_config(arch))
    weights = {k: v.detach().clone() for k, v in back.state_dict().items()}
    rows = original.backbone.embedding.weight.shape[0]
    full = torch.zeros(rows, back.d_model, dtype=weights["embedding.weight"].dtype)
    if embedding is not None:
        if tuple(embedding.shape) != tuple(full.shape):
            raise UserError(f"the stored original embedding has shape {tuple(embedding.shape)}, not "
                            f"{tuple(full.shape)}: export without the original embedding")
        full.copy_(embedding)
    for ours in range(EMBED_SIZE):
        full[CADUCEUS_IDS[ours]] = weights["embedding.weight"][ours]
    weights["embedding.weight"] = full
    original.backbone.load_state_dict(weights)
    return arch, original_state_dict(original)
