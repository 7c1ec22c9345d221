"""What the CLI shows: each command's own progress and summary, not the frameworks' chatter.

``configure(verbose=False)`` (called once by :func:`dnadiff.cli.main`, before any command imports
Lightning) raises the level of Lightning's module loggers to WARNING, so its INFO banners ("GPU available:
...", "TPU available: ...", the "Tip: ... litlogger" advert, "`Trainer.fit` stopped: ...") are dropped.
Lightning sets the level of its top loggers (``lightning``, ``lightning.pytorch``) when imported, so the
levels are set one step below, on its subpackages and modules, which it never touches. It also ignores the
known deprecation warnings raised inside Lightning (``LeafSpec`` in ``_pytree``) and sends other logging to
one stderr handler. Real warnings (``warnings.warn`` and WARNING records) still show. ``verbose=True``
restores everything.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings

#: Lightning's subpackages and modules (their loggers and every logger below them)
LIGHTNING_LOGGERS = [f"{top}.{sub}" for top in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                                                "lightning_fabric")
                     for sub in ("accelerators", "callbacks", "core", "loggers", "loops", "overrides", "plugins",
                                 "profilers", "serve", "strategies", "trainer", "tuner", "utilities", "cli",
                                 "connector", "fabric", "wrappers", "_graveyard", "demos")]
#: (message regex, category) of warnings raised inside frameworks that a user cannot act on
FRAMEWORK_WARNINGS = [
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
]


class _Stderr(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (looked up at each record, so redirections apply)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(verbose: bool = False) -> None:
    """Route logging to one stderr handler (WARNING, or INFO with ``verbose``) and silence framework noise."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if not verbose:
        for message, category in FRAMEWORK_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)


@contextlib.contextmanager
def quiet_frameworks():
    """Within a library call: Lightning's banners and known framework deprecation warnings silenced, and
    everything restored afterwards (no handler is installed, the caller's logging stays as it was). Under the
    CLI with ``--verbose`` (which set the levels to NOTSET) nothing is silenced."""
    if logging.getLogger(LIGHTNING_LOGGERS[0]).level == logging.NOTSET and _verbose_cli():
        yield
        return
    saved = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    with warnings.catch_warnings():
        for message, category in FRAMEWORK_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)


def _verbose_cli() -> bool:
    handler = next((h for h in logging.getLogger().handlers if isinstance(h, _Stderr)), None)
    return handler is not None and handler.level <= logging.INFO
