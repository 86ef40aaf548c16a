"""Files on both sides of the wire: sha256 of models, durable renames and atomic writes. Standard library only.

The bottom of the house: the agent (device side), the coordinator, the predictor and the profiling loop all
write through ``atomic_write`` / ``atomic_path`` so a kill or a power cut never leaves half a file under a
final name. Kept free of numpy so that ``python -m agents hash`` (run on the device before every campaign
chunk) imports nothing heavy: on a Raspberry Pi importing numpy alone costs ~0.4 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable across a power cut (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it, rename it over ``final`` and fsync the folder.

    For writers that want a path (pyarrow, torch.save, pandas). On any error the temporary file is removed
    and ``final`` is untouched. The temporary name starts with ``.`` and ends with ``.tmp`` so dataset
    readers never take it for data.
    """
    final = Path(final)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file + fsync + rename + fsync of the folder)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
