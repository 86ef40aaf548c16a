"""Where the files hwlat ships beside its code live: example device profiles and the bundled datasets.

In a checkout they are the repository's top-level ``device_profiles/`` and ``datasets/``; an installed wheel
carries them as data files under ``<prefix>/share/hwlat/`` (pyproject.toml, ``[tool.setuptools.data-files]``).
One lookup serves both, so ``hwlat devices list`` and ``hwlat profile`` work the same from either.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def shipped_dir(name: str) -> Path | None:
    """The folder ``name`` ("device_profiles" or "datasets") of this installation, or None when absent."""
    candidates = [_CHECKOUT / name, Path(sys.prefix) / "share" / "hwlat" / name,
                  Path(sysconfig.get_path("data")) / "share" / "hwlat" / name]
    return next((c for c in candidates if c.is_dir()), None)
