"""Every way dnadiff reads a file an older version wrote, in one place (ground floor: plain dicts in, plain
dicts out; the modules that load files call these).

* Model specs: keys renamed in issue 13 (:data:`MODEL_KEYS`), read by the model configs and the warm start.
* Weights: the transformer's time MLP ``time_embed.mlp.{0,2}.*`` before issue 13, now ``time_embed.{0,2}.*``
  (:func:`upgrade_state_keys`, a load pre-hook of every conditioned denoiser and of the EMA's shadow).
* A learnable process's parameters in a Lightning checkpoint: ``genmd4.*`` before issue 13, now
  ``diffusion.*`` (:func:`upgrade_process_keys`, :func:`process_state`).
* A ``model.pt`` data entry with only ``modality`` and ``window`` (the first files): the DNA sizes and units
  are :class:`dnadiff.data.info.DataInfo`'s defaults, so :meth:`~dnadiff.data.info.DataInfo.from_dict` reads it.
"""
from __future__ import annotations

#: model-spec key of older files -> current key
MODEL_KEYS = {"vocab_size": "embed_size", "rc_augment": "rc_aug"}

_OLD_TIME_MLP, _TIME_EMBED = "time_embed.mlp.", "time_embed."
_OLD_PROCESS, _PROCESS = "genmd4.", "diffusion."


def upgrade_state_keys(state_dict: dict, prefix: str = "") -> dict:
    """Rename, in place, the weights ``PREFIX time_embed.mlp.*`` to ``PREFIX time_embed.*``; a no-op for current
    keys. Returns ``state_dict``."""
    old = prefix + _OLD_TIME_MLP
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + _TIME_EMBED + key[len(old):]] = state_dict.pop(key)
    return state_dict


def upgrade_process_keys(state_dict: dict) -> dict:
    """Rename, in place, a Lightning state dict's ``genmd4.*`` entries to ``diffusion.*``. Returns it."""
    for key in [k for k in state_dict if k.startswith(_OLD_PROCESS)]:
        state_dict[_PROCESS + key[len(_OLD_PROCESS):]] = state_dict.pop(key)
    return state_dict


def process_state(state_dict: dict) -> dict:
    """The learnable process's parameters of a Lightning state dict, by their names in the process
    (``diffusion.raw_w`` or, in older files, ``genmd4.raw_w`` -> ``raw_w``); empty for a fixed process."""
    return {k.partition(".")[2]: v for k, v in state_dict.items() if k.startswith((_PROCESS, _OLD_PROCESS))}
