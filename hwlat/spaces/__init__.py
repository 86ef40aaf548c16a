"""Search spaces: arch string <-> torch module, behind one small interface and a registry.

A space turns an architecture string into a ``torch.nn.Module`` (in eval mode, with fixed seeded
weights) and knows how to validate, sample and, where the space is small enough, enumerate its
architectures. Adding a space is one new module defining a ``SearchSpace`` subclass plus one line
in ``_REGISTRY`` below.

    >>> space = get_space("nb201")
    >>> arch = space.validate("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|none~2|")
    >>> model = space.build(arch, batch=1, resolution=32)

Space modules are imported on first ``get_space`` (they import torch, ~1.5 s); this module, ``SPACES``
and ``onnx_files`` do not.
"""

from __future__ import annotations

import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agents.errors import ArchError, UnknownSpaceError, UsageError

if TYPE_CHECKING:
    import torch

#: name -> "module:ClassName" (imported on first use).
_REGISTRY: dict[str, str] = {
    "fbnet": "hwlat.spaces.fbnet:FBNetSpace",
    "nb201": "hwlat.spaces.nb201:NB201Space",
}

#: Names of the registered spaces, sorted.
SPACES: tuple[str, ...] = tuple(sorted(_REGISTRY))

_INSTANCES: dict[str, SearchSpace] = {}


class SearchSpace(ABC):
    """One NAS search space. Subclasses set ``name`` and ``version`` and implement the abstract methods.

    ``version`` is part of every export cache key: bump it whenever ``build`` would produce a
    different network (layers, init, default classes) for the same arch string.
    """

    name: str = ""
    version: int = 1

    # -- identity ------------------------------------------------------------------------------
    def cache_identity(self) -> str:
        """What, besides the arch string, decides the built network (name, version, options)."""
        return f"{self.name}-v{self.version}"

    # -- the space -----------------------------------------------------------------------------
    @abstractmethod
    def size(self) -> int:
        """Number of distinct architectures in the space."""

    @abstractmethod
    def validate(self, arch: str) -> str:
        """Return the canonical form of ``arch``; raise ``ArchError`` naming what is wrong."""

    @abstractmethod
    def sample(self, count: int, seed: int) -> list[str]:
        """``count`` distinct canonical arch strings, the same for the same ``seed``."""

    def degenerate(self, arch: str) -> bool:
        """True for archs the space knows to be no real network (reports leave them out of "fastest" lists)."""
        return False

    def arch_index(self, arch: str) -> int | None:
        """The arch's index in the space's canonical order, or None where the space has none."""
        self.validate(arch)
        return None

    @property
    def enumerable(self) -> bool:
        """Whether ``all_archs`` can list the space."""
        return False

    def all_archs(self) -> Iterator[str]:
        """Every architecture in canonical order (only for enumerable spaces)."""
        raise UsageError(
            f"search space '{self.name}' has {self.size():.3g} architectures and cannot be enumerated; "
            "use sample() instead"
        )

    # -- the network ---------------------------------------------------------------------------
    @abstractmethod
    def input_shape(self, batch: int = 1, resolution: int = 32) -> list[int]:
        """Shape of the network's single input tensor (NCHW)."""

    @abstractmethod
    def _build(self, arch: str, resolution: int) -> torch.nn.Module:
        """Construct the network for a canonical ``arch`` (weights initialised by the caller)."""

    def check_input(self, batch: int, resolution: int) -> None:
        """Raise ``UsageError`` when the network cannot be built for that batch and resolution."""
        if not isinstance(batch, int) or batch < 1:
            raise UsageError(f"batch must be a positive integer, got {batch!r}")
        if not isinstance(resolution, int) or resolution < 1:
            raise UsageError(f"resolution must be a positive integer, got {resolution!r}")

    def build(self, arch: str, batch: int = 1, resolution: int = 32) -> torch.nn.Module:
        """The network for ``arch`` in eval mode, weights fixed by a seed derived from the arch.

        The same (space, arch) always gives bit-identical weights, so exports are reproducible.
        ``batch`` does not change the module; it is accepted for symmetry with ``input_shape``.
        """
        import torch

        self.check_input(batch, resolution)
        canon = self.validate(arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(arch_seed(self.cache_identity(), canon))
            model = self._build(canon, resolution)
            randomize_batchnorm(model)
        return model.eval()

    def sample_input(self, batch: int = 1, resolution: int = 32, seed: int = 0) -> torch.Tensor:
        """A fixed random input of the right shape (for export tracing and numeric checks)."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape(batch, resolution), generator=gen)


def arch_seed(identity: str, arch: str) -> int:
    """A 31-bit seed derived from the space identity and the canonical arch string."""
    digest = hashlib.sha256(f"{identity}:{arch}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics.

    Default BN (mean 0, var 1, weight 1, bias 0) is almost an identity in eval mode, which would
    let a broken BN export pass a numeric check. Values are drawn from the (already seeded) global
    generator and stay near 1 so activations keep a sane scale through deep networks.
    """
    import torch

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                if mod.weight is not None:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0.0, 0.1)
                mod.running_mean.normal_(0.0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name`` (one shared instance per name)."""
    if name not in _REGISTRY:
        raise UnknownSpaceError(f"unknown search space '{name}' (known: {', '.join(SPACES)})")
    if name not in _INSTANCES:
        module_name, cls_name = _REGISTRY[name].split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module_name), cls_name)()
    return _INSTANCES[name]


def check_count(space: SearchSpace, count: int) -> None:
    """Shared argument check for ``sample``."""
    if not isinstance(count, int) or count < 0:
        raise UsageError(f"sample count must be a non-negative integer, got {count!r}")
    if count > space.size():
        raise UsageError(f"cannot sample {count} distinct archs from '{space.name}' ({space.size()} in all)")


def quote(arch: object, limit: int = 120) -> str:
    """A one-line, length-limited quotation of a user-supplied arch string for error messages."""
    text = repr(arch)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def read_arch_file(path: Path) -> list[str]:
    """Arch strings from a file: text (one per line; blank lines and ``#`` comments skipped), or a CSV /
    Parquet table with an ``arch`` (or ``arch_str``) column. The one reader behind every ``--archs``.

    Strings are returned as written; each command validates them against its space.
    """
    try:
        if path.suffix in (".csv", ".parquet"):
            import pyarrow.csv as pcsv
            import pyarrow.parquet as pq

            table = pq.read_table(path) if path.suffix == ".parquet" else pcsv.read_csv(path)
            column = next((c for c in ("arch", "arch_str") if c in table.column_names), None)
            if column is None:
                raise UsageError(f"arch file {path} needs an 'arch' (or 'arch_str') column")
            archs = [str(a) for a in table.column(column).to_pylist() if a is not None and str(a).strip()]
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            archs = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        raise UsageError(f"cannot read arch file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"arch file {path} is not UTF-8 text") from None
    except UsageError:
        raise
    except Exception as exc:  # pyarrow raises many types for a damaged table
        raise UsageError(f"cannot read arch file {path}: {one_line(exc)}") from None
    if not archs:
        raise UsageError(f"arch file {path} holds no arch strings")
    for n, arch in enumerate(archs, 1):  # NUL, escapes, other control bytes: not text someone wrote
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in arch):
            raise UsageError(f"arch file {path} holds binary data (arch {n}: {arch[:40]!r}); give one arch "
                             "string per line")
    return archs


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), for UsageErrors."""
    lines = str(exc).strip().splitlines()
    return (lines[0][:limit] if lines else "") or type(exc).__name__


__all__ = ["SPACES", "ArchError", "SearchSpace", "arch_seed", "get_space"]
