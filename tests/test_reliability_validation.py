"""Issue 15, class 5: validation at the edge. Bad input is one line ``hwlat: ...``, exit 2, nothing written.

Promises (docs/reliability-store.md, "Validation at the edge"): every number of a profile has a declared
range (finite, timeouts > 0), strings hold no NUL, env names are names, workdir is not empty, two profiles
of one name are refused; ``--archs`` with binary data and empty option values are refused; predictor
training steps, model files (missing keys, wrong shapes, oversized nets, NaN, pickled code), bench tasks and
implausible latencies are refused before anything is trained or written.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from agents.errors import ProfileError, UsageError
from harness.devices import load_profile_file, resolve_devices
from hwlat.cli.main import main
from predictor.api import FORMAT, Predictor, load
from predictor.bench import Task, validate_tasks
from predictor.data import load_table, reduce_frame
from predictor.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "predictor_small.parquet"
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err


def _one_line_usage(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert err.startswith("hwlat: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


# -------------------------------------------------------------------------------------------------- profiles
PROFILE_CASES = {
    "negative runs": ('[timing]\nmin_runs = -1\n', "timing.min_runs"),
    "zero time budget": ('[timing]\nmax_time_s = 0\n', "timing.max_time_s"),
    "nan target": ('[timing]\nci_rel_target = nan\n', "timing.ci_rel_target"),
    "infinite timeout": ('[timeouts]\nmodel_s = inf\n', "timeouts.model_s"),
    "negative timeout": ('[timeouts]\nconnect_s = -3\n', "timeouts.connect_s"),
    "max below min": ('[timing]\nmin_runs = 50\nmax_runs = 10\n', "timing.max_runs"),
    "empty workdir": ('workdir = ""\n', "workdir"),
    "env name with =": ('env = { "A=B" = "1" }\n', "env.A=B"),
    "env value with NUL": ('env = { A = "x\\u0000y" }\n', "env.A"),
    "NUL in python": ('python = "/usr/bin/python3\\u0000 -c evil"\n', "python"),
    "huge threads": ('threads = 100000000000\n', "threads"),
    "zero rounds": ('[timing]\nrounds = 0\n', "timing.rounds"),
    "negative re-measure budget": ('[timing]\nremeasure_max = -1\n', "timing.remeasure_max"),
    "zero far threshold": ('[timing]\nremeasure_far_pct = 0\n', "timing.remeasure_far_pct"),
    "busy above 100%": ('[timing]\nremeasure_busy_pct = 150\n', "timing.remeasure_busy_pct"),
    "fresh_worker not a boolean": ('[timing]\nfresh_worker = 1\n', "timing.fresh_worker"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_bad_profile_values_name_file_and_key(tmp_path: Path, case: str) -> None:
    body, key = PROFILE_CASES[case]
    top, _, rest = body.partition("[")
    path = tmp_path / "board.toml"
    path.write_text(f'name = "board"\nhost = "local"\n{top}' + (f"[{rest}" if rest else ""))
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert str(path) in str(info.value) and f"key '{key}'" in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_profiles_at_the_cli_exit_2_before_anything_runs(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\nhost = "local"\n'.encode("latin-1"))
    rc, err = _cli(capsys, "measure", "--device", str(latin1), "--out", str(out))
    _one_line_usage(rc, err, str(latin1), "not UTF-8")
    nan = tmp_path / "nan.toml"
    nan.write_text('name = "nan"\nhost = "local"\n[timing]\nmin_time_s = nan\n')
    rc, err = _cli(capsys, "measure", "--device", str(nan), "--out", str(out))
    _one_line_usage(rc, err, str(nan), "timing.min_time_s", "finite")
    # two different profiles with one name: their rows would mix under one device name
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder, workdir in (("a", "/tmp/one"), ("b", "/tmp/two")):
        (tmp_path / folder / "twin.toml").write_text(f'name = "twin"\nhost = "local"\nworkdir = "{workdir}"\n')
    rc, err = _cli(capsys, "measure", "--device", str(tmp_path / "a" / "twin.toml"), "--device",
                   str(tmp_path / "b" / "twin.toml"), "--out", str(out))
    _one_line_usage(rc, err, str(tmp_path / "b" / "twin.toml"), "key 'name'", "unique")
    assert not out.exists()
    # the same file twice is one device, not a conflict
    assert len(resolve_devices([str(tmp_path / "a" / "twin.toml")] * 2)) == 1


# ------------------------------------------------------------------------------------------- archs and --out
def test_arch_files_with_binary_data_and_empty_values_are_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    nul = tmp_path / "nul.txt"
    nul.write_bytes(ARCH.encode() + b"\n" + ARCH.encode()[:20] + b"\x00\x01\x02" + b"\n")
    rc, err = _cli(capsys, "measure", "--archs", str(nul), "--out", str(out))
    _one_line_usage(rc, err, str(nul), "binary data")
    noise = tmp_path / "noise.txt"
    noise.write_bytes(bytes(range(256)) * 4)
    rc, err = _cli(capsys, "measure", "--archs", str(noise), "--out", str(out))
    _one_line_usage(rc, err, str(noise))
    csv = tmp_path / "archs.csv"
    csv.write_bytes(b"arch\n" + ARCH.encode() + b"\x1b[2J\n")  # a terminal escape inside a CSV cell
    rc, err = _cli(capsys, "measure", "--archs", str(csv), "--out", str(out))
    _one_line_usage(rc, err, "binary data")
    comments = tmp_path / "empty.txt"
    comments.write_text("# nothing here\n\n")
    rc, err = _cli(capsys, "predictor", "predict", "--model", "x", "--device", "d", "--space", "nb201",
                   "--archs", "", "--out", str(tmp_path / "p.parquet"))
    _one_line_usage(rc, err, "--archs is empty")
    rc, err = _cli(capsys, "measure", "--archs", str(comments), "--out", str(out))
    _one_line_usage(rc, err, "holds no arch strings")
    assert not out.exists()
    proc = subprocess.run([sys.executable, "-m", "hwlat", "measure", "--out", ""], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    _one_line_usage(proc.returncode, proc.stderr, "--out is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archs.csv", "empty.txt", "noise.txt", "nul.txt"]


# ------------------------------------------------------------------------------------------------- predictor
def test_train_steps_and_implausible_latencies_are_refused(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.pt"
    for steps in ("-5", "10"):  # 10: torch's one-cycle schedule divides by zero
        rc, err = _cli(capsys, "predictor", "train", "--data", str(FIXTURE), "--out", str(model), "--steps", steps)
        _one_line_usage(rc, err, "training steps must be")
    frame = pd.read_parquet(FIXTURE)
    for value in (1e308, 1e-300):
        bad = frame.copy()
        bad.loc[bad.index[3], "latency_ms"] = value
        path = tmp_path / f"bad{value}.parquet"
        bad.to_parquet(path)
        rc, err = _cli(capsys, "predictor", "train", "--data", str(path), "--out", str(model), "--steps", "20")
        _one_line_usage(rc, err, "implausible latency_ms", repr(bad.loc[bad.index[3], "device"]))
    assert not model.exists()
    # averaging two rows near the float limit used to overflow to inf; now refused at the edge
    with pytest.raises(UsageError, match="implausible"):
        reduce_frame(pd.DataFrame({"search_space": ["nb201"] * 2, "device": ["d"] * 2, "arch": [ARCH] * 2,
                                   "latency_ms": [1.5e308, 1.5e308]}))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = load_table([FIXTURE])
    table.df = table.df[table.df["search_space"] == "nb201"]
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    Predictor.train(table, TrainConfig(nets=[("gnn", 1, 8), ("mlp", 1, 16)], steps=20, batch=32)).save(path)
    return path


def _tamper(src: Path, dst: Path, edit: object) -> Path:
    blob = torch.load(src, weights_only=True)
    edit(blob["spaces"]["nb201"])  # type: ignore[operator]
    buf = io.BytesIO()
    torch.save(blob, buf)
    dst.write_bytes(buf.getvalue())
    return dst


TAMPER = {
    "missing key": (lambda s: s.pop("mu"), "KeyError"),
    "shape mismatch": (lambda s: s["nets"][0].__setitem__("flat_w.weight", torch.zeros(1, 3, 8)),
                       "has shape (1, 3, 8)"),
    "oversized net in config": (lambda s: s["train"].__setitem__("nets", [["gnn", 1, 8], ["mlp", 64, 1024]]),
                                "tensor"),
    "absurd net size": (lambda s: s["train"].__setitem__("nets", [["gnn", 1, 8], ["mlp", 1, 10**9]]),
                        "training net"),
    "NaN weights": (lambda s: s["nets"][0]["emb"].fill_(float("nan")), "NaN"),
    "per-device arrays": (lambda s: s.__setitem__("nn_weight", torch.ones(2, dtype=torch.float64)), "nn_weight"),
    "steps in file": (lambda s: s["train"].__setitem__("steps", -1), "training steps"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_model_files_are_refused_in_one_line(tiny_model: Path, tmp_path: Path, case: str) -> None:
    edit, needle = TAMPER[case]
    path = _tamper(tiny_model, tmp_path / "tampered.pt", edit)
    with pytest.raises(UsageError) as info:
        load(path)
    assert str(path) in str(info.value) and needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {_Evil.marker}",))

    marker = ""


def test_model_file_with_pickled_code_is_never_run(tiny_model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _Evil.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Evil()}, path)
    rc, err = _cli(capsys, "predictor", "predict", "--model", str(path), "--device", "dev0", "--space", "nb201",
                   "--out", str(tmp_path / "p.parquet"))
    _one_line_usage(rc, err, f"cannot read model {path}")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "p.parquet").exists()
    assert load(tiny_model).devices("nb201")  # the untampered file still loads


def test_bench_tasks_are_checked_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = load_table([FIXTURE])
    n = len(table.device_series("nb201", "dev1"))
    cases = [
        (Task("t", "nb201", [], ["dev1"]), 5, "no train devices"),
        (Task("t", "nb201", ["dev0"], []), 5, "no test devices"),
        (Task("t", "nb201", ["dev0", "dev1"], ["dev1"]), 5, "dev1 is both a train and a test device"),
        (Task("t", "nb201", ["dev0"], ["dev1"]), n - 1, f"use at most {n - 2} samples"),
        (Task("t", "nb201", ["dev0"], ["nope"]), 5, "not in the data"),
    ]
    for task, samples, needle in cases:
        with pytest.raises(UsageError, match=needle):
            validate_tasks(table, [task], samples)
    tasks = tmp_path / "tasks.json"
    tasks.write_text('{"tasks": [{"paper_name": "ok", "search_space": "nasbench201", "train_devices": ["dev0"], '
                     '"test_devices": ["dev1"]}, {"paper_name": "bad", "search_space": "nasbench201", '
                     '"train_devices": ["dev2", "dev3"], "test_devices": ["dev3"]}]}')
    report = tmp_path / "r.json"
    rc, err = _cli(capsys, "predictor", "bench", "--data", str(FIXTURE), "--tasks", str(tasks), "--samples", "5",
                   "--seeds", "1", "--steps", "20", "--json", str(report))
    _one_line_usage(rc, err, "task bad", "dev3 is both")  # refused up front, not after training task "ok"
    assert not report.exists()
