"""Make this folder's files from HELP's NB201 latency table (NOTICE here), and the training subset of it.

    python datasets/_published/nb201-help/derive.py ../shared/data/nb201 datasets/_published/nb201-help
    python datasets/_published/nb201-help/derive.py --subset-of datasets datasets/_published/nb201-help OUT.parquet

The first form reads ``latency_long.parquet`` (search_space, arch_index, arch, device, latency_ms, source) and
``device_summary.csv`` of the shared folder and writes ``latency.parquet`` (``search_space, arch_index, arch,
device, latency_ms``; one row per device and arch, latencies unchanged: float64, ms) and ``devices.csv``.
Why this form: long, so that every hwlat reader takes it as it is (``hwlat predictor train --data``,
``predictor bench``, pandas); rows sorted by arch, then device, so that the dictionary-encoded ``arch`` and
``device`` columns compress to runs; zstd level 19: 1.65 MB instead of the 11.8 MB of the long input.

The second form writes the rows of every HELP device for the NB201 archs measured in an hwlat dataset (the
bundled ``datasets/``: 1000 archs): what the bundled predictor is trained on. Pretraining draws rows
uniformly, so the full table (15625 archs per device) would leave the dataset's own devices under 1 % of
the draws (docs/datasets.md measures what that does to them).
"""

from __future__ import annotations

import argparse
import json
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


def write_table(frame: pd.DataFrame, path: Path, meta: dict) -> None:
    """``frame`` (SCHEMA's columns) as compact Parquet with ``meta`` under the key ``hwlat.published``."""
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({"hwlat.published": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:  # a reader never sees half a file
        pq.write_table(table, tmp, compression="zstd", compression_level=19,
                       use_dictionary=["search_space", "arch", "device"], dictionary_pagesize_limit=1 << 23,
                       row_group_size=1 << 20, write_statistics=False)


def derive(src: Path, out: Path) -> None:
    """Write ``out/latency.parquet`` and ``out/devices.csv`` from the shared NB201 folder ``src``."""
    long = pd.read_parquet(src / "latency_long.parquet", columns=list(SCHEMA.names))
    long = long.sort_values(["arch_index", "device"], kind="stable").reset_index(drop=True)
    if long.duplicated(["device", "arch_index"]).any() or long["latency_ms"].isna().any():
        raise SystemExit(f"{src}: repeated (device, arch) rows or missing latencies")
    out.mkdir(parents=True, exist_ok=True)
    write_table(long, out / "latency.parquet",
                {"credit": CREDIT, "source": SOURCE, "licence": "MIT (LICENSE in this folder)",
                 "derived_from": "latency_long.parquet", "devices": int(long["device"].nunique()),
                 "archs": int(long["arch_index"].nunique())})
    summary = pd.read_csv(src / "device_summary.csv")
    summary["batch_size"] = summary["batch_size"].astype("Int64")
    with atomic_path(out / "devices.csv") as tmp:
        summary[DEVICE_COLUMNS].sort_values("device").to_csv(tmp, index=False)


def subset(dataset: Path, folder: Path, out: Path) -> None:
    """Write to ``out`` the rows of ``folder/latency.parquet`` whose arch is an NB201 arch of ``dataset``."""
    from harness.store import read_dataset

    rows = read_dataset(dataset).select(["search_space", "arch"]).to_pandas()
    archs = set(rows.loc[rows["search_space"].astype(str) == "nb201", "arch"].astype(str))
    if not archs:
        raise SystemExit(f"{dataset} has no nb201 rows")
    table = pq.read_table(folder / "latency.parquet")
    frame = table.to_pandas()
    frame = frame[frame["arch"].isin(archs)].reset_index(drop=True)
    meta = json.loads(table.schema.metadata[b"hwlat.published"])
    write_table(frame, out, {**meta, "archs": int(frame["arch"].nunique()),
                             "subset": f"the nb201 archs of {dataset} ({len(archs)})"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset-of", metavar="DATASET", type=Path,
                        help="write the rows of FOLDER's table for this dataset's nb201 archs to OUT")
    parser.add_argument("source", type=Path, help="the shared nb201 folder (or, with --subset-of, this folder)")
    parser.add_argument("out", type=Path, help="this folder (or, with --subset-of, the subset's Parquet file)")
    args = parser.parse_args()
    if args.subset_of:
        subset(args.subset_of, args.source, args.out)
    else:
        derive(args.source, args.out)
