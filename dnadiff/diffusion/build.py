"""A diffusion process from a plain spec (what configs and ``model.pt`` files store)."""
from __future__ import annotations

from .genmd4 import GenMD4
from .masked import MaskedDiffusion
from .schedules import get_schedule


def build_diffusion(spec: dict):
    """Diffusion process from ``{"vocab_size": V, "schedule": name, **schedule_kwargs, "num_steps": T | None}``;
    ``schedule: genmd4`` gives a learnable :class:`GenMD4` (``init_w``).

    Raises:
        ValueError: unknown schedule or bad schedule options (the message names the settings).
    """
    spec = dict(spec)
    V = int(spec.pop("vocab_size"))
    name = spec.pop("schedule", "linear")
    if name == "genmd4":
        return GenMD4(V, init_w=spec.pop("init_w", 1.0))
    num_steps = spec.pop("num_steps", None)
    try:
        schedule = get_schedule(name, **spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad diffusion settings {dict(schedule=name, **spec)} ({err}): "
                         f"check the config's diffusion section") from None
    return MaskedDiffusion(V, schedule, num_steps=num_steps)
