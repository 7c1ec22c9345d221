"""Shared fixtures. Real data lives in ../shared/data next to the checkout; tests that need it
skip cleanly (and visibly) only when that folder is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DNADIFF_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (real DNA); skips the test when ../shared is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (../shared is absent)")
    return path


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path to ../shared/fixtures; skips the test when ../shared is absent."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip(f"fixtures not found at {path} (../shared is absent)")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
