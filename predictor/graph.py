"""Features of a network's graph (``hwlat.spaces.graph``) for the predictor: any space without its own encoder.

Per op type: FLOPs, bytes moved, launch count and parameters (log-scaled), plus totals; the cost model's linear
features are the raw per-type FLOPs, bytes and launches: latency ~ sum over op types of
(a_t * FLOPs_t + b_t * bytes_t + c_t * launches_t).
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
N_LINEAR = 3 * K
N_TOTALS = 5
FLAT_DIM = 4 * K + N_TOTALS
NODE_DIM = K + 4


def _depth(n_ops: int, edges: list[tuple[int, int]]) -> int:
    """Operators on the longest path (ops are in topological order, edges go forward)."""
    depth = [1] * n_ops
    for u, v in sorted(edges, key=lambda e: e[1]):
        depth[v] = max(depth[v], depth[u] + 1)
    return max(depth, default=0)


def features(enc: GraphEncoding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat [FLAT_DIM], nodes [K, NODE_DIM], adj [K, K]) of one network, float32.

    ``flat``: per op type log1p of FLOPs, bytes moved (read + written), launches and parameters in
    ``FLAT_UNITS``, then totals (log1p FLOPs, bytes, params, operators, depth). The graph
    view is the *op-type graph*: one node per op type (its one-hot when present, and its log totals),
    ``adj[u, v]`` = number of edges from a u-typed to a v-typed operator. A fixed K nodes whatever the
    network's size, so batches stay dense (a padded per-operator graph of a ViT would need ~10^3 nodes).
    """
    per = np.zeros((4, K))
    types = [TYPE_INDEX[op["type"]] for op in enc.ops]
    for t, op in zip(types, enc.ops, strict=True):
        per[:, t] += (op["flops"], op["bytes_read"] + op["bytes_written"], 1.0, op["params"])
    scaled = np.log1p(per / np.asarray(FLAT_UNITS)[:, None])
    totals = np.log1p([per[0].sum() / 1e6, per[1].sum() / 1e5, per[3].sum() / 1e3, len(enc.ops),
                       _depth(len(enc.ops), enc.edges)])
    flat = np.concatenate([scaled.ravel(), totals])
    nodes = np.zeros((K, NODE_DIM))
    present = per[2] > 0
    nodes[np.arange(K), np.arange(K)] = present
    nodes[:, K:] = scaled[[2, 0, 1, 3]].T
    adj = np.zeros((K, K))
    for u, v in enc.edges:
        adj[types[u], types[v]] += 1.0
    return flat.astype(np.float32), nodes.astype(np.float32), adj.astype(np.float32)


def linear(flat: np.ndarray) -> np.ndarray:
    """The cost model's features [B, 3K] from ``flat`` rows: raw FLOPs, bytes and launches per op type in
    ``LINEAR_UNITS`` (exactly additive over operators: expm1 undoes the log1p of ``features``)."""
    raw = np.expm1(np.asarray(flat, np.float64)[:, :N_LINEAR]).reshape(len(flat), 3, K)
    scale = np.asarray(FLAT_UNITS[:3]) / np.asarray(LINEAR_UNITS)
    return (raw * scale[None, :, None]).reshape(len(flat), N_LINEAR)
