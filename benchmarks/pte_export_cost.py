"""ExecuTorch (.pte, XNNPACK) export cost: the old lowering and ``harness.export_torch.export_pte``, side by side
(docs/benchmarks.md, "ExecuTorch export cost").

The old path is the one-call ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``;
the new one is ``export_pte`` (``to_edge`` told which operators XNNPACK keeps, then ``to_backend``). For
each of N NB201 + M FBNet archs (the planner's seeded sample), in one process with one torch thread, both
lower the same ``torch.export`` program, alternating which goes first; each is timed in wall and process CPU
seconds (CPU time is what a busy shared machine distorts least). One untimed export of each path first pays
the process's one-off costs (imports, XNNPACK's pattern graphs), reported apart. Checks per model: the two
programs are byte-identical, or else have the same delegate calls and portable operators; the new program
run by ExecuTorch's runtime gives the torch module's output.

    nice taskset -c 1 python benchmarks/pte_export_cost.py --nb201 10 --fbnet 5 [--batch 10]

``--batch K`` also times ``harness.export.export_models`` on K further NB201 archs in a fresh cache with
``workers=1`` (the export worker's loop): the per-model cost once warm.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.export import export_models
from harness.export_torch import _exported, export_pte
from harness.plan import CampaignRequest, plan_specs
from harness.records import ModelSpec
from hwlat.spaces import get_space


def export_old(model: Any, sample: Any, path: Path) -> None:
    """The lowering ``export_pte`` replaced: ExecuTorch's one-call API."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = to_edge_transform_and_lower(_exported(model, sample), partitioner=[XnnpackPartitioner()])
        path.write_bytes(program.to_executorch().buffer)


def delegation(data: bytes) -> tuple[int, int, list[str]]:
    """(delegates, delegate calls, portable operators) of a serialized program."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall

    plan = deserialize_pte_binary(data).program.execution_plan[0]
    calls = sum(isinstance(i.instr_args, DelegateCall) for chain in plan.chains for i in chain.instructions)
    return len(plan.delegates), calls, sorted(f"{op.name}.{op.overload}" for op in plan.operators)


def timed(fn: Any, model: Any, sample: Any, path: Path) -> tuple[float, float, bytes]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(model, sample, path)
    return time.perf_counter() - wall, time.process_time() - cpu, path.read_bytes()


def matches_torch(path: Path, model: Any, sample: Any) -> float:
    """Max abs difference between the program run by ExecuTorch and the torch module."""
    from executorch.runtime import Runtime, Verification

    method = Runtime.get().load_program(str(path), verification=Verification.Minimal).load_method("forward")
    (out,) = method.execute([sample])
    with torch.no_grad():
        ref = model(sample)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-3, atol=1e-4)
    return float((out - ref).abs().max())


def archs(space: str, n: int, seed: int) -> list:
    specs, _ = plan_specs(CampaignRequest(devices=[], out=Path("unused"), space=space, count=n, seed=seed))
    return list(specs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nb201", type=int, default=10)
    ap.add_argument("--fbnet", type=int, default=5)
    ap.add_argument("--batch", type=int, default=0, help="also time export_models on this many NB201 archs")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="pte-cost-"))
    rows = []
    first = True
    for space, n in (("nb201", args.nb201), ("fbnet", args.fbnet)):
        sp = get_space(space)
        specs = archs(space, n + 1, args.seed)
        for i, spec in enumerate(specs):
            model = sp.build(spec.arch, spec.batch, spec.resolution).eval()
            sample = sp.sample_input(spec.batch, sp.resolution_for(spec.arch, spec.resolution))
            if first:  # one-off costs of the process, paid by whichever path runs first
                w_old, c_old, _ = timed(export_old, model, sample, work / "warm-old.pte")
                w_new, c_new, _ = timed(export_pte, model, sample, work / "warm-new.pte")
                print(f"warm-up ({space} arch 0): old {w_old:.1f} s wall / {c_old:.1f} s CPU (first in process), "
                      f"then new {w_new:.1f} s / {c_new:.1f} s", flush=True)
                first = False
                continue
            if i == 0:
                continue  # the warm-up arch of a later space is skipped too, so each space times n archs
            order = [("old", export_old), ("new", export_pte)]
            if i % 2 == 0:
                order.reverse()
            res = {name: timed(fn, model, sample, work / f"{name}.pte") for name, fn in order}
            same = res["old"][2] == res["new"][2]
            d_old, d_new = delegation(res["old"][2]), delegation(res["new"][2])
            if not same and d_old != d_new:
                raise SystemExit(f"{space} {spec.arch}: delegation differs: old {d_old}, new {d_new}")
            err = matches_torch(work / "new.pte", model, sample)
            rows.append((space, res["old"][0], res["old"][1], res["new"][0], res["new"][1]))
            print(f"{space} {i:2d} old {res['old'][0]:5.1f} s / {res['old'][1]:5.1f} s CPU  new {res['new'][0]:5.1f} s"
                  f" / {res['new'][1]:5.1f} s CPU  bytes {'identical' if same else 'DIFFER'}"
                  f" sha {hashlib.sha256(res['new'][2]).hexdigest()[:12]}  delegates {d_new[0]} calls {d_new[1]}"
                  f" portable {d_new[2] or '-'}  max|pte-torch| {err:.1e}", flush=True)
    for space in ("nb201", "fbnet"):
        sel = [r for r in rows if r[0] == space]
        if not sel:
            continue
        med = [statistics.median(r[k] for r in sel) for k in (1, 2, 3, 4)]
        print(f"{space}: {len(sel)} archs, median old {med[0]:.1f} s wall / {med[1]:.1f} s CPU, new {med[2]:.1f} s"
              f" / {med[3]:.1f} s CPU: {med[0] / med[2]:.2f}x wall, {med[1] / med[3]:.2f}x CPU")
    if args.batch:
        specs = [ModelSpec("nb201", s.arch) for s in archs("nb201", args.batch, args.seed + 1)]
        stamps = [time.perf_counter()]
        cpu = time.process_time()
        export_models(specs, "pte", work / "cache", workers=1, progress=lambda _: stamps.append(time.perf_counter()))
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        print(f"export_models(workers=1), {len(specs)} NB201 archs: {stamps[-1] - stamps[0]:.1f} s wall, "
              f"{time.process_time() - cpu:.1f} s CPU; per model {' '.join(f'{g:.1f}' for g in gaps)} s "
              f"(median {statistics.median(gaps):.1f} s)")


if __name__ == "__main__":
    main()
