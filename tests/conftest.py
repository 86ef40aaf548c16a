"""Fixtures shared by the test modules: a private machine lock, and one export cache per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.transport.local import LOCK_ENV


@pytest.fixture(scope="session", autouse=True)
def private_machine_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One machine lock per test session, inherited by every hwlat the tests start.

    On a shared machine another user's real campaign holds the machine-wide lock in /var/tmp; with it the
    suite's local campaigns were refused ("another hwlat campaign is measuring") and could not tell that from
    a lock of their own. The lock's behaviour is tested on this private path; that the default path does not
    depend on $TMPDIR, in test_reliability_store.
    """
    path = tmp_path_factory.getbasetemp() / "machine.lock"
    previous = os.environ.get(LOCK_ENV)
    os.environ[LOCK_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(LOCK_ENV, None)
    else:
        os.environ[LOCK_ENV] = previous


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache per test module: each arch is exported once, as a user's cache gives it."""
    return tmp_path_factory.mktemp("export-cache")
