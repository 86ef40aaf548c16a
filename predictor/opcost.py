"""Hardware-agnostic per-op cost quantities: FLOPs, bytes moved and operator launches of every op choice.

The transfer's cost model (``predictor.additive``) predicts latency as an intercept plus one cost per
design column (``SpaceEncoder.linear``: for FBNet each (position, op) choice). Its source prior says "the new
device's cost table is a mix of the source devices' tables"; that fails when no source shares the target's
hardware family (a GPU's table is not a mix of phones' tables). What every device does share is *why* an op
costs what it costs: it executes some FLOPs, moves some bytes and launches some kernels. So the same design
columns get analytic quantities, computed from the space's own layer plan (the shapes the exporter builds):

* ``flops``   -- floating-point operations (2 per multiply-accumulate; ReLU/add/pool 1 per element);
* ``bytes``   -- fp32 bytes read and written by each operator (activations in and out, plus weights),
  i.e. the memory traffic of an unfused execution;
* ``launches`` -- operator count of the exported graph after BatchNorm folding (conv, ReLU, add, pool,
  the shuffle's reshape/transpose/reshape): per-kernel launch and dispatch overhead.

A device's cost of op ``o`` at position ``p`` is then ``sum_q theta_q * quantity_q[p, o]`` (the additive
roofline: time = FLOPs / peak + bytes / bandwidth + launches x overhead), with a few device constants
``theta`` that 5-20 measurements can pin down -- plus, per op type, its own ``theta`` (a device can be
unusually good or bad at depthwise convs or pooling). ``components`` turns these into Gaussian prior
covariances over the design's cost vector; ``predictor.additive`` weighs them against the source prior by
marginal likelihood.

A graph-encoded space (``predictor.encode.GraphEncoder``: ONNX files, OFA, the ViT space, plug-ins), and NB201
(whose encoder carries its traced networks' graph features: ``SpaceEncoder.graph_cost``), need no
table: their cost features (``predictor.graph.linear``) already are FLOPs, bytes and launches, per op type
(``graph_quantities``). The same ``components`` give it the same prior -- a device constant per quantity
shared by every op type, plus per (op type, quantity) its own efficiency -- with the typical arch taken from
the archs at hand, since such a space has no uniform draw to average over. One implementation, whichever way
the features were made (exported ONNX, or a tracer of the space's arch strings).
"""

from __future__ import annotations

import functools

import numpy as np

from hwlat.spaces.graph import OP_TYPES

from .encode import (
    _FBNET_SHAPES,
    FBNET_OPS,
    _fbnet_layer_cost,
    get_encoder,
    is_registered,
)
from .graph import KERNEL_BASE, KERNEL_NAMES, N_DEAD, N_KERNEL, K

QUANTITIES = ("flops", "bytes", "launches")


def _fbnet_op(op: str, cin: int, cout: int, stride: int, hw: int) -> tuple[float, float, float]:
    """(flops, bytes, launches) of one FBNet layer's block (``hwlat.spaces.fbnet.make_block``)."""
    hw_in = hw * stride
    if op == "skip":
        if cin == cout and stride == 1:
            return 0.0, 0.0, 0.0
        macs, params = _fbnet_layer_cost(op, cin, cout, stride, hw)  # 1x1 conv (+ReLU) on a shape change
        return 2 * macs + cout * hw * hw, 4.0 * (cin * hw_in**2 + cout * hw * hw + params) + 8.0 * cout * hw * hw, 2.0
    e = int(op.split("_")[1][1:])
    g = 2 if op.endswith("g2") else 1
    mid = cin * e
    macs, params = _fbnet_layer_cost(op, cin, cout, stride, hw)
    flops = 2 * macs + mid * hw_in**2 + mid * hw * hw  # convs + two ReLUs
    acts = (cin + mid) * hw_in**2 + 2 * mid * hw * hw + (mid + cout) * hw * hw  # conv ins/outs
    acts += 2 * mid * hw_in**2 + 2 * mid * hw * hw  # ReLU reads/writes
    launches = 5.0  # expand, ReLU, depthwise, ReLU, project
    if g > 1:  # channel shuffle: reshape, transpose, reshape (the transpose copies)
        acts += 2 * mid * hw_in**2
        launches += 3
    if stride == 1 and cin == cout:  # residual add
        flops += cout * hw * hw
        acts += 3 * cout * hw * hw
        launches += 1
    return float(flops), 4.0 * (acts + params), launches


@functools.cache
def op_quantities(space: str) -> tuple[np.ndarray, list[str]]:
    """Quantities [P * O, Q] in the order of the space's linear features (position-major), and op names [P * O]."""
    if space == "fbnet":
        rows = [_fbnet_op(op, *shape) for shape in _FBNET_SHAPES for op in FBNET_OPS]
        return np.array(rows), list(FBNET_OPS) * len(_FBNET_SHAPES)
    raise KeyError(space)


def graph_quantities() -> tuple[np.ndarray, list[str], np.ndarray]:
    """Quantities [F, 3], op types [F] and the shared-constant mask [F] of the graph encoders' linear features
    (``predictor.graph.linear``, F = ``N_LINEAR``).

    Those columns *are* the quantities: per op type its FLOPs, bytes moved and launches, in
    ``graph.LINEAR_UNITS``. Column ``q * K + t`` holds quantity ``q`` of op type ``t``, so its row here is the
    unit vector of ``q``: the same roofline (one device constant per quantity, plus per op type its own
    efficiency) over whatever network the graph came from -- an ONNX file, OFA, a ViT or a plug-in space.
    The kernel sub-types' FLOPs and bytes (``graph.KERNEL_NAMES``) follow; they repeat FLOPs and bytes the
    type's own columns already count, so they are only a sub-type's *extra* cost per FLOP or byte (prior mean
    0, its own efficiency) and stay out of the shared device constants (mask False). So do the dead operators'
    FLOPs, bytes and launches (``graph.N_DEAD``, op type ``dead``): counted in their types' columns too, their
    term is what a runtime saves by not running them (negative) or nothing, with a scale of their own.
    """
    base = np.kron(np.eye(len(QUANTITIES)), np.ones((K, 1)))
    kern = np.kron(np.eye(len(QUANTITIES))[:2], np.ones((N_KERNEL, 1)))
    dead = np.eye(len(QUANTITIES))[:N_DEAD]
    shared = np.concatenate([np.ones(len(base), bool), np.zeros(len(kern) + len(dead), bool)])
    names = list(OP_TYPES) * len(QUANTITIES) + list(KERNEL_NAMES) * 2 + ["dead"] * N_DEAD
    return np.concatenate([base, kern, dead]), names, shared


def components(q: np.ndarray, names: list[str], typical: np.ndarray, shared_mask: np.ndarray | None = None,
               whole: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Gaussian prior covariance components over the cost vector ``[intercept, linear features]``.

    ``q`` [F, Q]: each linear feature's quantities (FLOPs, bytes, launches); ``names`` [F]: its op type;
    ``typical`` [F]: a typical arch's linear features (the mean of a uniformly drawn arch, or of the archs at
    hand). ``shared``: ``G G'`` with one column per quantity (the device constants every op shares);
    ``per_op``: one column per (op type, quantity) (an op type's own efficiency); ``intercept``: the fixed
    skeleton (stem, reductions, head) of unknown cost. Each column is scaled so that it adds about 1 to the
    typical arch's latency, which is the unit the cost model works in (latency / mean latency): a prior scale
    of 1 then means "this term could explain the whole latency". A column no typical arch uses is dropped.
    ``shared_mask`` [F] (default: every feature): the features the shared device constants apply to.
    ``whole``: op types whose own term is scaled against the typical arch's whole quantity (over the shared
    features), not its own: at a typical device rate it adds about its share of the latency, not all of it.
    """
    typical = np.asarray(typical, np.float64)
    names_arr = np.asarray(names)

    def scaled(col: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
        """``col`` in units of the typical arch's amount of ``ref`` (default: of itself); zeros when the typical
        arch has none of it."""
        own = float(typical @ col)
        t = own if ref is None else float(typical @ ref)
        return np.concatenate([[0.0], col / t]) if own > 0 and t > 0 else np.zeros(len(col) + 1)

    ops = sorted(set(names), key=names.index)
    in_shared = np.ones(len(q), bool) if shared_mask is None else np.asarray(shared_mask, bool)
    shared = np.stack([scaled(q[:, j] * in_shared) for j in range(q.shape[1])], 1)
    per_op = np.stack([scaled(q[:, j] * (names_arr == op), q[:, j] * in_shared if op in whole else None)
                       for op in ops for j in range(q.shape[1])], 1)
    shared = shared[:, np.abs(shared).sum(0) > 0]
    per_op = per_op[:, np.abs(per_op).sum(0) > 0]
    intercept = np.zeros((len(q) + 1, 1))
    intercept[0, 0] = 1.0
    return {"shared": shared @ shared.T, "per_op": per_op @ per_op.T, "intercept": intercept @ intercept.T}


@functools.cache
def _dedicated_components(space: str) -> dict[str, np.ndarray]:
    """``components`` of a dedicated encoder's one-hot design; the typical arch draws each position's op
    uniformly (one-hot mean ``1 / ops``)."""
    q, names = op_quantities(space)
    n_ops = len(set(names))
    return components(q, names, np.full(len(q), 1.0 / n_ops))


def prior_components(space: str, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The hardware-agnostic prior of ``space``'s cost model (``components``); empty for a space without
    cost quantities (its transfer keeps the source prior alone).

    ``fbnet``: from the analytic per-op table of its layer plan. A space whose encoder gives graph cost features
    (``SpaceEncoder.graph_cost``: any ``GraphEncoder``, whatever made its graphs, and NB201): from
    ``graph_quantities``, with the typical arch the mean of ``x``, the linear features of the archs at hand
    (the transfer's measured archs: their design, not their latencies, so nothing held out is spent).
    """
    if space == "fbnet":
        return _dedicated_components(space)
    if not is_registered(space) or not get_encoder(space).graph_cost or x is None or not len(x):
        return {}
    q, names, shared = graph_quantities()
    x = np.asarray(x, np.float64)
    # a kernel column equal to its type's column on every arch at hand (all of that type's convolutions in one
    # bucket, e.g. a ViT's one patch embedding) adds no extra cost per FLOP that the type's own term lacks:
    # without this, that op's prior variance would be counted twice
    for j, base in enumerate(KERNEL_BASE, start=3 * K):
        if np.allclose(x[:, j], x[:, base], rtol=1e-9, atol=0.0):
            q[j] = 0.0
    return components(q, names, x.mean(0), shared, whole=("dead",))
