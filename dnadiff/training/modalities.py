"""Text and pixel data for pretraining and evaluation: one entry point shared by the CLI and configs.

``build_datamodule(cfg)`` reads these keys from an ``argparse.Namespace`` or a dict (flat, or
with them under ``"data"``); a key that is absent or None takes its default:

=================  =============================================  ========================================
key                meaning                                        default
=================  =============================================  ========================================
``text``           path of a UTF-8 text file (text modality)      --
``text_level``     ``"char"`` (text8 format, V=27) or ``"byte"``  ``"char"``
                   (V=256)
``window``         chunk length in tokens (text only; an image    256
                   is always one whole sequence)
``val_fraction``,  contiguous held-out shares of the text         0.05, 0.05
``test_fraction``
``images``         ``"digits"`` or a CIFAR-10 batches folder      --
``pixel_order``    ``"interleaved"`` or ``"planar"``              ``"interleaved"``
``batch_size``                                                    32
``num_workers``                                                   0
=================  =============================================  ========================================

Exactly one of ``text`` / ``images`` must be set. The returned :class:`~dnadiff.data.info.DataInfo` holds
those keys with their resolved values, so ``build_datamodule(data_info)`` rebuilds the same data (e.g. for
``dnadiff evaluate``), plus ``modality`` ("text" | "pixels"), ``vocab_size`` (V of the diffusion), ``embed_size``
(rows of the embedding table), ``window`` (sequence length), ``class_names``, ``shape`` ([H, W, C], pixels
only), ``unit`` ("bpc", "bits/byte" or "bpd") and ``uniform_bits`` (log2 V).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dnadiff.data.pixels import PixelDataModule, save_sample_grid
from dnadiff.data.text import TextDataModule, decode_bytes, decode_text8
from dnadiff.errors import UserError
from dnadiff.eval.units import bits_per_token, uniform_bits
from dnadiff.atomic import atomic_write
from dnadiff.config import DataConfig
from dnadiff.data.info import DataInfo

#: the keys read, with the config tree's defaults, except the two a direct call on a text file is given when it
#: names none (configs always pass the whole ``data`` section, so on every command the tree's own apply)
DEFAULTS = {**{k: v for k, v in DataConfig().to_dict().items()
               if k in ("text", "text_level", "val_fraction", "test_fraction", "images", "pixel_order", "num_workers")},
            "window": 256, "batch_size": 32}
UNITS = {"char": "bpc", "byte": "bits/byte"}


def _settings(cfg) -> dict:
    """The DEFAULTS keys read from a Namespace, a DataInfo or a (possibly nested under "data") dict,
    None -> default."""
    source = (vars(cfg) if isinstance(cfg, argparse.Namespace) else cfg.to_dict() if isinstance(cfg, DataInfo)
              else dict(cfg))
    if isinstance(source.get("data"), dict):
        source = {**source, **source["data"]}
    return {key: default if source.get(key) is None else source[key] for key, default in DEFAULTS.items()}


def build_datamodule(cfg) -> tuple[TextDataModule | PixelDataModule, DataInfo]:
    """Build the Lightning DataModule for text or images from ``cfg`` (keys in the module docstring).

    Returns:
        (datamodule, data_info): batches are {"tokens": LongTensor[B, window], "loss_mask": BoolTensor[B, window]}
        (+ "labels": LongTensor[B] for images); data_info as in the module docstring.
    """
    s = _settings(cfg)
    if (s["text"] is None) == (s["images"] is None):
        raise UserError("give exactly one data source for text/pixel pretraining: --text FILE or --images DIR|digits")
    common = {"batch_size": int(s["batch_size"]), "num_workers": int(s["num_workers"])}
    if s["text"] is not None:
        data = TextDataModule(s["text"], level=s["text_level"], length=int(s["window"]),
                              val_fraction=float(s["val_fraction"]), test_fraction=float(s["test_fraction"]), **common)
        info = {key: s[key] for key in ("text_level", "val_fraction", "test_fraction")}
        info.update(modality="text", text=str(Path(s["text"]).resolve()), window=data.length, class_names=[],
                    unit=UNITS[data.level], num_tokens=dict(data.num_tokens))
    else:
        data = PixelDataModule(s["images"], order=s["pixel_order"], **common)
        images = s["images"] if s["images"] == "digits" else str(Path(s["images"]).resolve())
        info = {"modality": "pixels", "images": images, "pixel_order": data.order, "window": data.length,
                "shape": list(data.shape), "class_names": list(data.class_names), "unit": "bpd",
                "num_images": dict(data.num_images)}
    info.update(vocab_size=data.vocab_size, embed_size=data.embed_size, uniform_bits=uniform_bits(data.vocab_size), **common)
    return data, DataInfo.from_dict(info)


def model_io(data_info: DataInfo) -> dict:
    """The data-dependent keyword arguments of a denoiser spec:
    {"embed_size": embedding rows, "num_outputs": V, "max_len": window}."""
    return {"embed_size": data_info.embed_size, "num_outputs": data_info.vocab_size, "max_len": data_info.window}


def report_in_units(data_info: DataInfo, total_nats: float, num_tokens: int) -> dict:
    """A held-out NELBO summed over ``num_tokens`` tokens, in the modality's unit beside the uniform baseline.

    Returns:
        {"unit": "bpc" | "bits/byte" | "bpd", "bits": bits per token, "uniform_bits": log2 V,
         "nats_per_token": ..., "num_tokens": ...}
    """
    return {"unit": data_info.unit, "bits": bits_per_token(total_nats, num_tokens),
            "uniform_bits": data_info.uniform_bits, "nats_per_token": total_nats / num_tokens, "num_tokens": int(num_tokens)}


def save_samples(data_info: DataInfo, tokens: torch.Tensor, path: str | Path) -> Path:
    """Write samples LongTensor[N, window]: a text file (one sample a paragraph) or a PNG grid for images.

    ``path`` gets the suffix ".txt" or ".png"; returns the path written.
    """
    if data_info.shape is not None:  # an image
        return save_sample_grid(tokens, tuple(data_info.shape), data_info.vocab_size, Path(path).with_suffix(".png"),
                                data_info.pixel_order)
    decode = decode_text8 if data_info.text_level == "char" else decode_bytes
    path = Path(path).with_suffix(".txt")

    text = ("\n\n".join(decode(row) for row in tokens) + "\n").encode("utf-8")
    return atomic_write(path, lambda f: f.write(text))
