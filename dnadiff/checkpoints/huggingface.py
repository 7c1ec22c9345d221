"""Checkpoints of the original Caduceus (Hugging Face ``CaduceusForMaskedLM``): load, save back, convert.

Original key names differ from dnadiff's only by prefixes::

    caduceus.backbone.embeddings.word_embeddings[.embedding].weight  <->  embedding.weight
    caduceus.backbone.layers.{i}.mixer[.submodule].mamba_{fwd,rev}.*  <->  layers.{i}.mixer.mamba_{fwd,rev}.*
    caduceus.backbone.layers.{i}.norm.weight, caduceus.backbone.norm_f.weight  <->  same without prefix
    lm_head.weight / lm_head.lm_head.weight (tied to the embedding), complement_map buffers (PS)
"""
from __future__ import annotations

import math
import os
import re

import torch
import torch.nn as nn

from dnadiff.data.tokenizer import CADUCEUS_IDS, EMBED_SIZE
from dnadiff.errors import UserError
from dnadiff.models.caduceus import CaduceusBackbone, CaduceusDenoiser
from dnadiff.atomic import atomic_write, clean_stale_temporaries, disk_error, make_temp_dir, umask

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


#: the largest model a Caduceus config may describe (parameters): a released Caduceus has under 8 million;
#: 2^31 float32 parameters already take 8 GiB
MAX_PARAMETERS = 2**31
_BOOL_FIELDS = ("rms_norm", "fused_add_norm", "residual_in_fp32", "rcps", "bidirectional",
                "bidirectional_weight_tie", "tie_word_embeddings")
_INT_FIELDS = ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple")
#: Mamba's constructor arguments (mamba-ssm), the only keys ssm_cfg may hold
_SSM_INT = ("d_state", "d_conv", "expand", "layer_idx")
_SSM_FLOAT = ("dt_min", "dt_max", "dt_scale", "dt_init_floor")
_SSM_BOOL = ("conv_bias", "bias", "use_fast_path")
_SSM_OTHER = ("dt_rank", "dt_init", "device", "dtype")
#: keys the Hugging Face hub and ``save_pretrained`` add to a config.json, with their JSON types
_HUB_FIELDS = {"architectures": list, "auto_map": dict, "torch_dtype": (str, type(None)),
               "transformers_version": str, "model_type": str, "_name_or_path": str, "initializer_cfg": (dict, type(None)),
               "dnadiff": dict}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(where: str, key: str, value, allowed: str) -> UserError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return UserError(f"{where}: {key}={shown} is not allowed ({allowed}): fix config.json or use the one saved "
                     "with the checkpoint")


def check_config(config, where: str = "the Caduceus config") -> dict:
    """UserError (one line naming the field) unless every field of an original Caduceus ``config.json`` has
    its type and range: d_model, n_layer, vocab_size, pad_vocab_size_multiple positive integers; the flags
    (rcps, rms_norm, ...) JSON booleans (a string "false" is refused, not read as true); ssm_cfg a mapping of
    Mamba's arguments only (integers, finite numbers, dt_rank "auto" or a positive integer); complement_map a
    mapping of token ids that is its own inverse; norm_epsilon in (0, 1); the hub's keys (architectures,
    auto_map, torch_dtype, transformers_version) of their JSON types. Then the parameter count
    (:func:`estimate_parameters`) must be at most :data:`MAX_PARAMETERS`, so nothing absurd is allocated.
    Other keys are ignored, as the original code ignores them. Returns ``config``."""
    if not isinstance(config, dict):
        raise UserError(f"{where} is a {type(config).__name__}, not a JSON object: use the "
                        "config.json saved with the checkpoint")
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in config:
            raise UserError(f"{where} lacks valid {key} (it is missing): use the config.json saved with the checkpoint "
                            "(d_model, n_layer, vocab_size as positive integers)")
    for key in _INT_FIELDS:
        if key in config and (not _is_int(config[key]) or config[key] < 1):
            raise _bad(where, key, config[key], "a positive integer")
    for key in _BOOL_FIELDS:
        if key in config and not isinstance(config[key], bool):
            raise _bad(where, key, config[key], "true or false, without quotes")
    if "bidirectional_strategy" in config and config["bidirectional_strategy"] not in ("add", "ew_multiply", None):
        raise _bad(where, "bidirectional_strategy", config["bidirectional_strategy"], "'add' or 'ew_multiply'")
    if "norm_epsilon" in config and not (_is_number(config["norm_epsilon"]) and 0 < config["norm_epsilon"] < 1):
        raise _bad(where, "norm_epsilon", config["norm_epsilon"], "a number in (0, 1)")
    for key, types in _HUB_FIELDS.items():
        if key in config and not isinstance(config[key], types):
            raise _bad(where, key, config[key], f"a JSON {getattr(types, '__name__', 'value of its kind')}")
    if not all(isinstance(v, str) for v in config.get("architectures") or []):
        raise _bad(where, "architectures", config["architectures"], "a list of class names")
    if not all(isinstance(k, str) and isinstance(v, (str, list)) for k, v in (config.get("auto_map") or {}).items()):
        raise _bad(where, "auto_map", config["auto_map"], "a mapping of class names to code references")
    ssm = config.get("ssm_cfg")
    if ssm is not None and not isinstance(ssm, dict):
        raise _bad(where, "ssm_cfg", ssm, "a mapping of Mamba's settings")
    for key, value in (ssm or {}).items():
        if key in _SSM_INT:
            ok, allowed = _is_int(value) and value >= (0 if key == "layer_idx" else 1), "a positive integer"
        elif key in _SSM_FLOAT:
            ok, allowed = _is_number(value) and value > 0, "a positive finite number"
        elif key in _SSM_BOOL:
            ok, allowed = isinstance(value, bool), "true or false, without quotes"
        elif key == "dt_rank":
            ok, allowed = value == "auto" or (_is_int(value) and value >= 1), "'auto' or a positive integer"
        elif key == "dt_init":
            ok, allowed = value in ("random", "constant"), "'random' or 'constant'"
        elif key in _SSM_OTHER:
            ok, allowed = value is None or isinstance(value, str), "null or a string"
        else:
            ok, allowed = False, f"ssm_cfg holds Mamba's settings only: {', '.join(_SSM_INT + _SSM_FLOAT + _SSM_BOOL + _SSM_OTHER)}"
        if not ok:
            raise _bad(where, f"ssm_cfg.{key}", value, allowed)
    if _is_number((ssm or {}).get("dt_min")) and _is_number((ssm or {}).get("dt_max")) and ssm["dt_min"] > ssm["dt_max"]:
        raise _bad(where, "ssm_cfg.dt_min", ssm["dt_min"], f"at most dt_max={ssm['dt_max']}")
    count = estimate_parameters(config)
    if count > MAX_PARAMETERS:
        raise UserError(f"{where} describes a model of about {count:.3g} parameters ({4 * count / 2**30:.3g} GiB in "
                        f"float32; d_model={config['d_model']}, n_layer={config['n_layer']}, "
                        f"vocab_size={config['vocab_size']}), more than dnadiff builds ({MAX_PARAMETERS:.3g}): "
                        "the config is damaged; use the config.json saved with the checkpoint")
    _check_complement_map(config, where)
    return config


def _check_complement_map(config: dict, where: str) -> None:
    cmap = config.get("complement_map")
    if cmap is None:
        if config.get("rcps"):
            raise UserError(f"{where} has rcps true but no complement_map: use the config.json saved with the "
                            "checkpoint (a Caduceus-PS config maps every token id to its complement)")
        return
    if not isinstance(cmap, dict):
        raise _bad(where, "complement_map", cmap, 'a mapping of token ids, {"7": 10, ...}')
    padded = _padded_vocab(config)
    parsed = {}
    for key, value in cmap.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            k = None
        if k is None or not _is_int(value) or not 0 <= k < padded or not 0 <= value < padded:
            raise _bad(where, f"complement_map[{key!r}]", value, f"token ids from 0 to {padded - 1}")
        parsed[k] = value
    full = [parsed.get(i, i) for i in range(padded)]
    wrong = [i for i, c in enumerate(full) if full[c] != i]
    if wrong:
        raise _bad(where, f"complement_map[{str(wrong[0])!r}]", full[wrong[0]],
                   "a map that is its own inverse (the complement of the complement is the token)")


def estimate_parameters(config: dict) -> int:
    """The number of distinct parameters of the model a (type-checked) Caduceus config describes, in closed form:
    embedding V'·d (the LM head is tied to it) + final norm d + n_layer · (norm d + one Mamba's
    in_proj d·2E + out_proj E·d, shared by both directions + per direction conv E·(k + 1), x_proj E·(r + 2N),
    dt_proj r·E + E, A_log E·N, D E), with V' the padded vocabulary, E = expand·d, N = d_state, k = d_conv,
    r = dt_rank (ceil(d / 16) for "auto"). Python integers: no overflow for absurd configs."""
    d, n_layer = config["d_model"], config["n_layer"]
    ssm = config.get("ssm_cfg") or {}
    n, k, expand = ssm.get("d_state", 16), ssm.get("d_conv", 4), ssm.get("expand", 2)
    r = -(-d // 16) if ssm.get("dt_rank", "auto") == "auto" else ssm["dt_rank"]
    e = expand * d
    per_direction = e * (k + 1) + e * (r + 2 * n) + r * e + e + e * n + e
    projections = d * 2 * e + e * d
    directions = 2 if config.get("bidirectional", True) else 1
    tied = 1 if config.get("bidirectional_weight_tie", True) else directions
    return _padded_vocab(config) * d + d + n_layer * (d + tied * projections + directions * per_direction)


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


_EMBEDDING_KEYS = (PREFIX + "embeddings.word_embeddings.weight", PREFIX + "embeddings.word_embeddings.embedding.weight")
_HEAD_KEYS = ("lm_head.weight", "lm_head.lm_head.weight")
_COMPLEMENT_KEYS = (PREFIX + "embeddings.word_embeddings.complement_map", "lm_head.complement_map")
_MIXER = re.compile(r"^caduceus\.backbone\.layers\.(\d+)\.mixer\.(submodule\.)?mamba_(fwd|rev)\.(in_proj|out_proj)\.weight$")


def tied_names(config: dict, names) -> list[tuple[str, str]]:
    """The pairs (name, partner) of tensors that the config ties, among and beside ``names`` (state-dict keys).

    Ties of ``CaduceusForMaskedLM``: the LM head and the input embedding (always), and with
    ``bidirectional_weight_tie`` (default true) each layer's reverse Mamba ``in_proj`` / ``out_proj`` and the
    forward one's. ``save_pretrained(safe_serialization=True)`` and ``safetensors.torch.save_model`` store
    each such pair once (the first name of the pair, in state-dict order or sorted: the embedding and
    ``mamba_fwd``), so either name of a pair may be absent from a file."""
    names = set(names)
    variant_ps = any(".mixer.submodule." in k or k.endswith("embedding.weight") for k in names)
    emb, head = (_EMBEDDING_KEYS[1], _HEAD_KEYS[1]) if variant_ps else (_EMBEDDING_KEYS[0], _HEAD_KEYS[0])
    pairs = [(emb, head)]
    if config.get("bidirectional_weight_tie", True):
        sub = "submodule." if variant_ps else ""
        for i in range(config["n_layer"]):
            for proj in ("in_proj", "out_proj"):
                base = f"{PREFIX}layers.{i}.mixer.{sub}mamba_"
                pairs.append((f"{base}fwd.{proj}.weight", f"{base}rev.{proj}.weight"))
    return pairs


def resolve_ties(config: dict, state_dict: dict) -> dict:
    """``state_dict`` with every tensor stored once under one name of a tied pair (see :func:`tied_names`)
    filled in under the other name too. Only the ties the config implies are resolved: any other absent
    tensor stays absent (and loading then reports it). Both names present: kept as they are (and checked
    to be equal where the model ties them, by :func:`load_original_caduceus`)."""
    out = dict(state_dict)
    for first, second in tied_names(config, state_dict):
        if first in out and second not in out:
            out[second] = out[first]
        elif second in out and first not in out:
            out[first] = out[second]
    return out


def _check_layout(config: dict, state_dict: dict, where: str) -> None:
    """UserError when the config's ``rcps`` disagrees with the weights' key layout or complement-map buffers."""
    ps_keys = [k for k in state_dict if ".mixer.submodule." in k or k in (_EMBEDDING_KEYS[1], *_COMPLEMENT_KEYS, _HEAD_KEYS[1])]
    ph_keys = [k for k in state_dict if (k.startswith(PREFIX + "layers.") and ".mixer.mamba_" in k)
               or k in (_EMBEDDING_KEYS[0], _HEAD_KEYS[0])]
    rcps = bool(config.get("rcps", False))
    if ps_keys and ph_keys:
        raise UserError(f"{where} mixes Caduceus-PS keys ({ps_keys[0]}) and Caduceus-Ph keys ({ph_keys[0]}): the "
                        "weight file is damaged or assembled from two models; re-download or re-export it")
    if rcps and ph_keys:
        raise UserError(f"the config says rcps=true (Caduceus-PS) but {where} has the Caduceus-Ph layout "
                        f"({ph_keys[0]}): set rcps to false or use the config.json saved with these weights")
    if not rcps and ps_keys:
        raise UserError(f"the config says rcps=false (Caduceus-Ph) but {where} has the Caduceus-PS layout "
                        f"({ps_keys[0]}): set rcps to true or use the config.json saved with these weights")
    if rcps:
        expected = torch.tensor(_complement_map(config))
        for key in _COMPLEMENT_KEYS:
            if key in state_dict:
                buf = state_dict[key]
                if (not isinstance(buf, torch.Tensor) or buf.dtype.is_floating_point or buf.shape != expected.shape
                        or not torch.equal(buf.long(), expected)):
                    raise UserError(f"{where}'s {key} differs from the config's complement_map: use the config.json "
                                    "saved with these weights")


def _float_weights(state_dict: dict, where: str) -> dict:
    """Weights in float32 (float16 / bfloat16 files are widened exactly); UserError for other dtypes."""
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{where}: {key} is a {type(value).__name__}, not a tensor: re-download or re-export it")
        if key.endswith("complement_map"):
            out[key] = value
        elif value.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            out[key] = value.float()
        else:
            raise UserError(f"{where}: {key} is stored as {value.dtype}, which dnadiff cannot read (float32, float16 "
                            "or bfloat16 only; quantized checkpoints are not supported): use an unquantized checkpoint")
    return out


def load_original_caduceus(config: dict, state_dict: dict, where: str = "the checkpoint") -> nn.Module:
    """Original config + ``CaduceusForMaskedLM.state_dict()`` -> module: ids [B, L] -> logits [B, L, padded_vocab].

    The state dict may store tied tensors once (as ``save_pretrained`` does, see :func:`resolve_ties`) and in
    float16 / bfloat16. Raises UserError when the config is invalid (:func:`check_config`, before anything is
    built), disagrees with the weights' layout (``rcps`` vs PS / Ph keys and complement-map buffers), keys are
    missing or unexpected, or the LM head is not tied to the embedding.
    """
    check_config(config)
    state_dict = resolve_ties(config, _float_weights(state_dict, where))
    _check_layout(config, state_dict, where)
    backbone = backbone_from_config(config)
    ours = {}
    for key, value in state_dict.items():
        mapped = _ours(key)
        if mapped is None and key.startswith("lm_head") and key.endswith("weight"):
            emb = state_dict.get(_EMBEDDING_KEYS[0], state_dict.get(_EMBEDDING_KEYS[1]))
            if emb is None or not torch.equal(value, emb):
                raise UserError(f"{key} differs from the input embedding: only checkpoints with the LM head tied "
                                "to the embedding (as CaduceusForMaskedLM saves them) can be loaded")
        elif mapped is not None:
            match = _MIXER.match(key)
            if match and match.group(3) == "rev" and config.get("bidirectional_weight_tie", True):
                fwd = key.replace("mamba_rev.", "mamba_fwd.")
                if fwd in state_dict and not torch.equal(state_dict[fwd], value):
                    raise UserError(f"{key} differs from its forward twin although bidirectional_weight_tie is true: "
                                    "the checkpoint is damaged or its config is not the one it was saved with")
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


def dedupe_tied(config: dict, state_dict: dict) -> dict:
    """What ``save_pretrained(safe_serialization=True)`` writes: one copy per tied tensor (the embedding and the
    forward Mamba's projections are kept; the LM head and the reverse projections, equal to them, dropped)."""
    out = dict(state_dict)
    for first, second in tied_names(config, state_dict):
        if first in out and second in out and torch.equal(out[first], out[second]):
            del out[second]
    return out


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


# ------------------------------------------------------------------ dnadiff's own settings in an exported config
#: the config.json key holding dnadiff's settings of an exported model (ignored by the original code)
SETTINGS_KEY = "dnadiff"
SETTINGS_FORMAT = "dnadiff-hf-settings/1"
_MODEL_SETTINGS = ("conjoin", "rc_aug", "kernels")


def _jsonable(value) -> bool:
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def dnadiff_settings(payload) -> dict:
    """What an export keeps of a :class:`~dnadiff.checkpoints.format.ModelFile` beyond the original format, as the config.json
    entry ``"dnadiff": {"format", "data", "diffusion", "model"}``: the data settings (window, ...), the
    diffusion process (schedule, eps, ...) and the inference settings of the model (conjoin, rc_aug, kernels)."""
    spec = payload.model
    return {"format": SETTINGS_FORMAT,
            "data": {k: v for k, v in payload.data.to_dict().items() if _jsonable(v)},
            "diffusion": {k: v for k, v in payload.diffusion.items() if _jsonable(v)},
            "model": {k: spec[k] for k in _MODEL_SETTINGS if k in spec}}


def read_dnadiff_settings(config: dict, where: str = "config.json") -> tuple[dict, dict, dict] | None:
    """(data, diffusion, model kwargs) of a config.json written by ``dnadiff export`` (None for other configs).
    UserError when the entry is not of :func:`dnadiff_settings`'s form (its values are checked again by the
    diffusion and model configs)."""
    entry = config.get(SETTINGS_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("format") != SETTINGS_FORMAT:
        raise UserError(f"{where}: the {SETTINGS_KEY!r} entry is not dnadiff's ({SETTINGS_FORMAT}): remove it to load "
                        "the model with default settings")
    parts = []
    for key in ("data", "diffusion", "model"):
        value = entry.get(key, {})
        if not isinstance(value, dict):
            raise UserError(f"{where}: {SETTINGS_KEY}.{key} is a {type(value).__name__}, not a mapping: remove the "
                            f"{SETTINGS_KEY!r} entry to load the model with default settings")
        parts.append(value)
    data, diffusion, model = parts
    window = data.get("window", 1)
    if not _is_int(window) or window < 1:
        raise _bad(where, f"{SETTINGS_KEY}.data.window", window, "a positive integer")
    unknown = sorted(set(model) - set(_MODEL_SETTINGS))
    if unknown:
        raise _bad(where, f"{SETTINGS_KEY}.model.{unknown[0]}", model[unknown[0]], f"keys {', '.join(_MODEL_SETTINGS)}")
    return data, diffusion, model


def write_hf_folder(out, config: dict, state: dict[str, torch.Tensor]):
    """Write ``out`` (a new folder, or an empty one) with ``config.json`` and ``model.safetensors`` as
    ``save_pretrained(safe_serialization=True)`` does: one copy per tied tensor (:func:`dedupe_tied`),
    ``{"format": "pt"}`` metadata. Atomic: the files go into a hidden temporary folder beside ``out``
    (``.NAME.dnadiff-PID-*.tmp``, removed on error; one left by a killed export is removed by the next),
    through :func:`dnadiff.atomic.atomic_write`, which maps a full disk or read-only file system to a UserError;
    the folder and files get the permissions of ordinary new ones under the user's umask. Returns ``out``."""
    import json
    import shutil
    from pathlib import Path

    from safetensors.torch import save


    out = Path(out)
    clean_stale_temporaries(out.parent, out.name)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in dedupe_tied(config, state).items()}
    tmp = make_temp_dir(out)
    try:
        os.chmod(tmp, 0o777 & ~umask())
        text = (json.dumps(config, indent=2) + "\n").encode()
        atomic_write(tmp / "config.json", lambda f: f.write(text))
        atomic_write(tmp / "model.safetensors", lambda f: f.write(save(tensors, metadata={"format": "pt"})))
        if out.is_dir():
            out.rmdir()  # empty (checked by the caller): replaced by the complete folder
        try:
            os.rename(tmp, out)
        except OSError as err:
            raise disk_error(err, out) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
