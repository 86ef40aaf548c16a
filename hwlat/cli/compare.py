"""``hwlat datasets compare A B``: agreement of two datasets on the models both measured (harness/compare.py)."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_datasets_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.compare import compare

    result = compare(args.a, args.b)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(f"A = {result['a']}\nB = {result['b']}\n{result['matched']} models in both "
                  f"(only in A: {result['only_a']}, only in B: {result['only_b']})")
    figures = {k: "undefined" if result[k] is None else f"{result[k]:.4f}"
               for k in ("spearman", "kendall", "icc2_1", "icc3_1")}
    console.print(f"Spearman {figures['spearman']}   Kendall {figures['kendall']}   ICC(2,1) {figures['icc2_1']}   "
                  f"ICC(3,1) {figures['icc3_1']}  (on log latency)")
    console.print(f"|B/A - 1|: median {100 * result['median_abs_rel_diff']:.2f}%, "
                  f"p90 {100 * result['p90_abs_rel_diff']:.2f}%   geometric mean B/A {result['geomean_ratio']:.4f}")
    norm = result["normalized"]
    if norm is not None:
        beta = ", ".join(f"{b['beta']:.2f}" for b in result["reference"]["baselines"])
        spread = "   ".join(f"{name.upper()} {100 * result['reference'][name]['spread']:.1f}%"
                           for name in ("a", "b") if name in result["reference"])
        console.print(f"drift reference p90/p10 - 1: {spread}   normalized (beta {beta}): Spearman "
                      f"{norm['spearman']:.4f}, |B/A - 1| median {100 * norm['median_abs_rel_diff']:.2f}%, "
                      f"p90 {100 * norm['p90_abs_rel_diff']:.2f}%, ICC(2,1) {norm['icc2_1']:.4f}")
    table = Table(title="moved most")
    for col in ("device", "arch", "A ms", "B ms", "B/A - 1"):
        table.add_column(col)
    for r in result["moved_most"]:
        table.add_row(r["device"], r["arch"], f"{r['latency_ms_a']:.4g}", f"{r['latency_ms_b']:.4g}",
                      f"{100 * r['rel_diff']:+.1f}%")
    console.print(table)
    console.print(result["verdict"], soft_wrap=True, markup=False)
    return 0


def register(dsub: argparse._SubParsersAction) -> None:
    c = dsub.add_parser("compare", help="agreement of two datasets: Spearman, Kendall, relative difference, ICC",
                        description="Match rows by (device, config_id, model_key: the model file at its input "
                                    "shapes) and report rank agreement (Spearman, Kendall), the median and p90 "
                                    "|relative difference|, ICC(2,1) and ICC(3,1) on log latency, the same on "
                                    "latencies normalized to the drift reference where the rows carry it, the "
                                    "models that moved most, and a verdict line.")
    c.add_argument("a", help="dataset A (the baseline): folder or Parquet file")
    c.add_argument("b", help="dataset B (the retest)")
    c.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    c.set_defaults(func=cmd_datasets_compare)
