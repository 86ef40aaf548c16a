"""End to end on this machine: `hwlat measure` with real exports, a real agent and real onnxruntime/LiteRT."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from profiles import fast_profile, rows_on_disk

from harness.store import read_dataset
from hwlat.cli.console import EXIT_BUSY

REPO = Path(__file__).resolve().parents[1]
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def hwlat(*args: str, cache: Path | None = None, check_rc: int | None = 0,
          timeout: float = 600) -> subprocess.CompletedProcess:
    extra = ["--cache", str(cache)] if cache is not None and args and args[0] == "measure" else []
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args, *extra], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=REPO)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-2000:]
    return proc


def test_contract_five_ok_rows_then_nothing_new(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "ds"
    hwlat("measure", "--device", "local", "--space", "nb201", "--count", "5", "--seed", "1", "--out", str(out),
          cache=cache)
    table = read_dataset(out)
    rows = table.to_pylist()
    assert len(rows) == 5
    assert {r["status"] for r in rows} == {"ok"} or all(r["status"] in ("ok", "unstable") for r in rows)
    for r in rows:
        assert r["device"] == "local" and r["search_space"] == "nb201"
        assert len(r["raw_ms"]) == r["n_runs"] >= 30
        # raw_ms holds every round, discarded ones too; the statistics are over the kept rounds' samples
        bounds = [0, *itertools.accumulate(r["round_n_runs"])]
        kept = [x for k, keep in enumerate(r["round_kept"]) if keep for x in r["raw_ms"][bounds[k]:bounds[k + 1]]]
        assert min(kept) == pytest.approx(r["min_ms"])
        assert r["latency_ms"] > 0 and r["load_ms"] > 0 and r["first_ms"] > 0
        assert r["flops"] > 0 and r["params"] > 0 and r["input_shape"] == [1, 3, 32, 32]
        assert r["runtime"] == "onnxruntime" and r["threads"] == 1 and r["cpu_model"]
        assert r["ref_latency_ms"] and r["ref_model_sha256"]
        assert r["arch_index"] is not None
    assert len({r["model_sha256"] for r in rows}) == 5
    files_before = sorted(out.rglob("*.parquet"))
    second = hwlat("measure", "--device", "local", "--space", "nb201", "--count", "5", "--seed", "1",
                   "--out", str(out), cache=cache)
    assert read_dataset(out).num_rows == 5
    assert sorted(out.rglob("*.parquet")) == files_before
    assert "Traceback" not in second.stderr


def test_kill_halfway_then_rerun_completes_exactly_the_rest(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "ds"
    profile = fast_profile(tmp_path)
    args = [sys.executable, "-m", "hwlat", "measure", "--device", str(profile), "--space", "nb201",
            "--count", "30", "--seed", "7", "--out", str(out), "--cache", str(cache)]
    # export first, so the kill lands in the measuring phase
    hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "30", "--seed", "7", "--out",
          str(tmp_path / "warm"), "--cache", str(cache), "--reference-every", "0")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 300
    while not (out.exists() and rows_on_disk(out) >= 12):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_dataset(out).num_rows
    assert 12 <= killed_at < 30
    hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "30", "--seed", "7", "--out",
          str(out), "--cache", str(cache))
    table = read_dataset(out)
    shas = table.column("model_sha256").to_pylist()
    assert len(shas) == 30 and len(set(shas)) == 30
    assert len(set(table.column("session_id").to_pylist())) == 2
    # the agent of the killed coordinator did not keep running
    time.sleep(0.5)
    agents = subprocess.run(["pgrep", "-f", f"agents run {tmp_path / 'agent'}"], capture_output=True, text=True)
    assert agents.stdout.strip() == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--space", "nasbench301"], "unknown search space"),
        (["--space", "nb201", "--archs", "ARCHFILE"], "nb201 arch"),
        (["--space", "fbnet", "--archs", "ARCHFILE"], "fbnet"),
        (["--device", "no-such-board"], "unknown device"),
        (["--models", "/nonexistent/dir"], "not a folder"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], needle: str) -> None:
    archfile = tmp_path / "archs.txt"
    archfile.write_text("|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|\n")
    args = [str(archfile) if a == "ARCHFILE" else a for a in args]
    out = tmp_path / "ds"
    proc = hwlat("measure", *args, "--out", str(out), check_rc=2)
    assert needle in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_unwritable_output_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = hwlat("measure", "--count", "1", "--out", str(blocker / "ds"), check_rc=2)
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def test_archs_file_threads_and_help(tmp_path: Path, cache: Path) -> None:
    archfile = tmp_path / "archs.txt"
    archfile.write_text(f"# two archs\n{NB201_ARCH}\n\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    out = tmp_path / "ds"
    proc = hwlat("measure", "--device", str(fast_profile(tmp_path)), "--archs", str(archfile), "--threads", "2",
                 "--out", str(out), cache=cache)
    # two threads on a worker that may use at most two CPUs (the 2-core CI machine): said once, as a warning
    warned = "the runtime runs 2 threads on the" in proc.stderr
    assert warned == (len(os.sched_getaffinity(0)) <= 2)
    rows = read_dataset(out).to_pylist()
    assert sorted(r["arch"] for r in rows) == sorted([NB201_ARCH, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
    assert {r["threads"] for r in rows} == {2}
    for cmd in (["--help"], ["measure", "--help"], ["datasets", "show", "--help"]):
        assert "usage" in hwlat(*cmd).stdout.lower()


def test_models_dir_measures_user_onnx_as_is(tmp_path: Path, cache: Path) -> None:
    import shutil

    from harness.export import export_models
    from harness.records import ModelSpec

    arts = export_models([ModelSpec("nb201", NB201_ARCH)], "onnx", cache)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(arts[0].path, models / "mine.onnx")
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(fast_profile(tmp_path)), "--models", str(models), "--out", str(out))
    rows = read_dataset(out).to_pylist()
    assert len(rows) == 1
    assert rows[0]["search_space"] == "onnx" and rows[0]["arch"] == "mine"
    assert rows[0]["model_sha256"] == arts[0].sha256 and rows[0]["input_shape"] == [1, 3, 32, 32]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.onnx").write_bytes(b"not a model")
    proc = hwlat("measure", "--models", str(bad), "--out", str(tmp_path / "ds2"), check_rc=2)
    assert "broken.onnx" in proc.stderr


def test_datasets_show(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(fast_profile(tmp_path)), "--count", "2", "--seed", "3", "--out", str(out),
          cache=cache)
    shown = hwlat("datasets", "show", str(out)).stdout
    assert "fastlocal" in shown and "nb201" in shown and "2 rows" in shown
    proc = hwlat("datasets", "show", str(tmp_path / "missing"), check_rc=2)
    assert "no dataset" in proc.stderr


@pytest.mark.tflite
def test_fbnet_through_litert(tmp_path: Path, cache: Path) -> None:
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(fast_profile(tmp_path)), "--space", "fbnet", "--format", "tflite",
          "--count", "1", "--seed", "1", "--reference-every", "0", "--out", str(out), cache=cache)
    rows = read_dataset(out).to_pylist()
    assert len(rows) == 1
    r = rows[0]
    assert (r["search_space"], r["format"], r["runtime"]) == ("fbnet", "tflite", "litert")
    assert r["status"] in ("ok", "unstable") and r["latency_ms"] > 0 and len(r["raw_ms"]) == r["n_runs"]
    assert len(r["arch"].split("|")) == 22



def test_one_local_campaign_at_a_time(tmp_path: Path, cache: Path) -> None:
    """A second campaign on this machine is refused while the first holds the machine lock."""
    from harness.devices import load_profile_file
    from harness.transport.local import LocalTransport

    profile = fast_profile(tmp_path)
    holder = LocalTransport(load_profile_file(profile))
    holder.connect()
    out = tmp_path / "ds"
    try:
        busy = hwlat("measure", "--device", str(profile), "--count", "1", "--seed", "3", "--out", str(out),
                     cache=cache, check_rc=EXIT_BUSY)
        assert "another hwlat campaign" in busy.stderr and "Traceback" not in busy.stderr
        assert not list(out.rglob("*.parquet"))
    finally:
        holder.close()
    hwlat("measure", "--device", str(profile), "--count", "1", "--seed", "3", "--out", str(out), cache=cache)
    assert read_dataset(out).num_rows == 1
