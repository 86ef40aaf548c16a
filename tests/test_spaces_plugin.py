"""Search-space plug-ins: FILE.py:Class specs, hwlat.spaces entry points (real importlib.metadata), errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import hwlat.spaces as spaces
from agents.errors import UnknownSpaceError, UsageError
from harness.export import export_models
from harness.records import ModelSpec
from hwlat.spaces import SearchSpace, get_space, known_spaces, space_ref

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "my_space.py"
EXAMPLE_SPEC = f"{EXAMPLE}:TinyConvSpace"

#: A complete minimal space, written into temporary files by the tests below.
SPACE_SOURCE = """
from torch import nn
from hwlat.spaces import ArchError, SearchSpace

class {cls}(SearchSpace):
    name = "{name}"

    def size(self):
        return 2

    def validate(self, arch):
        if arch not in ("a", "b"):
            raise ArchError(f"bad arch {{arch!r}}")
        return arch

    def sample(self, count, seed):
        return ["a", "b"][:count]

    def input_shape(self, batch=1, resolution=32):
        return [batch, 3, resolution, resolution]

    def _build(self, arch, resolution):
        return nn.Sequential(nn.Conv2d(3, 4 if arch == "a" else 8, 3), nn.Flatten(), nn.LazyLinear(2))
"""


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plug-ins register themselves by name; keep that (and the entry-point cache) inside each test."""
    monkeypatch.setattr(spaces, "_REGISTRY", dict(spaces._REGISTRY))
    monkeypatch.setattr(spaces, "_INSTANCES", {})
    spaces._entry_points.cache_clear()
    yield
    spaces._entry_points.cache_clear()


def write_space(folder: Path, stem: str, cls: str = "MySpace", name: str = "myspace", body: str = "") -> Path:
    path = folder / f"{stem}.py"
    path.write_text(body or SPACE_SOURCE.format(cls=cls, name=name))
    return path


def one_line_usage_error(spec: str, match: str) -> str:
    with pytest.raises(UsageError, match=match) as exc:
        get_space(spec)
    message = str(exc.value)
    assert "\n" not in message and len(message) < 400
    return message


def test_example_file_spec_resolves_and_registers_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    space = get_space(EXAMPLE_SPEC)
    assert isinstance(space, SearchSpace) and space.name == "tinyconv"
    assert get_space("tinyconv") is space
    monkeypatch.chdir(REPO)
    assert get_space("docs/examples/my_space.py:TinyConvSpace") is space  # another spelling, one instance
    assert space_ref("tinyconv") == EXAMPLE_SPEC
    assert "tinyconv" in known_spaces()
    archs = space.sample(5, seed=1)
    assert len(set(archs)) == 5 and all(space.validate(a) == a for a in archs)
    assert space.validate(" 16X2, 32x1 ,64x3") == "16x2,32x1,64x3"
    assert sorted(space.arch_index(a) for a in space.all_archs()) == list(range(space.size()))
    model = space.build(archs[0])
    assert tuple(model(space.sample_input()).shape) == (1, 10)


def test_module_spec_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_space(tmp_path, "mod_space_for_test", name="modspace")
    monkeypatch.syspath_prepend(str(tmp_path))
    space = get_space("mod_space_for_test:MySpace")
    assert space.name == "modspace" and get_space("modspace") is space
    sys.modules.pop("mod_space_for_test", None)


def test_entry_point_discovery_with_a_real_dist_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package's ``hwlat.spaces`` entry point, found by importlib.metadata on sys.path."""
    write_space(tmp_path, "ep_space_for_test", cls="EpSpace", name="epspace")
    dist = tmp_path / "ep_space_for_test-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-space-for-test\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hwlat.spaces]\nepspace = ep_space_for_test:EpSpace\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spaces._entry_points.cache_clear()
    assert "epspace" in known_spaces()
    space = get_space("epspace")
    assert type(space).__name__ == "EpSpace" and space.validate("b") == "b"
    assert space_ref("epspace") == "ep_space_for_test:EpSpace"
    sys.modules.pop("ep_space_for_test", None)


def test_builtin_entry_points_point_at_the_builtin_table() -> None:
    """pyproject.toml declares ofa and autoformer as entry points with the same targets as the table."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["hwlat.spaces"]
    assert declared == {name: spaces._REGISTRY[name] for name in ("ofa", "autoformer")}


def test_errors_are_one_line_usage_errors(tmp_path: Path) -> None:
    one_line_usage_error(f"{tmp_path}/missing.py:X", "does not exist")
    write_space(tmp_path, "ok")
    one_line_usage_error(f"{tmp_path}/ok.py:Nope", "has no attribute 'Nope'")
    (tmp_path / "notspace.py").write_text("class NotSpace:\n    name = 'x'\n")
    one_line_usage_error(f"{tmp_path}/notspace.py:NotSpace", "not a subclass of hwlat.spaces.SearchSpace")
    (tmp_path / "broken.py").write_text("import torch\nraise RuntimeError('no GPU here\\nsecond line')\n")
    message = one_line_usage_error(f"{tmp_path}/broken.py:X", "cannot import search space file")
    assert message.endswith("RuntimeError: no GPU here")
    (tmp_path / "syntax.py").write_text("def (:\n")
    one_line_usage_error(f"{tmp_path}/syntax.py:X", "SyntaxError")
    one_line_usage_error("no_such_module_xyz:Space", "cannot import search space module no_such_module_xyz")
    write_space(tmp_path, "badname", name="bad name/..")
    one_line_usage_error(f"{tmp_path}/badname.py:MySpace", "must be 1-64 letters")
    write_space(tmp_path, "clash", name="nb201")
    one_line_usage_error(f"{tmp_path}/clash.py:MySpace", "named 'nb201', which is taken")
    one_line_usage_error(":", "must look like FILE.py:ClassName")
    with pytest.raises(UnknownSpaceError):
        get_space("")


def test_plugin_exports_in_spawned_workers(tmp_path: Path) -> None:
    """Workers re-create a file plug-in from its spec: the name alone means nothing in a fresh process."""
    path = write_space(tmp_path, "spawned", name="spawnspace")
    space = get_space(f"{path}:MySpace")
    arts = export_models([ModelSpec(space.name, "a"), ModelSpec(space.name, "b")], "onnx", tmp_path / "cache",
                         workers=2)
    assert [a.search_space for a in arts] == ["spawnspace", "spawnspace"]
    assert [a.arch for a in arts] == ["a", "b"] and arts[0].sha256 != arts[1].sha256
    assert all(a.resolution == 32 and Path(a.path).is_file() for a in arts)
