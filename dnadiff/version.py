"""The package version, read by the wheel build (``pyproject.toml``), provenance records and ``--version``."""
__version__ = "0.2.0"
