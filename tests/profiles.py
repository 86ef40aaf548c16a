"""Device profiles the tests measure with: the local machine and a short timing protocol, so behaviour tests
stay quick (the protocol's own defaults are tested in test_agent_timing.py and measured in benchmarks/); and
how a test watches a campaign it runs in the background (``rows_on_disk``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def fast_profile(tmp_path: Path, name: str = "fastlocal", threads: int = 1, extra: str = "") -> Path:
    """A local profile named ``name`` (agent workdir under ``tmp_path``); ``extra``: more top-level TOML lines."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
host = "local"
workdir = "{tmp_path / 'agent'}"
threads = {threads}
{extra}
[timing]
warmup_min_runs = 2
warmup_min_s = 0.0
min_runs = 5
min_time_s = 0.0
max_runs = 20
max_time_s = 1.0
""")
    return path


def rows_on_disk(out: Path) -> int:
    """Rows in the part files under a running campaign's ``out``; 0 while a merge replaces small parts under the
    scan (a part listed, then deleted), so a poll just looks again."""
    try:
        return sum(pq.read_metadata(p).num_rows for p in out.rglob("part-*.parquet"))
    except FileNotFoundError:
        return 0
