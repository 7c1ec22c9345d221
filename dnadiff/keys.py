"""Typed settings: the ONE checker of every config value, command-line option and library argument.

A :class:`Key` is a value's type, bounds and meaning; ``Key.check`` converts a value (numeric strings such as
``1e-3`` included) or raises a :class:`~dnadiff.errors.ConfigError` of one line naming the dotted key and the
allowed values (``optim.lr=abc is not allowed: use a number in (0, 10]``). The typed config sections are
dataclasses whose fields are declared with :func:`setting` (type, default, bounds and meaning stated once);
:func:`keys_of` reads their keys back, :func:`check_section` checks a mapping against them (unknown keys are
errors), :func:`option` makes an argparse ``type=`` and :func:`check_value` checks a library argument.
This module is on the ground floor: every layer may use it.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from dnadiff.errors import ConfigError, ParameterError, UserError


@dataclass(frozen=True)
class Key:
    """One typed config value or command-line option with its bounds and meaning.

    ``kind``: ``int``, ``float``, ``bool``, ``str``, ``choice`` (one of ``choices``), ``floats``
    (a list of ``length`` floats), ``strs`` (a list of names, or one comma-separated string),
    ``blocks`` (auto, true, false or an integer k >= 1: activation checkpointing).
    ``lo``/``hi``: bounds, inclusive unless ``lo_open``/``hi_open``; ``optional``: null allowed.
    """

    kind: str
    default: Any = None
    doc: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    optional: bool = False
    length: int | None = None

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``an integer >= 1`` or ``a number in (0, 1]``."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "str":
            text = "a text value"
        elif self.kind == "blocks":
            text = "auto, true, false or an integer k >= 1 (groups of k blocks)"
        elif self.kind == "strs":
            text = "a list of names (or one comma-separated string)"
        else:
            noun = {"int": "an integer", "float": "a number", "floats": f"a list of {self.length} numbers, each"}[self.kind]
            if self.lo is not None and self.hi is not None:
                text = f"{noun} in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
            elif self.lo is not None:
                text = f"{noun} {'>' if self.lo_open else '>='} {_num(self.lo)}"
            elif self.hi is not None:
                text = f"{noun} {'<' if self.hi_open else '<='} {_num(self.hi)}"
            else:
                text = noun
        return text + (" or null" if self.optional else "")

    def _number(self, value: Any, integer: bool):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = value.strip()
            value = int(value) if integer else float(value)
        if integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValueError
        else:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError
            value = float(value)
        lo_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        hi_bad = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if lo_bad or hi_bad:
            raise ValueError
        return value

    def check(self, value: Any, name: str) -> Any:
        """``value`` converted to this key's type; ConfigError (a UserError: one line naming ``name`` and the
        allowed values) when it does not fit."""
        if value is None and self.optional:
            return None
        try:
            if self.kind in ("int", "float"):
                return self._number(value, self.kind == "int")
            if self.kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError
                return value
            if self.kind == "choice":
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)
                if value not in self.choices:
                    raise ValueError
                return value
            if self.kind == "blocks":  # auto | true | false | k >= 1
                if isinstance(value, str):
                    value = {"auto": "auto", "true": True, "false": False}.get(value.strip().lower(), value)
                    if isinstance(value, str) and value.strip().isdigit():
                        value = int(value)
                if value == "auto" or isinstance(value, bool):
                    return value
                if isinstance(value, int) and value >= 1:
                    return value
                raise ValueError
            if self.kind == "str":
                if not isinstance(value, str) or not value:
                    raise ValueError
                return value
            if self.kind == "strs":
                if isinstance(value, str):
                    value = [v for v in value.split(",") if v]
                if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                    raise ValueError
                return [str(v) for v in value]
            if self.kind == "floats":
                if not isinstance(value, list) or len(value) != self.length:
                    raise ValueError
                return [self._number(v, False) for v in value]
        except (ValueError, TypeError, OverflowError):
            shown = value if isinstance(value, str) else show(value)
            raise ConfigError(f"{name}={shown} is not allowed: use {self.allowed()}") from None
        raise AssertionError(self.kind)


def option(kind: str | Key, **bounds):
    """An argparse ``type=`` for a command-line option checked like a config :class:`Key`: a bad value
    stops the command while its arguments are parsed, in one line naming the option and the allowed values."""
    import argparse

    spec = kind if isinstance(kind, Key) else Key(kind, **bounds)

    def parse(raw: str):
        try:
            return spec.check(raw, "value")
        except UserError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not allowed: use {spec.allowed()}") from None

    parse.__name__ = spec.kind
    return parse


def check_value(value: Any, parameter: str, kind: str | Key, **bounds) -> Any:
    """A library call's argument checked (and converted) like a config :class:`Key` of ``kind`` with ``bounds``;
    :class:`dnadiff.errors.ParameterError` naming ``parameter`` (``"batch_size=0 is not allowed: use ..."``)."""
    try:
        return (kind if isinstance(kind, Key) else Key(kind, **bounds)).check(value, parameter)
    except UserError as err:
        raise ParameterError(parameter, str(err)) from None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def setting(kind: str, default: Any = dataclasses.MISSING, doc: str = "", **bounds) -> Any:
    """A dataclass field declared by its :class:`Key`: ``window: int = setting("int", 1024, "...", lo=1)``.
    The default is stated here once (lists are copied per instance); ``dataclasses.MISSING``: required."""
    spec = Key(kind, None if default is dataclasses.MISSING else copy.deepcopy(default), doc, **bounds)
    metadata = {"key": spec}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def keys_of(cls) -> dict[str, Key]:
    """The :class:`Key` of each field of a config dataclass declared with :func:`setting`, in field order."""
    return {f.name: f.metadata["key"] for f in dataclasses.fields(cls) if "key" in f.metadata}


def check_fields(config, where: str) -> None:
    """Check (and convert in place) every :func:`setting` field of a config dataclass instance; ConfigError
    naming ``where.field``. Called from the dataclasses' ``__post_init__``."""
    for name, spec in keys_of(type(config)).items():
        object.__setattr__(config, name, spec.check(getattr(config, name), f"{where}.{name}"))


def check_section(values: Mapping | None, keys: Mapping[str, Key], where: str, fill: bool = True) -> dict:
    """A config section checked against its ``keys``: every value converted, an unknown key a ConfigError
    (``unknown config key 'optim.lrr': valid keys here are ...``); absent keys take their defaults when
    ``fill``. Returns a new dict."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section {where!r} must be a mapping of keys: fix the config")
    unknown = sorted(set(map(str, values)) - set(keys))
    if unknown:
        raise ConfigError(f"unknown config key {where + '.' + unknown[0]!r}: valid keys here are {', '.join(sorted(keys))}")
    out = {}
    for key, spec in keys.items():
        if key in values:
            out[key] = spec.check(values[key], f"{where}.{key}")
        elif fill:
            out[key] = copy.deepcopy(spec.default)
    return out


def show(value: Any) -> str:
    """A value as a config file writes it (YAML flow style: ``[0.9, 0.95]``, ``null``, ``true``)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


#: the types a value read back from a file may have (:func:`check_stored`), and how a message names them
STORED_KINDS = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "strs": ("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    "ints": ("a list of integers", lambda v: isinstance(v, (list, tuple))
             and all(isinstance(x, int) and not isinstance(x, bool) for x in v)),
    "map": ("a mapping", lambda v: isinstance(v, Mapping)),
}


def check_stored(value: Any, kind: str, name: str, where: str, fix: str) -> Any:
    """A value read back from a file dnadiff wrote (a checkpoint's records), checked strictly against ``kind``
    (a key of :data:`STORED_KINDS`; unlike :meth:`Key.check` nothing is converted from text: a file holds the
    types it was written with) and returned as the record keeps it (float, tuple, dict). UserError
    ``{where}: {name}={value!r} is not {kind in words}: {fix}`` when it does not fit."""
    words, fits = STORED_KINDS[kind]
    if not fits(value):
        raise UserError(f"{where}: {name}={value!r} is not {words}: {fix}")
    if kind == "float":
        return float(value)
    if kind in ("strs", "ints"):
        return tuple(value)
    return dict(value) if kind == "map" else value
