"""Fixtures shared by the test modules that export networks."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache per test module: each arch is exported once, as a user's cache gives it."""
    return tmp_path_factory.mktemp("export-cache")
