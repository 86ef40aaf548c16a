"""Issue 15, class 4: concurrent writers and damaged files, against real processes and real Parquet files.

Promises (docs/reliability-store.md): one writer per dataset folder, refused before it exports or deletes
anything; a damaged part file is named by every reader, costs only its own rows, and is moved aside by
the next ``hwlat measure``, which then measures its rows again; a kill at any point of a merge leaves every
row visible; ``--out`` inside a dataset or over foreign Parquet is refused; the local machine lock does not
depend on $TMPDIR.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from agents.errors import UsageError
from harness.store import (
    LOCK_FILE,
    QUARANTINE_DIR,
    DamagedPartError,
    DatasetBusyError,
    DatasetStore,
    read_dataset,
    scan_dataset,
    summarize,
)
from harness.transport import local as local_transport
from hwlat.cli.console import EXIT_BUSY, EXIT_FAILED

REPO = Path(__file__).resolve().parents[1]


def _row(i: int, session: str = "s1") -> dict:
    return {"schema_version": 1, "row_id": f"{session}-row{i}", "session_id": session, "config_id": "cfg",
            "arch": f"arch{i}", "model_sha256": f"{i:064x}", "format": "onnx", "status": "ok",
            "latency_ms": 1.0 + i, "raw_ms": [1.0 + i + k / 100 for k in range(40)],
            "finished_at": "2026-11-22T01:00:00+00:00"}


def _profile(tmp_path: Path, min_time_s: float = 0.0) -> Path:
    path = tmp_path / "fastlocal.toml"
    path.write_text(f"""
name = "fastlocal"
host = "local"
workdir = "{tmp_path / 'agent'}"
[timing]
warmup_min_runs = 2
warmup_min_s = 0.0
min_runs = 5
min_time_s = {min_time_s}
max_runs = 200
max_time_s = {max(2.0, min_time_s)}
""")
    return path


def _measure(*args: str) -> list[str]:
    return [sys.executable, "-m", "hwlat", "measure", "--space", "nb201", *args]


def _run(argv: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
                          env={**os.environ, **(env or {})})


def _locked(path: Path) -> bool:
    """True when some process holds an flock on ``path`` (probe with a non-blocking shared lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _measured_rows_ok(out: Path) -> list[dict]:
    """Every row, after checking none is ``ok`` without a real timed loop behind it."""
    rows = read_dataset(out).to_pylist()
    for r in rows:
        if r["status"] in ("ok", "unstable"):
            assert r["n_runs"] >= 5 and len(r["raw_ms"]) == r["n_runs"] and r["latency_ms"] > 0
    return rows


# ---------------------------------------------------------------------------------------- concurrent writers
def test_second_measure_on_the_same_out_is_refused_before_export_and_deletes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    profile = _profile(tmp_path, min_time_s=1.5)  # ~15 s of measuring: a refused start takes seconds
    first = subprocess.Popen(_measure("--device", str(profile), "--count", "6", "--seed", "3", "--out", str(out),
                                      "--cache", str(tmp_path / "cache-a")),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    in_flight = out / "device=fastlocal" / "search_space=nb201" / ".part-inflight-000001.parquet.x1y2.tmp"
    try:
        deadline = time.monotonic() + 120
        while not _locked(out / LOCK_FILE):  # the first writer holds the dataset (it is exporting now)
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        in_flight.parent.mkdir(parents=True, exist_ok=True)
        in_flight.write_bytes(b"PAR1 a writer's temp file, half written")

        def second(phase: str) -> subprocess.Popen:
            return subprocess.Popen(_measure("--device", str(profile), "--count", "6", "--seed", "3", "--out",
                                             str(out), "--cache", str(tmp_path / f"cache-{phase}"), "--remeasure"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)

        # trigger 1: while the first one exports; trigger 2: once its agent measures
        seconds = {"export": second("export")}
        while not any((tmp_path / "agent" / "runs").glob("*")):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seconds["measure"] = second("measure")
        for phase, proc in seconds.items():
            _, err = proc.communicate(timeout=300)
            # busy (exit 3): the machine lock or the dataset's writer lock, whichever the second meets first
            assert proc.returncode == EXIT_BUSY, (phase, err)
            assert f"pid {first.pid}" in err and "another hwlat" in err
            assert len(err.strip().splitlines()) == 1
            cache_b = tmp_path / f"cache-{phase}"
            assert not cache_b.exists() or not any(cache_b.rglob("*.onnx")), "refused, yet it exported"
        assert in_flight.exists(), "the second writer deleted the first one's in-flight file"
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    rows = _measured_rows_ok(out)
    assert len(rows) == 6 and len({r["model_sha256"] for r in rows}) == 6
    assert len({r["session_id"] for r in rows}) == 1  # all from the first campaign, none from the refused ones


def test_writer_lock_in_process(tmp_path: Path) -> None:
    first = DatasetStore(tmp_path / "ds")
    first.ensure_writable()
    with pytest.raises(DatasetBusyError, match=f"pid {os.getpid()}"):
        DatasetStore(tmp_path / "ds").ensure_writable()
    first.close()
    DatasetStore(tmp_path / "ds").ensure_writable()  # released: the next writer gets it


# ---------------------------------------------------------------------------------------------- damaged files
def _damage(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif kind == "flipped page bytes":  # footer intact: only the page checksum can tell
        start = _page_payload_end(path) - 16
        path.write_bytes(data[:start] + bytes(b ^ 0x5A for b in data[start:start + 16]) + data[start + 16:])
        pq.read_metadata(path)  # the footer still parses ...
        with pytest.raises(OSError, match=r"(?i)crc|checksum"):  # ... and the flip sits where the CRC covers it
            pq.read_table(path, page_checksum_verification=True)


def _page_payload_end(path: Path) -> int:
    """Where the largest column chunk ends: its last bytes are its last page's payload, which the page CRC
    covers. A fixed offset into the file can land in a page header instead, whose statistics no CRC covers,
    so whether the damage was detectable would depend on the file's content."""
    meta = pq.read_metadata(path)
    chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
    chunk = max(chunks, key=lambda ch: ch.total_compressed_size)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    return start + chunk.total_compressed_size


@pytest.mark.parametrize("kind", ["zero bytes", "truncated", "garbage", "flipped page bytes"])
def test_one_damaged_part_is_named_and_costs_only_its_rows(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "ds"
    store = DatasetStore(root)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [_row(i) for i in range(3)])
    bad = store.append("dev-a", "nb201", "s2", [_row(i, "s2") for i in range(3, 5)])
    store.append("dev-b", "nb201", "s3", [_row(9, "s3")])
    store.close()
    _damage(kind, bad)

    table, damaged = scan_dataset(root)
    assert table.num_rows == 4 and [d.path for d in damaged] == [bad]
    with pytest.raises(DamagedPartError, match=bad.name):
        read_dataset(root)
    summary = summarize(root)
    assert summary["rows"] == 4 and str(bad) in str(summary["damaged"][0])

    writer = DatasetStore(root)
    writer.ensure_writable()  # moves it aside, keeps the bytes
    [(was, now, why)] = writer.quarantined
    assert was == bad and now == root / QUARANTINE_DIR / bad.relative_to(root) and now.exists() and why
    assert read_dataset(root).num_rows == 4
    assert {k.model_key for k in writer.measured_keys("dev-a")} == {f"{i:064x}" for i in range(3)}


def test_measure_quarantines_damaged_parts_and_measures_their_rows_again(tmp_path: Path) -> None:
    out, cache = tmp_path / "ds", tmp_path / "cache"
    profile = _profile(tmp_path)
    base = ["--device", str(profile), "--seed", "5", "--out", str(out), "--cache", str(cache)]
    assert _run(_measure(*base, "--count", "2")).returncode == 0
    assert _run(_measure(*base, "--count", "4")).returncode == 0
    parts = sorted(out.rglob("part-*.parquet"))
    assert len(parts) == 2  # one merged file per session
    _damage("truncated", parts[0])
    _damage("flipped page bytes", parts[1])

    show = _run([sys.executable, "-m", "hwlat", "datasets", "show", str(out)])
    assert show.returncode == EXIT_FAILED
    assert str(parts[0]) in show.stderr and str(parts[1]) in show.stderr and "Traceback" not in show.stderr

    again = _run(_measure(*base, "--count", "4"))
    assert again.returncode == EXIT_FAILED, again.stderr  # data was lost from the dataset: never exit 0
    assert again.stderr.count("damaged part file") == 2 and QUARANTINE_DIR in again.stderr
    rows = _measured_rows_ok(out)
    assert len(rows) == 4 and len({r["model_sha256"] for r in rows}) == 4  # every arch measured again
    assert sorted(p.name for p in (out / QUARANTINE_DIR).rglob("*.parquet")) == sorted(p.name for p in parts)

    final = _run(_measure(*base, "--count", "4"))
    assert final.returncode == 0 and len(read_dataset(out)) == 4


# ----------------------------------------------------------------------------------------------- compaction
def test_a_kill_at_any_point_of_compaction_leaves_every_row_visible(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the merge before each of its file operations: the rename into place, then each delete."""

    class Killed(BaseException):
        pass

    n_parts = 4
    real_unlink, real_replace = Path.unlink, os.replace
    for stop_at in range(n_parts + 1):
        root = tmp_path / f"ds{stop_at}"
        store = DatasetStore(root)
        store.ensure_writable()
        for i in range(n_parts):
            store.append("dev-a", "nb201", "s1", [_row(i)])
        ops = {"n": 0}

        def step(ops: dict = ops, stop_at: int = stop_at) -> None:
            if ops["n"] == stop_at:
                raise Killed
            ops["n"] += 1

        def dying_replace(src: str, dst: str, step: object = step) -> None:
            if Path(dst).name == "part-s1.parquet":
                step()
            real_replace(src, dst)

        def dying_unlink(self: Path, *args: object, step: object = step, **kwargs: object) -> None:
            if self.name.startswith("part-"):
                step()
            real_unlink(self, *args, **kwargs)

        monkeypatch.setattr(os, "replace", dying_replace)
        monkeypatch.setattr(Path, "unlink", dying_unlink)
        with pytest.raises(Killed):
            store.compact_session("s1")
        monkeypatch.setattr(os, "replace", real_replace)
        monkeypatch.setattr(Path, "unlink", real_unlink)
        store.close()
        ids = read_dataset(root).column("row_id").to_pylist()
        assert sorted(ids) == sorted(f"s1-row{i}" for i in range(n_parts)), f"stopped at operation {stop_at}"
        DatasetStore(root).ensure_writable()  # the next writer finishes the merge
        names = sorted(p.name for p in (root / "device=dev-a" / "search_space=nb201").glob("*.parquet"))
        assert names == (["part-s1.parquet"] if stop_at else [f"part-s1-{i:06d}.parquet" for i in range(1, 5)])
        assert sorted(read_dataset(root).column("row_id").to_pylist()) == sorted(ids)


def test_sigkill_during_compaction_in_a_real_process(tmp_path: Path) -> None:
    """A real writer process, SIGKILLed at different moments of its merge; every acknowledged row stays."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.store import DatasetStore\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_reliability_store import _row\n"
        "s = DatasetStore(Path(sys.argv[1])); s.ensure_writable()\n"
        "for i in range(40):\n"
        "    s.append('dev-a', 'nb201', 's1', [_row(i)]); print(f's1-row{i}', flush=True)\n"
        "print('compact', flush=True)\n"
        "s.compact_session('s1')\n"
        "print('done', flush=True)\n"
    )
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1):
        root = tmp_path / f"ds{delay}"
        proc = subprocess.Popen([sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE, text=True,
                                cwd=REPO)
        assert proc.stdout is not None
        acked = []
        for line in proc.stdout:
            if line.strip() == "compact":
                time.sleep(delay)
                proc.kill()
                break
            acked.append(line.strip())
        proc.wait()
        visible = read_dataset(root).column("row_id").to_pylist()
        assert sorted(visible) == sorted(acked) and len(acked) == 40, f"killed {delay} s into the merge"


# ------------------------------------------------------------------------------------------- refused --out
def _foreign_pandas(folder: Path) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame({"x": [1, 2]}).to_parquet(folder / "results.parquet")


def _foreign_in_layout(folder: Path) -> None:
    part = folder / "device=a" / "search_space=nb201"
    part.mkdir(parents=True)
    pd.DataFrame({"arch": ["a"], "latency_ms": [1.0]}).to_parquet(part / "part-x.parquet")


def _refused_target(tmp_path: Path, case: str) -> str | Path:
    ds = tmp_path / "ds"
    store = DatasetStore(ds)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [_row(0)])
    store.close()
    if case == "inside-unlocked-dataset":  # written by an hwlat without the writer lock
        (ds / LOCK_FILE).unlink()
    if case == "foreign":
        _foreign_pandas(tmp_path / "theirs")
    if case == "foreign-layout":
        _foreign_in_layout(tmp_path / "theirs2")
    return {
        "partition": ds / "device=dev-a" / "search_space=nb201",
        "device-folder": ds / "device=dev-a",
        "inside-dataset": ds / "sub",
        "inside-unlocked-dataset": ds / "sub",
        "foreign": tmp_path / "theirs",
        "foreign-layout": tmp_path / "theirs2",
        "empty": "",
    }[case]


@pytest.mark.parametrize("case", ["partition", "device-folder", "inside-dataset", "inside-unlocked-dataset",
                                  "foreign", "foreign-layout", "empty"])
def test_out_inside_a_dataset_or_over_foreign_parquet_is_refused(tmp_path: Path, case: str) -> None:
    target = _refused_target(tmp_path, case)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UsageError) as info:
        DatasetStore(target).ensure_writable()  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created, nothing moved


@pytest.mark.parametrize("case", ["partition", "foreign"])
def test_refused_out_at_the_cli_exit_2_before_export(tmp_path: Path, case: str) -> None:
    target = _refused_target(tmp_path, case)
    before = sorted(tmp_path.rglob("*"))
    proc = _run(_measure("--device", "local", "--count", "1", "--out", str(target), "--cache",
                         str(tmp_path / "cache")))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()  # the progress bar, already started, may leave an empty line before it
    assert err.startswith("hwlat: ") and len(err.splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, nothing exported (no cache folder)


# -------------------------------------------------------------------------------------------- machine lock
def test_local_machine_lock_does_not_depend_on_tmpdir(tmp_path: Path) -> None:
    """A campaign started with another $TMPDIR still finds the lock of the one measuring; one started with
    another $HWLAT_MACHINE_LOCK does not."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "from harness.transport.local import open_machine_lock\n"
         "fd = open_machine_lock(); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        other_tmp = tmp_path / "other"
        other_tmp.mkdir()
        probe = _run([sys.executable, "-c",
                      "from harness.transport.local import LOCAL_LOCK, LocalTransport\n"
                      "from harness.devices import resolve_device\n"
                      "t = LocalTransport(resolve_device(__import__('sys').argv[1]))\n"
                      "try:\n    t.connect()\nexcept Exception as e:\n    print(type(e).__name__, e)\n",
                      str(_profile(tmp_path))], env={"TMPDIR": str(other_tmp)})
        assert "DeviceBusyError" in probe.stdout and "another hwlat campaign" in probe.stdout, probe
        assert Path("/var/tmp/hwlat-local-device.lock") == local_transport.LOCAL_LOCK
        # $HWLAT_MACHINE_LOCK names a lock of its own (cores split on purpose): that campaign is not refused
        apart = _run(probe.args, env={"TMPDIR": str(other_tmp),
                                      local_transport.LOCK_ENV: str(tmp_path / "apart.lock")})
        assert apart.returncode == 0 and apart.stdout == "", apart
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["truncated", "flipped page bytes"])
def test_predictor_reader_names_the_damaged_part(tmp_path: Path, kind: str) -> None:
    """The predictor reads datasets with its own reader (it may not import the store): same promise."""
    from predictor.data import load_table

    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    root = tmp_path / "ds"
    store = DatasetStore(root)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [{**_row(0), "arch": arch}])
    bad = store.append("dev-a", "nb201", "s2", [{**_row(1, "s2"), "arch": arch}])
    store.close()
    _damage(kind, bad)
    with pytest.raises(UsageError, match=f"cannot read Parquet data {bad}"):
        load_table([root])
