"""Features of a network's graph (``hwlat.spaces.graph``) for the predictor: any space without its own encoder.

Per op type: FLOPs, bytes moved, launch count and parameters (log-scaled), plus totals; the cost model's linear
features are the raw per-type FLOPs, bytes and launches: latency ~ sum over op types of
(a_t * FLOPs_t + b_t * bytes_t + c_t * launches_t).

Convolutions also carry their FLOPs and bytes again per kernel-size bucket beyond 3x3 (``KERNEL_TYPES`` x
``KERNEL_BUCKETS``): a runtime's cost per FLOP of a convolution depends on whether it has a kernel specialised
for that size. ExecuTorch/XNNPACK on OFA is the case that showed it: a ridge on the per-type features alone
predicts 500 OFA archs out of fold at Spearman 0.942 and 52 % within +-10 %, with the depthwise FLOPs and bytes
of 5x5 and 7x7 kernels as extra columns at 0.998 and 100 % (onnxruntime without graph optimisation 0.981 / 92 %
-> 0.990 / 98 %; the other configurations unchanged; docs/predictor.md, "Kernel sizes").

Dead operators (``hwlat.spaces.graph.mark_dead``: cut off by a multiplication by zero, e.g. a NAS supernet's
``none`` op) stay in their types' columns -- most runtimes execute them -- and are counted again, FLOPs, bytes
and launches, in three ``dead`` columns: a runtime that folds them away gets a negative cost there, one that runs
them none. On NB201 (1000 archs, out-of-fold ridge on the traced graphs, ``benchmarks/graph_fit_ceiling.py``)
raspi4 goes 0.907 -> 0.944 and pixel3 0.904 -> 0.941 Spearman with them, the other six devices unchanged
(docs/predictor.md, "Dead operators").
"""

from __future__ import annotations

import numpy as np

from hwlat.spaces.graph import OP_TYPES, TYPE_INDEX, GraphEncoding

# ----------------------------------------------------------------------------------------- features

K = len(OP_TYPES)
#: per-type blocks of ``flat``: log1p(FLOPs / 1e6), log1p(bytes / 1e5), log1p(launches), log1p(params / 1e3)
FLAT_UNITS = (1e6, 1e5, 1.0, 1e3)
#: the cost model's linear features are FLOPs / 1e8, bytes / 1e7, launches / 10 per type (``linear``):
#: O(1) for a small network, so the cost model's isotropic prior treats the three alike
LINEAR_UNITS = (1e8, 1e7, 10.0)
#: convolution types whose per-FLOP cost depends on the kernel size
KERNEL_TYPES = ("conv", "conv_dw", "conv_group")
#: kernel-size buckets beyond 3x3 (largest kernel dimension <= the bound; None: any larger). 3x3 and smaller
#: stay in their type's columns only, so a network without larger kernels gets zeros here
KERNEL_BUCKETS = (5, None)
#: the per-(type, bucket) sub-types, named as the cost prior's op types (``predictor.opcost``)
KERNEL_NAMES = tuple(f"{t}_k{b if b is not None else 'large'}" for t in KERNEL_TYPES for b in KERNEL_BUCKETS)
N_KERNEL = len(KERNEL_NAMES)
#: FLOPs, bytes and launches of the dead operators (counted in their types' columns too)
N_DEAD = 3
#: linear columns: FLOPs, bytes, launches per op type, then FLOPs and bytes per kernel sub-type, then the dead
#: operators' FLOPs, bytes and launches
N_LINEAR = 3 * K + 2 * N_KERNEL + N_DEAD
#: for each kernel sub-type column of ``linear`` (in order, after the 3K per-type ones), the per-type column
#: whose FLOPs or bytes it counts a second time
KERNEL_BASE = tuple(q * K + TYPE_INDEX[KERNEL_TYPES[i // len(KERNEL_BUCKETS)]]
                    for q in range(2) for i in range(N_KERNEL))
N_TOTALS = 5
#: the layout of ``features``' rows; caches of feature rows (``predictor.traced``) are kept per version, so a
#: change of layout never reads rows of another
FEATURES_VERSION = 3
#: flat: the four per-type blocks, the totals, log1p FLOPs and bytes per kernel sub-type, then log1p FLOPs,
#: bytes and launches of the dead operators
FLAT_DIM = 4 * K + N_TOTALS + 2 * N_KERNEL + N_DEAD
NODE_DIM = K + 4


def _depth(n_ops: int, edges: list[tuple[int, int]]) -> int:
    """Operators on the longest path (ops are in topological order, edges go forward)."""
    depth = [1] * n_ops
    for u, v in sorted(edges, key=lambda e: e[1]):
        depth[v] = max(depth[v], depth[u] + 1)
    return max(depth, default=0)


def _kernel_size(op: dict) -> int:
    """Largest spatial kernel dimension of a convolution: its ``kernel`` attribute, else its weight's shape
    (an ONNX Conv may leave ``kernel_shape`` out); 0 when neither says."""
    kernel = (op.get("attrs") or {}).get("kernel") or []
    if not kernel and op.get("weights"):
        kernel = op["weights"][0][2:]
    return int(max(kernel, default=0))


def _kernel_sub_type(op: dict) -> int | None:
    """Index into ``KERNEL_NAMES`` of a convolution with a kernel beyond 3x3, else None."""
    if op["type"] not in KERNEL_TYPES:
        return None
    k = _kernel_size(op)
    if k <= 3:
        return None
    bucket = next(i for i, bound in enumerate(KERNEL_BUCKETS) if bound is None or k <= bound)
    return KERNEL_TYPES.index(op["type"]) * len(KERNEL_BUCKETS) + bucket


def features(enc: GraphEncoding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat [FLAT_DIM], nodes [K, NODE_DIM], adj [K, K]) of one network, float32.

    ``flat``: per op type log1p of FLOPs, bytes moved (read + written), launches and parameters in
    ``FLAT_UNITS``, then totals (log1p FLOPs, bytes, params, operators, depth), then log1p FLOPs and bytes of
    the convolutions of each kernel sub-type (``KERNEL_NAMES``) in the same units, then log1p FLOPs, bytes and
    launches of the dead operators (``"dead"`` in the encoding; they count in their types' blocks too). The graph
    view is the *op-type graph*: one node per op type (its one-hot when present, and its log totals),
    ``adj[u, v]`` = number of edges from a u-typed to a v-typed operator. A fixed K nodes whatever the
    network's size, so batches stay dense (a padded per-operator graph of a ViT would need ~10^3 nodes).
    """
    per = np.zeros((4, K))
    kern = np.zeros((2, N_KERNEL))
    dead = np.zeros(N_DEAD)
    types = [TYPE_INDEX[op["type"]] for op in enc.ops]
    for t, op in zip(types, enc.ops, strict=True):
        moved = op["bytes_read"] + op["bytes_written"]
        per[:, t] += (op["flops"], moved, 1.0, op["params"])
        sub = _kernel_sub_type(op)
        if sub is not None:
            kern[:, sub] += (op["flops"], moved)
        if op.get("dead"):
            dead += (op["flops"], moved, 1.0)
    scaled = np.log1p(per / np.asarray(FLAT_UNITS)[:, None])
    totals = np.log1p([per[0].sum() / 1e6, per[1].sum() / 1e5, per[3].sum() / 1e3, len(enc.ops),
                       _depth(len(enc.ops), enc.edges)])
    flat = np.concatenate([scaled.ravel(), totals, np.log1p(kern / np.asarray(FLAT_UNITS[:2])[:, None]).ravel(),
                           np.log1p(dead / np.asarray(FLAT_UNITS[:3]))])
    nodes = np.zeros((K, NODE_DIM))
    present = per[2] > 0
    nodes[np.arange(K), np.arange(K)] = present
    nodes[:, K:] = scaled[[2, 0, 1, 3]].T
    adj = np.zeros((K, K))
    for u, v in enc.edges:
        adj[types[u], types[v]] += 1.0
    return flat.astype(np.float32), nodes.astype(np.float32), adj.astype(np.float32)


def linear(flat: np.ndarray) -> np.ndarray:
    """The cost model's features [B, N_LINEAR] from ``flat`` rows: raw FLOPs, bytes and launches per op type,
    then FLOPs and bytes per kernel sub-type, then the dead operators' FLOPs, bytes and launches, in
    ``LINEAR_UNITS`` (exactly additive over operators: expm1 undoes the log1p of ``features``)."""
    flat = np.asarray(flat, np.float64)
    raw = np.expm1(flat[:, :3 * K]).reshape(len(flat), 3, K)
    scale = np.asarray(FLAT_UNITS[:3]) / np.asarray(LINEAR_UNITS)
    start = FLAT_DIM - 2 * N_KERNEL - N_DEAD
    kern = np.expm1(flat[:, start:start + 2 * N_KERNEL]).reshape(len(flat), 2, N_KERNEL)
    dead = np.expm1(flat[:, FLAT_DIM - N_DEAD:])
    return np.concatenate([(raw * scale[None, :, None]).reshape(len(flat), 3 * K),
                           (kern * scale[None, :2, None]).reshape(len(flat), 2 * N_KERNEL),
                           dead * scale[None, :]], axis=1)


def constant_output(flat: np.ndarray) -> np.ndarray:
    """Which ``flat`` rows are networks whose every operator is dead (bool [B]): their output is a constant."""
    flat = np.asarray(flat, np.float64)
    ops = flat[:, 4 * K + 3]  # log1p(operators), among the totals
    return (ops > 0) & np.isclose(flat[:, FLAT_DIM - 1], ops, rtol=1e-6, atol=0.0)
