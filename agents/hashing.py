"""sha256 of model files, standard library only.

Kept apart from the runner so that ``python -m agents hash`` (run on the device before every campaign
chunk) imports nothing heavy: on a Raspberry Pi importing numpy alone costs ~0.4 s.
"""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (models can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_paths(paths: list[str]) -> dict[str, str | None]:
    """path -> hex sha256, None where the file is missing or unreadable.

    "Not there" is an ordinary answer: the coordinator re-sends such models. Only regular files are
    opened: a FIFO or a device node could block.
    """
    out: dict[str, str | None] = {}
    for path in paths:
        try:
            out[path] = sha256_file(path) if os.path.isfile(path) else None
        except OSError:
            out[path] = None
    return out
