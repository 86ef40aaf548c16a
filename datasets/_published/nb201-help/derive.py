"""Rebuild ``latency.parquet`` of this folder from the NB201 latency table of HELP's data (README.md here).

    python datasets/_published/nb201-help/derive.py ../shared/data/nb201 datasets/_published/nb201-help

Input: ``latency_long.parquet`` (search_space, arch_index, arch, device, latency_ms, source) and
``device_summary.csv`` of that folder. Output: ``latency.parquet`` with ``search_space, arch_index, arch,
device, latency_ms`` (one row per device and arch, latencies unchanged: float64, ms) and ``devices.csv``.

Why this form: long, so that every hwlat reader takes it as it is (``hwlat predictor train --data``,
``predictor bench``, pandas); rows sorted by arch, then device, so that the dictionary-encoded ``arch`` and
``device`` columns compress to runs; zstd level 19. 1.66 MB instead of the 11.8 MB of the long input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agents.files import atomic_path

SCHEMA = pa.schema([("search_space", pa.string()), ("arch_index", pa.int32()), ("arch", pa.string()),
                    ("device", pa.string()), ("latency_ms", pa.float64())])
SOURCE = ("HELP (Lee, Lee, Chong, Hwang: HELP: Hardware-Adaptive Efficient Latency Prediction for NAS via "
          "Meta-Learning, NeurIPS 2021; github.com/HayeonLee/HELP, data/nasbench201/latency), MIT licence; "
          "eyeriss, fpga, pixel3, raspi4 are HW-NAS-Bench's values (Li et al., ICLR 2021) as HELP ships them")
#: the one line `hwlat datasets show` prints for this table
CREDIT = "HELP (Lee et al., NeurIPS 2021), MIT licence; NOTICE beside it"
DEVICE_COLUMNS = ["device", "device_type", "hardware", "batch_size", "integer_valued", "origin"]


def derive(src: Path, out: Path) -> None:
    """Write ``out/latency.parquet`` and ``out/devices.csv`` from the shared NB201 folder ``src``."""
    long = pd.read_parquet(src / "latency_long.parquet", columns=list(SCHEMA.names))
    long = long.sort_values(["arch_index", "device"], kind="stable").reset_index(drop=True)
    if long.duplicated(["device", "arch_index"]).any() or long["latency_ms"].isna().any():
        raise SystemExit(f"{src}: repeated (device, arch) rows or missing latencies")
    meta = {"credit": CREDIT, "source": SOURCE, "licence": "MIT (LICENSE in this folder)",
            "derived_from": "latency_long.parquet",
            "devices": int(long["device"].nunique()), "archs": int(long["arch_index"].nunique())}
    table = pa.Table.from_pandas(long, schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({"hwlat.published": json.dumps(meta, sort_keys=True)})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "latency.parquet") as tmp:  # a reader never sees half a file
        pq.write_table(table, tmp, compression="zstd", compression_level=19,
                       use_dictionary=["search_space", "arch", "device"], dictionary_pagesize_limit=1 << 23,
                       row_group_size=1 << 20, write_statistics=False)
    summary = pd.read_csv(src / "device_summary.csv")
    summary["batch_size"] = summary["batch_size"].astype("Int64")
    with atomic_path(out / "devices.csv") as tmp:
        summary[DEVICE_COLUMNS].sort_values("device").to_csv(tmp, index=False)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.splitlines()[2].strip())
    derive(Path(sys.argv[1]), Path(sys.argv[2]))
