"""`hwlat measure` end to end with the plug-in spaces: a user's file, OFA and AutoFormer (real onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

from profiles import fast_profile
from test_measure_local import hwlat

from harness.store import read_dataset

EXAMPLE_SPEC = "docs/examples/my_space.py:TinyConvSpace"


def measure(tmp_path: Path, cache: Path, space: str, *extra: str) -> list[dict]:
    out = tmp_path / "ds"
    proc = hwlat("measure", "--device", str(fast_profile(tmp_path)), "--space", space, "--count", "2",
                 "--out", str(out), *extra, cache=cache)
    assert "Traceback" not in proc.stderr
    return read_dataset(out).to_pylist()


def test_measure_a_plugin_file(tmp_path: Path, cache: Path) -> None:
    rows = measure(tmp_path, cache, EXAMPLE_SPEC)
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"ok", "unstable"}
    assert {r["search_space"] for r in rows} == {"tinyconv"}  # the space's name, not the spec
    assert (tmp_path / "ds" / "device=fastlocal" / "search_space=tinyconv").is_dir()
    assert all(r["arch_index"] is not None and r["input_shape"] == [1, 3, 32, 32] for r in rows)
    assert all(r["latency_ms"] > 0 and r["flops"] > 0 for r in rows)


def test_measure_ofa_takes_the_resolution_from_the_arch(tmp_path: Path, cache: Path) -> None:
    rows = measure(tmp_path, cache, "ofa")
    assert len(rows) == 2 and {r["search_space"] for r in rows} == {"ofa"}
    for r in rows:
        res = json.loads(r["arch"])["r"]
        assert r["resolution"] == res and r["input_shape"] == [1, 3, res, res]
        assert r["status"] in ("ok", "unstable") and r["latency_ms"] > 0 and r["params"] > 3_000_000


def test_measure_ofa_refuses_a_conflicting_resolution(tmp_path: Path, cache: Path) -> None:
    proc = hwlat("measure", "--device", str(fast_profile(tmp_path)), "--space", "ofa", "--count", "2",
                 "--resolution", "100", "--out", str(tmp_path / "ds"), cache=cache, check_rc=2)
    assert proc.stderr.strip().startswith("hwlat: ofa arch ") and "cannot be built at 100" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_measure_autoformer(tmp_path: Path, cache: Path) -> None:
    rows = measure(tmp_path, cache, "autoformer")
    assert len(rows) == 2 and {r["search_space"] for r in rows} == {"autoformer"}
    assert all(r["input_shape"] == [1, 3, 224, 224] and r["status"] in ("ok", "unstable") for r in rows)


def test_measure_autoformer_refuses_a_resolution_off_the_patch_grid(tmp_path: Path, cache: Path) -> None:
    proc = hwlat("measure", "--device", str(fast_profile(tmp_path)), "--space", "autoformer", "--count", "1",
                 "--resolution", "200", "--out", str(tmp_path / "ds"), cache=cache, check_rc=2)
    assert proc.stderr.strip() == "hwlat: autoformer needs a resolution divisible by the patch size 16, got 200"
    assert not (tmp_path / "ds").exists()
