"""Search spaces: arch string <-> torch module, behind one small interface and a registry.

A space turns an architecture string into a ``torch.nn.Module`` (in eval mode, with fixed seeded
weights) and knows how to validate, sample and, where the space is small enough, enumerate its
architectures. Adding a space is one Python file defining a ``SearchSpace`` subclass, named as
``path/to/file.py:ClassName`` (or ``package.module:ClassName``) wherever a space name is accepted, or
registered under a short name as an entry point of the group ``hwlat.spaces`` in the package that
ships it (docs/spaces.md, "Your own search space"). ``get_space`` resolves all of them through one
registry: the built-in table ``_REGISTRY`` first, then entry points, then ``file.py:Class`` specs.

    >>> space = get_space("nb201")
    >>> arch = space.validate("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|none~2|")
    >>> model = space.build(arch, batch=1, resolution=32)

Space modules are imported on first ``get_space`` (they import torch, ~1.5 s); this module, ``SPACES``
and ``onnx_files`` do not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.errors import ArchError, UnknownSpaceError, UsageError

if TYPE_CHECKING:
    import torch

#: name -> "module:ClassName" or "/abs/file.py:ClassName" (imported on first use). The built-ins;
#: ``ofa`` and ``autoformer`` are also declared as ``hwlat.spaces`` entry points in pyproject.toml,
#: exactly as a user's package would declare its spaces, and listed here so that a source checkout
#: that was never pip-installed still has them. A plug-in loaded by ``get_space`` is added under its
#: ``name``, so later lookups by that name (in this process) find it.
_REGISTRY: dict[str, str] = {
    "autoformer": "hwlat.spaces.autoformer:AutoFormerSpace",
    "fbnet": "hwlat.spaces.fbnet:FBNetSpace",
    "nb201": "hwlat.spaces.nb201:NB201Space",
    "ofa": "hwlat.spaces.ofa:OFAMobileNetV3Space",
}

#: Names of the built-in spaces, sorted (``known_spaces()`` adds installed entry points).
SPACES: tuple[str, ...] = tuple(sorted(_REGISTRY))

#: Entry-point group under which installed packages register their spaces.
ENTRY_POINT_GROUP = "hwlat.spaces"

#: What a space's ``name`` may look like: it names dataset partitions (``search_space=<name>``) and
#: export-cache keys, so it must be a plain, path-safe word.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_INSTANCES: dict[str, SearchSpace] = {}


class SearchSpace(ABC):
    """One NAS search space. Subclasses set ``name`` and ``version`` and implement the abstract methods.

    ``version`` is part of every export cache key: bump it whenever ``build`` would produce a
    different network (layers, init, default classes) for the same arch string.
    """

    name: str = ""
    version: int = 1
    #: Input resolution used when the caller gives none and the arch does not fix one.
    default_resolution: int = 32

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
    def arch_resolution(self, arch: str) -> int | None:
        """The input resolution a (canonical) arch fixes, or None where the caller chooses it.

        Spaces whose archs carry their resolution (OFA's ``"r"``) override this.
        """
        return None

    def resolution_for(self, arch: str, resolution: int | None = None) -> int:
        """The resolution to build ``arch`` at: the arch's own, else ``resolution``, else the default.

        A requested resolution that contradicts the arch's own is refused (``UsageError``) rather
        than silently overridden, so a dataset row's ``resolution`` is always what was measured.
        """
        fixed = self.arch_resolution(arch)
        if fixed is None:
            return self.default_resolution if resolution is None else resolution
        if resolution is not None and resolution != fixed:
            raise UsageError(
                f"{self.name} arch {quote(arch, 80)} sets its own resolution {fixed}; it cannot be built at "
                f"{resolution} (leave --resolution out)"
            )
        return fixed

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

    def build(self, arch: str, batch: int = 1, resolution: int | None = None) -> torch.nn.Module:
        """The network for ``arch`` in eval mode, weights fixed by a seed derived from the arch.

        The same (space, arch) always gives bit-identical weights, so exports are reproducible.
        ``batch`` does not change the module; it is accepted for symmetry with ``input_shape``.
        ``resolution`` None means ``resolution_for(arch)`` (the arch's own or the space's default).
        """
        import torch

        canon = self.validate(arch)
        resolution = self.resolution_for(canon, resolution)
        self.check_input(batch, resolution)
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
    """The space called ``name`` (one shared instance per space).

    ``name`` is a built-in name, the name of an installed ``hwlat.spaces`` entry point, or a plug-in
    spec ``path/to/file.py:ClassName`` / ``package.module:ClassName``. Every failure (unknown name,
    missing file, import error, no such class, not a ``SearchSpace``) is a one-line ``UsageError``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownSpaceError(f"search space must be a name or FILE.py:Class, got {name!r}")
    name = name.strip()
    key = _normalise_ref(name) if ":" in name else name  # a relative file path means the file it names now
    if key in _INSTANCES:
        return _INSTANCES[key]
    if name in _REGISTRY:
        ref = _REGISTRY[name]
    elif ":" in name:
        ref = key
    else:
        ref = _entry_points().get(name, "")
        if not ref:
            raise UnknownSpaceError(
                f"unknown search space '{name}' (known: {', '.join(known_spaces())}; or give FILE.py:Class)"
            )
    space = _INSTANCES.get(ref) or _instantiate(ref)
    registered = _REGISTRY.get(space.name)
    if registered is not None and _normalise_ref(registered) != ref:
        raise UsageError(
            f"search space {ref} is named '{space.name}', which is taken by {registered}; give it another name"
        )
    _REGISTRY.setdefault(space.name, ref)
    _INSTANCES[ref] = _INSTANCES[key] = _INSTANCES[space.name] = space
    return space


def space_ref(name: str) -> str:
    """What re-creates the space called ``name`` in another process (spawned export workers).

    A plug-in loaded from a file answers to its ``name`` only in the process that loaded it; the
    workers get its ``file.py:Class`` spec instead. Anything ``get_space`` has not seen is returned
    unchanged.
    """
    return _REGISTRY.get(name, name)


def known_spaces() -> tuple[str, ...]:
    """Names of the built-in spaces, the plug-ins loaded so far and the installed entry points."""
    return tuple(sorted({*_REGISTRY, *_entry_points()}))


@functools.cache
def _entry_points() -> dict[str, str]:
    """Installed ``hwlat.spaces`` entry points: name -> "module:attr" (read once per process)."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _normalise_ref(ref: str) -> str:
    """``file.py:Class`` with the file made absolute (so two spellings share one instance)."""
    target, _, attr = ref.strip().rpartition(":")
    if _is_file_target(target):
        target = str(Path(target).expanduser().resolve())
    return f"{target}:{attr}"


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _instantiate(ref: str) -> SearchSpace:
    """Import ``module:Class`` or ``/abs/file.py:Class`` and make the space, checking what it is."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise UsageError(f"search space spec {ref!r} must look like FILE.py:ClassName or package.module:ClassName")
    module = _load_file(target) if _is_file_target(target) else _import_module(target)
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"search space spec {ref}: {target} has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, SearchSpace)):
        raise UsageError(f"search space spec {ref}: '{attr}' is not a subclass of hwlat.spaces.SearchSpace")
    try:
        space = obj()
    except Exception as exc:
        raise UsageError(f"search space {ref}: {attr}() failed: {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(space.name, str) or not _NAME_RE.fullmatch(space.name):
        raise UsageError(
            f"search space {ref}: its name {space.name!r} must be 1-64 letters, digits, '_', '.' or '-'"
        )
    return space


def _import_module(target: str) -> object:
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise UsageError(f"cannot import search space module {target}: {type(exc).__name__}: {one_line(exc)}") from None


def _load_file(target: str) -> object:
    """Import a plug-in file once, as a module named after its path (so pickling and reloads agree)."""
    path = Path(target)
    if not path.is_file():
        raise UsageError(f"search space file {target} does not exist")
    module_name = "hwlat_space_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"search space file {target} cannot be imported (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UsageError(f"cannot import search space file {target}: {type(exc).__name__}: {one_line(exc)}") from None
    return module


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


def json_arch(space: str, arch: object, keys: tuple[str, ...]) -> dict[str, Any]:
    """A JSON-object arch string with exactly ``keys`` (any whitespace); ``ArchError`` naming what is wrong.

    The grammar of the spaces whose archs are JSON (ofa, autoformer, plug-ins that want it); each checks the
    values itself.
    """
    if not isinstance(arch, str):
        raise ArchError(f"{space} arch must be a JSON string, got {type(arch).__name__}")
    try:
        obj = json.loads(arch)
    except ValueError as exc:
        raise ArchError(f"{space} arch {quote(arch)} is not JSON: {exc.msg} at char {exc.pos}") from None
    if not isinstance(obj, dict) or set(obj) != set(keys):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ArchError(f"{space} arch {quote(arch)} must be an object with keys {', '.join(keys)}; got {got}")
    return obj


def dump_json_arch(arch: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The canonical spelling of a JSON arch: compact, keys in ``keys`` order."""
    return json.dumps({k: arch[k] for k in keys}, separators=(",", ":"))


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


__all__ = ["ENTRY_POINT_GROUP", "SPACES", "ArchError", "SearchSpace", "arch_seed", "get_space", "known_spaces",
           "space_ref"]
