"""What users see: the measure table, ``--json`` on every result command, exit codes (busy = 3), ``--wait``,
quiet closed pipes. Real measurements on this machine with the short timing protocol of test_measure_local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from profiles import fast_profile

from harness.campaign import CampaignResult, DeviceOutcome
from harness.store import read_dataset
from harness.transport.local import lock_machine
from hwlat.cli.console import (
    EXIT_BUSY,
    EXIT_CLOSED_PIPE,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)

REPO = Path(__file__).resolve().parents[1]
ARCHS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
         "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"]


def hwlat(*args: str, rc: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=REPO)
    if rc is not None:
        assert proc.returncode == rc, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, subprocess.CompletedProcess]:
    """(profile, archs file, dataset, the human-readable run): two archs measured once for the module."""
    tmp = tmp_path_factory.mktemp("measured")
    archs = tmp / "archs.txt"
    archs.write_text("\n".join(ARCHS) + "\n")
    out = tmp / "ds"
    profile = fast_profile(tmp)
    proc = hwlat("measure", "--device", str(profile), "--archs", str(archs), "--out", str(out),
                 "--cache", str(tmp / "cache"), "--wait", "600")
    return profile, archs, out, proc


def test_measure_ends_with_a_latency_table(measured: tuple) -> None:
    _profile, _archs, out, proc = measured
    rows = {r["arch"]: r for r in read_dataset(out).to_pylist()}
    assert set(rows) == set(ARCHS)
    text = proc.stdout
    for header in ("median ms", "p90 ms", "p99 ms", "±CI95 ms", "runs", "status"):
        assert header in text
    for arch, row in rows.items():
        line = next(ln for ln in text.splitlines() if arch in ln)  # whole arch on one line, 200 columns piped
        assert f"{row['latency_ms']:.3f}" in line and str(row["n_runs"]) in line and row["status"] in line
    summary = next(ln for ln in text.splitlines() if ln.startswith("fastlocal: "))
    assert "2 measured" in summary and "0 already there" in summary and "median" in summary
    assert "Traceback" not in proc.stderr


def test_measure_json_is_one_document(measured: tuple, tmp_path: Path) -> None:
    profile, archs, out, _proc = measured
    proc = hwlat("measure", "--device", str(profile), "--archs", str(archs), "--out", str(out), "--json",
                 "--cache", str(tmp_path / "cache"), "--wait", "600")
    doc = json.loads(proc.stdout)  # nothing else on stdout
    assert doc["exit_code"] == EXIT_OK and doc["out"] == str(out)
    (dev,) = doc["devices"]
    assert dev["device"] == "fastlocal" and dev["already_there"] == 2 and dev["rows"] == 0 and dev["models"] == []
    again = hwlat("measure", "--device", str(profile), "--archs", str(archs), "--out", str(out), "--json",
                  "--remeasure", "--reference-every", "0", "--cache", str(tmp_path / "cache"), "--wait", "600")
    (dev,) = json.loads(again.stdout)["devices"]
    assert dev["rows"] == 2 and {m["arch"] for m in dev["models"]} == set(ARCHS)
    for m in dev["models"]:
        assert m["median_ms"] > 0 and m["p90_ms"] >= m["median_ms"] and m["ci95_half_ms"] >= 0
        assert m["n_runs"] >= 5 and m["status"] in ("ok", "unstable") and isinstance(m["arch_index"], int)


def test_table_is_cut_with_a_pointer_to_datasets_show() -> None:
    from rich.console import Console

    from hwlat.cli.measure import TABLE_ROWS, print_models

    models = [{"arch": f"arch-{i:02d}", "status": "ok", "median_ms": float(i + 1), "p90_ms": i + 1.5,
               "p99_ms": i + 2.0, "ci95_half_ms": 0.01, "robust_cv": 0.02, "n_runs": 50} for i in range(45)]
    models.append({"arch": "arch-broken", "status": "failed", "median_ms": None, "p90_ms": None, "p99_ms": None,
                   "ci95_half_ms": None, "robust_cv": None, "n_runs": 0})
    outcome = DeviceOutcome("dev", rows=46, status_counts={"ok": 45, "failed": 1}, models=models)
    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    print_models(console, CampaignResult("s1", Path("DS"), [outcome], 1.0, 0.5, 0.5))
    text = console.export_text()
    shown = [ln for ln in text.splitlines() if "arch-" in ln]
    assert len(shown) == TABLE_ROWS and "arch-00" in text and "arch-44" in text and "arch-broken" in text
    assert "… 26 more …" in text and "26 rows not shown: hwlat datasets show DS" in text
    assert "dev: 46 measured (1 failed, 45 ok), 0 already there; median 23.000 ms" in text


def test_datasets_show_latency_summary_and_json(measured: tuple) -> None:
    _profile, _archs, out, _proc = measured
    text = hwlat("datasets", "show", str(out)).stdout
    assert "median ms" in text and "p10 ms" in text and "p90 ms" in text and "ref drift" in text
    doc = json.loads(hwlat("datasets", "show", str(out), "--json").stdout)
    assert doc["devices"]["fastlocal"]["spaces"] == ["nb201"]  # lists stay lists
    (cfg,) = doc["configs"]
    lat = sorted(r["latency_ms"] for r in read_dataset(out).to_pylist())
    assert cfg["space"] == "nb201" and cfg["rows"] == len(lat) and cfg["threads"] == 1
    assert cfg["p10_ms"] <= cfg["median_ms"] <= cfg["p90_ms"]
    assert cfg["median_ms"] == pytest.approx(float(np.median(lat)))
    assert 0.0 <= cfg["unstable_share"] <= 1.0 and cfg["drift_pct"] is not None


def test_devices_json_keeps_lists() -> None:
    rows = {r["name"]: r for r in json.loads(hwlat("devices", "list", "--json").stdout)}
    assert isinstance(rows["local"]["providers"], list) and isinstance(rows["local"]["tags"], list)
    assert isinstance(rows["local"]["affinity"], list)
    (report,) = json.loads(hwlat("devices", "check", "local", "--json").stdout)
    assert report["device"] == "local" and isinstance(report["warnings"], list)
    assert report["fingerprint"]["cores_logical"] >= 1


def test_predictor_info_and_predict_json(tmp_path: Path) -> None:
    info = json.loads(hwlat("predictor", "info", "--json").stdout)  # the bundled model
    assert set(info["spaces"]) == {"nb201", "fbnet", "ofa", "autoformer"} and info["bytes"] > 0 and info["fingerprint"]
    devices = info["spaces"]["nb201"]["pretrained"]
    assert "epyc2c-ort-t1" in devices and info["spaces"]["nb201"]["transferred"] == []
    for space in ("nb201", "fbnet", "ofa", "autoformer"):  # the bundled runtimes beside onnxruntime (issue 14)
        assert {"epyc2c-ov-t1", "epyc2c-et-t1"} <= set(info["spaces"][space]["pretrained"]), info["spaces"][space]
    for space in ("fbnet", "ofa", "autoformer"):
        assert "epyc2c-ort-t1" in info["spaces"][space]["pretrained"]
    devices = ["epyc2c-ort-t1"]
    assert devices[0] in hwlat("predictor", "info").stdout
    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(ARCHS) + "\n")
    doc = json.loads(hwlat("predictor", "predict", "--model", info["model"], "--device", devices[0], "--space",
                           "nb201", "--archs", str(archs), "--out", str(tmp_path / "p.parquet"), "--json").stdout)
    assert doc["archs"] == 2 and doc["device"] == devices[0] and doc["min_ms"] <= doc["median_ms"] <= doc["max_ms"]
    # docs/predictor.md's example device is one the bundled model has
    assert f'"{devices[0]}"' in (REPO / "docs" / "predictor.md").read_text()


def test_busy_machine_is_refused_before_exporting_exit_3(measured: tuple, tmp_path: Path) -> None:
    profile, archs, _out, _proc = measured
    out, cache = tmp_path / "ds", tmp_path / "cache"
    fd = lock_machine("test", wait_s=600)  # other engineers' campaigns on this machine: queue behind them
    try:
        busy = hwlat("measure", "--device", str(profile), "--archs", str(archs), "--out", str(out),
                     "--cache", str(cache), rc=EXIT_BUSY)
        assert "another hwlat campaign" in busy.stderr and "--wait" in busy.stderr
        assert busy.stderr.count("\n") == 1 and "Traceback" not in busy.stderr
        assert not cache.exists() and not out.exists()  # refused before exporting or writing anything
        t0 = time.monotonic()
        waited = hwlat("measure", "--device", str(profile), "--archs", str(archs), "--out", str(out), "--wait",
                       "1", "--cache", str(cache), rc=EXIT_BUSY)
        assert time.monotonic() - t0 >= 1.0 and "waited 1 s" in waited.stderr
        prof = hwlat("profile", str(profile), "--budget", "2", "--batch", "2", "--out", str(tmp_path / "prof"),
                     "--cache", str(cache), rc=EXIT_BUSY)
        assert "another hwlat campaign" in prof.stderr and not (tmp_path / "prof").exists()
    finally:
        os.close(fd)


def test_wait_queues_until_the_machine_is_free(measured: tuple, tmp_path: Path) -> None:
    profile, archs, _out, _proc = measured
    out = tmp_path / "ds"
    fd = lock_machine("test", wait_s=600)  # other engineers' campaigns on this machine: queue behind them
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hwlat", "measure", "--device", str(profile), "--archs",
                                 str(archs), "--out", str(out), "--wait", "--json", "--cache", str(tmp_path / "c")],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        line = ""
        while "waiting" not in line:  # it says whom it waits for, then waits
            assert time.monotonic() < deadline and proc.poll() is None
            line = proc.stderr.readline()
        time.sleep(1.0)
        assert proc.poll() is None and not out.exists()
    finally:
        os.close(fd)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, stderr[-2000:]
    assert json.loads(stdout)["devices"][0]["rows"] == 2 and read_dataset(out).num_rows == 2


@pytest.mark.parametrize("args", [["devices", "list"], ["devices", "list", "--json"], ["predictor", "--help"]])
def test_closed_pipe_ends_quietly(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before hwlat writes a byte (`hwlat ... | head -0`)
    try:
        proc = subprocess.run([sys.executable, "-m", "hwlat", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=False, cwd=REPO)
    finally:
        os.close(write_end)
    assert proc.stderr == "", proc.stderr
    assert proc.returncode in (EXIT_OK, EXIT_CLOSED_PIPE)


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = {EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_BUSY, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE}
    assert len(codes) == 7
    readme = (REPO / "README.md").read_text()
    for code in codes:
        assert f"| {code} |" in readme


# ---------------------------------------------------------------------------------------------- profile + report
#: Appended to a copy of report.html: checks what a reader would see and writes the verdict into the DOM,
#: which `chromium --dump-dom` prints.
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const imgs = [...document.images];
  const out = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > vw + 1 || e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0
                 && getComputedStyle(e).overflowX !== 'visible')
    .map(e => e.tagName + ' ' + (e.textContent || e.getAttribute('src') || '').slice(0, 40));
  const res = {images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0)
                 .map(i => i.getAttribute('src')),
               page_width: document.documentElement.scrollWidth, viewport: vw, overflowing: out,
               title: document.title};
  const pre = document.createElement('pre'); pre.id = 'check-result'; pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    import shutil

    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The one real `hwlat profile` run of this module (bundled predictor, 2 rounds of 2, short timing)."""
    tmp = tmp_path_factory.mktemp("profiled")
    out = tmp / "prof"
    proc = hwlat("profile", str(fast_profile(tmp)), "--space", "nb201", "--budget", "4", "--batch", "2",
                 "--out", str(out), "--cache", str(tmp / "cache"), "--json", "--wait", "900")
    return out, proc


def test_profile_json_pareto_and_flops(profiled: tuple) -> None:
    import csv

    import pyarrow.parquet as pq

    from hwlat.spaces import get_space

    out, proc = profiled
    doc = json.loads(proc.stdout)
    assert doc["device"] == "fastlocal" and doc["space"] == "nb201" and doc["stopped"].startswith("budget")
    assert [r["round"] for r in doc["rounds"]] == [0, 1] and doc["rounds"][-1]["measured"] == 4
    assert Path(doc["report"]) == out / "report.html" and Path(doc["predictions"]).exists()
    state = json.loads((out / "state.json").read_text())
    assert doc["level"] == state["level"]  # the level the predictions are for (null: said on stderr)
    assert ("predictions are for the drift reference" in proc.stderr) == (doc["level"] is not None)
    assert ("not put on one drift reference level" in proc.stderr) == (doc["level"] is None)
    assert "round 0" in proc.stderr and "report" in proc.stderr
    # FLOPs mean the same everywhere: the predictions' analytic count equals the exporter's (2 x MACs)
    preds = {r["arch"]: r for r in pq.read_table(out / "predictions.parquet").to_pylist()}
    rows = read_dataset(out / "measurements").to_pylist()
    for row in rows:
        assert preds[row["arch"]]["flops"] == row["flops"]
    space = get_space("nb201")
    with open(out / "pareto.csv", newline="") as fh:
        front = list(csv.DictReader(fh))
    assert front and not any(space.degenerate(r["arch"]) for r in front)
    lat = [float(r["latency_ms"]) for r in front]
    flops = [int(r["flops"]) for r in front]
    assert lat == sorted(lat) and flops == sorted(flops) and len(set(flops)) == len(flops)
    # nothing outside the front has more FLOPs for less latency than a front member
    real = [p for p in preds.values() if not space.degenerate(p["arch"])]
    for f, ms in zip(flops, lat, strict=True):
        assert not any(p["flops"] > f and p["latency_ms"] < ms for p in real)


def test_report_in_a_real_browser(profiled: tuple, tmp_path: Path) -> None:
    """The report loads in chromium, every image resolves, nothing is wider than a 1280-pixel window."""
    import re
    import shutil

    from hwlat.spaces import get_space

    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium, as README's test command does)")
    out, _proc = profiled
    html = (out / "report.html").read_text()
    for needle in ("onnxruntime", "CPUExecutionProvider", "threads", "hwlat (measured with)", "95% CI",
                   "Pareto front", "2 × multiply-accumulates"):
        assert needle in html, needle
    fastest = html[html.index("fastest architectures"):]
    listed = re.findall(r"<code>([^<]+)</code>", fastest)[:10]
    assert len(listed) == 10 and not any(get_space("nb201").degenerate(a) for a in listed)
    page = out / "browser-check.html"  # beside the report, so its relative image paths resolve
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="check-result">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                        .replace("&gt;", ">"))
    assert result["title"] == "hwlat profile: fastlocal / nb201"
    assert result["images"] == 4 and result["broken"] == [], result
    assert result["page_width"] <= result["viewport"] and result["overflowing"] == [], result
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
