"""Architecture encodings, computed from the same arch strings the harness measures.

Each search space has one ``SpaceEncoder``: it validates arch strings and turns a batch of them into
three views that the models consume:

* ``flat``   -- a fixed-length vector (op one-hots, op counts, connectivity, analytic FLOPs/params; for
  NB201 also the traced network's graph cost features); the MLP reads it and the diversity sampler
  clusters it.
* ``nodes``/``adj`` -- a small dense graph (the NB201 cell DAG with ops as nodes, or the FBNet layer
  chain); the graph network reads it. Dense adjacency is fine: 8 nodes for NB201, 24 for FBNet.

FLOPs and params are analytic (closed-form per op), so the predictor never builds a torch model;
they only need to rank consistently with the exporter's counts, not match them to the last MAC. NB201's
graph cost features come from a shipped table of its 15625 traced networks (``NB201_TRACED_TABLE``).
New spaces register with ``register_space`` and become available to train/predict/bench at once.
A space with no dedicated encoder is encoded from graphs (``predictor.graph``): ONNX files (``onnx`` rows)
from the graphs of the measured files (``GraphEncoder``: its "archs" are model sha256s); a space hwlat can
build (OFA, ``autoformer``, plug-ins) from its arch strings, by tracing the space's module
(``TracedEncoder``, ``predictor.traced``), registered on first use with no code here.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.errors import ArchError, UnknownSpaceError, UsageError
from agents.files import atomic_write
from hwlat.spaces.fbnet import MACROS as FBNET_MACROS
from hwlat.spaces.fbnet import NUM_LAYERS as FBNET_LAYERS
from hwlat.spaces.fbnet import OPS as FBNET_BLOCKS
from hwlat.spaces.fbnet import STEM_CHANNELS as FBNET_STEM
from hwlat.spaces.fbnet import layer_plan as fbnet_layer_plan
from hwlat.spaces.fbnet import parse as fbnet_parse
from hwlat.spaces.graph import GraphEncoding
from hwlat.spaces.nb201 import OPS as NB201_SPACE_OPS
from hwlat.spaces.nb201 import canonical_archs as nb201_space_archs
from hwlat.spaces.nb201 import ops_to_str as nb201_ops_to_str
from hwlat.spaces.nb201 import output_disconnected as nb201_output_disconnected
from hwlat.spaces.nb201 import parse as nb201_parse
from hwlat.spaces.trace import TRACE_VERSION

from .graph import FEATURES_VERSION as GRAPH_FEATURES_VERSION
from .graph import FLAT_DIM as GRAPH_FLAT_DIM
from .graph import constant_output as graph_constant_output
from .graph import features as graph_features
from .graph import linear as graph_linear
from .traced import traced_rows

log = logging.getLogger("hwlat")


@dataclass
class Encoded:
    """A batch of encoded archs: ``flat`` [B, F], ``nodes`` [B, N, D], ``adj`` [B, N, N] (float32)."""

    flat: np.ndarray
    nodes: np.ndarray
    adj: np.ndarray


class SpaceEncoder:
    """Base class: parse + validate one arch string, emit (flat, nodes, adj) for it."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    #: columns of ``flat`` that form a per-position op one-hot: the features of the linear correction
    #: fitted at transfer (a per-op cost model); the rest (counts, flags, FLOPs) would let one odd sample
    #: (e.g. a disconnected cell) dominate a 5-20 point fit.
    linear_features: slice = slice(None)
    #: whether ``flat`` starts with ``predictor.graph.features`` (``GRAPH_FLAT_DIM`` columns): then ``linear`` gives
    #: ``predictor.graph.linear`` of them (per op type FLOPs, bytes and launches), whose hardware-agnostic prior
    #: ``predictor.opcost.graph_quantities`` describes, and ``linear_features`` is not used
    graph_cost: bool = False
    #: the one input size (batch, resolution) whose network an analytic encoder's features describe (its FLOPs,
    #: its layer shapes); None where each network's own size is encoded (graphs, traces). Rows measured at
    #: another size are not this encoder's to encode (``predictor.data`` sends them to the graph path).
    size: tuple[int, int] | None = None

    def encode_one(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (flat, nodes, adj) for one arch; raise ``ArchError`` if it is not in the space."""
        raise NotImplementedError

    def linear(self, flat: np.ndarray) -> np.ndarray:
        """The per-op cost model's features of encoded archs (``flat`` rows)."""
        if self.graph_cost:
            return graph_linear(np.asarray(flat)[:, :GRAPH_FLAT_DIM])
        return flat[:, self.linear_features]

    def enumerate(self) -> list[str] | None:
        """Every arch of the space in canonical order, or None when the space is too large to list."""
        return None

    def encode(self, archs: Sequence[str]) -> Encoded:
        """Encode a batch; archs are cached because benchmarks encode the same space many times."""
        rows = [self._cached(a) for a in archs]
        if not rows:
            f, n, a = self.encode_one(self.example())
            return Encoded(np.zeros((0, *f.shape), np.float32), np.zeros((0, *n.shape), np.float32),
                           np.zeros((0, *a.shape), np.float32))
        return Encoded(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                       np.stack([r[2] for r in rows]))

    def example(self) -> str:
        """A valid arch, used to size empty batches."""
        raise NotImplementedError

    def degenerate(self, archs: Sequence[str]) -> np.ndarray:
        """Which archs the space itself marks as degenerate (bool [B]); benchmarks score them apart."""
        return np.zeros(len(archs), bool)

    def _cached(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get(arch)
        if hit is None:
            hit = tuple(x.astype(np.float32) for x in self.encode_one(arch))
            cache[arch] = hit
        return hit


# ----------------------------------------------------------------------------------------- NB201

NB201_OPS = NB201_SPACE_OPS
#: the six cell edges (target node i, source node j) in arch-string order
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
#: NB201's CIFAR network: 3 stages x 5 cells, channels 16/32/64 at 32/16/8 px; every stage has the
#: same C*C*H*W, so one cell conv costs the same MACs in each stage.
_NB201_STAGES = ((16, 32), (32, 16), (64, 8))


def _nb201_parse(arch: str) -> list[str]:
    """The six edge ops in ``NB201_EDGES`` order, by the space's own grammar (``ArchError`` otherwise)."""
    return list(nb201_parse(arch))


def nb201_canonical(arch: str) -> str:
    """The canonical NB201 string (edges listed by source node), as the harness writes it."""
    return nb201_ops_to_str(nb201_parse(arch))


def _nb201_active(ops: list[str]) -> tuple[list[bool], bool]:
    """Which edges lie on an input->output path (others are dead compute), and is the output reached."""
    live = [op != "none" for op in ops]
    from_in = {0}
    for (i, j), ok in zip(NB201_EDGES, live, strict=True):
        if ok and j in from_in:
            from_in.add(i)
    to_out = {3}
    for (i, j), ok in reversed(list(zip(NB201_EDGES, live, strict=True))):
        if ok and i in to_out:
            to_out.add(j)
    active = [ok and j in from_in and i in to_out for (i, j), ok in zip(NB201_EDGES, live, strict=True)]
    return active, 3 in from_in


def _nb201_flops_params(ops: list[str]) -> tuple[float, float]:
    """Analytic MACs and params of the full CIFAR network (cells + fixed stem/reductions/head)."""
    macs, params = _nb201_flops_params_counts(ops.count("nor_conv_1x1"), ops.count("nor_conv_3x3"))
    return float(macs), float(params)


def _nb201_flops_params_counts(n1: Any, n3: Any) -> tuple[Any, Any]:
    """MACs and params from the cell's 1x1 and 3x3 conv counts (scalars or arrays: the table uses arrays)."""
    macs = 3 * 16 * 9 * 32 * 32.0  # stem conv
    params = 3 * 16 * 9.0
    for c, hw in _NB201_STAGES:
        per_conv = c * c * hw * hw
        macs += 5 * (n1 + 9 * n3) * per_conv
        params += 5 * (n1 + 9 * n3) * c * c + 5 * 2 * c * (n1 + n3)
    # two residual reduction blocks (3x3 s2 + 3x3 + 1x1 shortcut) and the classifier
    for cin, cout, hw in ((16, 32, 16), (32, 64, 8)):
        macs += (9 * cin * cout + 9 * cout * cout + cin * cout) * hw * hw
        params += 9 * cin * cout + 9 * cout * cout + cin * cout
    macs += 64 * 10
    params += 64 * 10 + 10
    return macs, params


class NB201Encoder(SpaceEncoder):
    """NAS-Bench-201 cells: 6 edges x 5 ops.

    Flat: the graph features of the cell's whole network as the space builds it (``predictor.graph.features``
    of its trace, ``GRAPH_FLAT_DIM`` columns, from ``NB201_TRACED_TABLE``), then op one-hot per edge (30), the
    same masked to *active* edges (30; dead edges cost nothing on runtimes that prune them, e.g. pixel3/raspi4
    report ~0 ms for disconnected cells), op counts (5), active op counts (5), output-connected flag, log MACs
    and log params.
    Graph: 8 nodes (input, six op nodes, output); an arc u->v exists when data flows u->v, and none-ops
    carry no arcs (they block flow).

    The cost model's features are the traced graph's (``graph_cost``): FLOPs, bytes and launches per op type,
    per kernel size and of the dead operators, as for any graph-encoded space. On HELP's devices they fit
    better than the edge one-hots (Eyeriss charges every pooling edge as the network runs it; raspi4 and pixel3
    skip the operators ``none`` edges cut off), and the hardware-agnostic prior is then the graph spaces' one
    (docs/predictor.md, "NB201: traced cost features beside the cell encoding"). The 8-node cell graph stays
    the networks' input: a 30-node traced graph made every task-seed ~3x slower for no better ranking.
    """

    name = "nb201"
    aliases = ("nasbench201", "nb201", "nas-bench-201", "nasbench-201")
    graph_cost = True
    size = (1, 32)  # the CIFAR network of _NB201_STAGES

    def example(self) -> str:
        return "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"

    def _traced(self) -> np.ndarray:
        traced = self.__dict__.get("_traced_flat")
        if traced is None:
            traced = self.__dict__["_traced_flat"] = nb201_traced_flat()
        return traced

    def encode_one(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ops = _nb201_parse(arch)
        active, connected = _nb201_active(ops)
        k = len(NB201_OPS)
        onehot = np.zeros((6, k))
        for e, op in enumerate(ops):
            onehot[e, NB201_OPS.index(op)] = 1.0
        act = onehot * np.array(active, float)[:, None]
        macs, params = _nb201_flops_params(ops)
        row = sum(NB201_OPS.index(op) * k ** (5 - e) for e, op in enumerate(ops))  # itertools.product order
        flat = np.concatenate([self._traced()[row], onehot.ravel(), act.ravel(), onehot.sum(0), act.sum(0),
                               [float(connected), np.log(macs) - 17.0, np.log(params) - 11.0]])
        nodes = np.zeros((8, k + 3))
        nodes[0, k] = 1.0
        nodes[7, k + 1] = 1.0
        nodes[1:7, :k] = onehot
        nodes[1:7, k + 2] = active
        adj = np.zeros((8, 8))
        for e, (i, j) in enumerate(NB201_EDGES):
            if ops[e] == "none":
                continue
            if j == 0:
                adj[0, 1 + e] = 1.0
            for f, (i2, _j2) in enumerate(NB201_EDGES):
                if i2 == j and ops[f] != "none":
                    adj[1 + f, 1 + e] = 1.0
            if i == 3:
                adj[1 + e, 7] = 1.0
        return flat, nodes, adj

    def enumerate(self) -> list[str]:
        return nb201_all_archs()

    def degenerate(self, archs: Sequence[str]) -> np.ndarray:
        """Cells whose output is cut off from the input (``hwlat.spaces.nb201.output_disconnected``): pruning
        runtimes run them in microseconds instead of milliseconds."""
        return np.array([nb201_output_disconnected(a) for a in archs], bool)

    def encode(self, archs: Sequence[str]) -> Encoded:
        """Encode a batch by table lookup: the space has only 5**6 cells, so all of them are encoded once,
        vectorised (~30 ms), and a batch is a dict lookup per string plus fancy indexing. This is what
        keeps whole-space prediction well under a second in a fresh process; ``encode_one`` stays the
        readable reference (a test checks the two agree on every cell)."""
        table = self.__dict__.get("_table")
        if table is None:
            table = self.__dict__["_table"] = _nb201_table(self._traced())
        index, flat, nodes, adj = table
        try:
            rows = np.fromiter((index[a] for a in archs), np.int64, count=len(archs))
        except (KeyError, TypeError):  # not all canonical: the space's grammar canonicalises or names the bad one
            rows = np.fromiter((index[nb201_canonical(a)] for a in archs), np.int64, count=len(archs))
        return Encoded(flat[rows], nodes[rows], adj[rows])


def _nb201_product_archs() -> list[str]:
    """Every NB201 cell's canonical string in ``itertools.product`` op order (edges in ``NB201_EDGES`` order)."""
    return [f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"
            for o in itertools.product(NB201_OPS, repeat=6)]


#: the graph features (``predictor.graph.features``) of every NB201 cell's network as the space builds it,
#: traced (``hwlat.spaces.trace``, batch 1, 32 px), rows in ``itertools.product`` op order. Shipped because
#: tracing the 15625 networks takes ~5 CPU-minutes and encoding the whole space must stay a lookup;
#: ``write_nb201_traced_table`` writes it, and a test checks it against fresh traces.
NB201_TRACED_TABLE = Path(__file__).resolve().parent / "pretrained" / f"nb201-traced-v{GRAPH_FEATURES_VERSION}.npz"


def _nb201_traced_meta() -> dict[str, Any]:
    """What the table's rows depend on: the feature layout, the tracer and the space's network."""
    from hwlat.spaces import get_space

    return {"features_version": GRAPH_FEATURES_VERSION, "trace_version": TRACE_VERSION,
            "space": get_space("nb201").cache_identity()}


def _trace_nb201() -> np.ndarray:
    return np.stack([r[0] for r in traced_rows("nb201", _nb201_product_archs())]).astype(np.float32)


def nb201_traced_flat() -> np.ndarray:
    """[15625, GRAPH_FLAT_DIM] traced graph features in ``itertools.product`` order: ``NB201_TRACED_TABLE``, or,
    where that is missing or was written for another feature layout, tracer or network, traced now (minutes
    once; ``predictor.traced`` caches the rows on disk)."""
    try:
        with np.load(NB201_TRACED_TABLE, allow_pickle=False) as z:
            meta, flat = json.loads(str(z["meta"])), z["flat"]
        if meta == _nb201_traced_meta() and flat.shape == (len(NB201_OPS) ** 6, GRAPH_FLAT_DIM):
            return flat.astype(np.float32)
        reason = f"it was written for {meta}"
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc)
    log.warning("cannot use %s (%s): tracing the 15625 NB201 networks instead", NB201_TRACED_TABLE.name, reason)
    return _trace_nb201()


def write_nb201_traced_table(path: Path = NB201_TRACED_TABLE) -> None:
    """Trace every NB201 cell's network and write the table ``nb201_traced_flat`` reads (after a change to the
    tracer, the graph features or the space's network; docs/datasets.md)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, flat=_trace_nb201(), meta=np.array(json.dumps(_nb201_traced_meta())))
    atomic_write(path, buf.getvalue())


def _nb201_table(traced: np.ndarray) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray]:
    """(arch -> row, flat, nodes, adj) for every NB201 cell, rows in ``itertools.product`` op order, given the
    cells' traced graph features in that order.

    The same features as ``NB201Encoder.encode_one``, computed with array ops over all cells at once.
    """
    k = len(NB201_OPS)
    ops = np.array(list(itertools.product(range(k), repeat=6)), np.int64)  # [B, 6] in NB201_EDGES order
    index = {a: i for i, a in enumerate(_nb201_product_archs())}
    b = len(ops)
    live = ops != NB201_OPS.index("none")
    reach = [np.ones(b, bool), np.zeros(b, bool), np.zeros(b, bool), np.zeros(b, bool)]  # from the input
    for (i, j), ok in zip(NB201_EDGES, live.T, strict=True):
        reach[i] = reach[i] | (ok & reach[j])
    to_out = [np.zeros(b, bool), np.zeros(b, bool), np.zeros(b, bool), np.ones(b, bool)]
    for (i, j), ok in reversed(list(zip(NB201_EDGES, live.T, strict=True))):
        to_out[j] = to_out[j] | (ok & to_out[i])
    active = np.stack([live[:, e] & reach[j] & to_out[i] for e, (i, j) in enumerate(NB201_EDGES)], 1)
    onehot = np.eye(k)[ops]  # [B, 6, k]
    act = onehot * active[:, :, None]
    n1 = (ops == NB201_OPS.index("nor_conv_1x1")).sum(1).astype(float)
    n3 = (ops == NB201_OPS.index("nor_conv_3x3")).sum(1).astype(float)
    macs, params = _nb201_flops_params_counts(n1, n3)
    flat = np.concatenate([traced, onehot.reshape(b, -1), act.reshape(b, -1), onehot.sum(1), act.sum(1),
                           reach[3][:, None].astype(float), np.log(macs)[:, None] - 17.0,
                           np.log(params)[:, None] - 11.0], axis=1)
    nodes = np.zeros((b, 8, k + 3))
    nodes[:, 0, k] = 1.0
    nodes[:, 7, k + 1] = 1.0
    nodes[:, 1:7, :k] = onehot
    nodes[:, 1:7, k + 2] = active
    adj = np.zeros((b, 8, 8))
    for e, (i, j) in enumerate(NB201_EDGES):
        if j == 0:
            adj[:, 0, 1 + e] = live[:, e]
        for f, (i2, _j2) in enumerate(NB201_EDGES):
            if i2 == j:
                adj[:, 1 + f, 1 + e] = live[:, e] & live[:, f]
        if i == 3:
            adj[:, 1 + e, 7] = live[:, e]
    return index, flat.astype(np.float32), nodes.astype(np.float32), adj.astype(np.float32)


def nb201_all_archs() -> list[str]:
    """All 15625 NB201 cells in the canonical NAS-Bench-201 ``arch_index`` order (the harness's generator,
    checked there against the benchmark's own index table)."""
    return list(nb201_space_archs())


# ----------------------------------------------------------------------------------------- FBNet

FBNET_OPS = FBNET_BLOCKS
#: (kernel, expansion, groups) per op; skip has none of them
_FBNET_ATTR = {op: (int(op[1]), int(op.split("_")[1][1:]), 2 if op.endswith("g2") else 1)
               for op in FBNET_OPS if op != "skip"}
#: The harness's default FBNet network (HW-NAS-Bench's CIFAR-100 setting): the costed layers are the timed ones.
_FBNET_MACRO = FBNET_MACROS["cifar100"]


def _fbnet_layer_shapes(resolution: int = _FBNET_MACRO.resolution) -> list[tuple[int, int, int, int]]:
    """(c_in, c_out, stride, output px) of each searchable layer, from the harness's layer plan."""
    shapes = []
    hw = resolution // _FBNET_MACRO.stem_stride
    for cin, cout, stride in fbnet_layer_plan(_FBNET_MACRO):
        hw = max(1, hw // stride)
        shapes.append((cin, cout, stride, hw))
    return shapes


_FBNET_SHAPES = _fbnet_layer_shapes()
_FBNET_STEM_PX = (_FBNET_MACRO.resolution // _FBNET_MACRO.stem_stride) ** 2
_FBNET_LAST = _FBNET_SHAPES[-1]
#: MACs and params outside the searchable layers: stem conv, 1x1 head, classifier
_FBNET_FIXED_MACS = (3 * FBNET_STEM * 9 * _FBNET_STEM_PX
                     + _FBNET_LAST[1] * _FBNET_MACRO.head_channels * _FBNET_LAST[3] ** 2
                     + _FBNET_MACRO.head_channels * _FBNET_MACRO.num_classes) * 1.0
_FBNET_FIXED_PARAMS = (3 * FBNET_STEM * 9 + _FBNET_LAST[1] * _FBNET_MACRO.head_channels
                       + _FBNET_MACRO.head_channels * _FBNET_MACRO.num_classes) * 1.0


def _fbnet_layer_cost(op: str, cin: int, cout: int, stride: int, hw: int) -> tuple[float, float]:
    """MACs and params of one inverted-residual block (1x1 expand, kxk depthwise, 1x1 project)."""
    if op == "skip":
        # a skip with a shape change is a 1x1 conv in FBNet; otherwise identity
        if cin != cout or stride != 1:
            return float(cin * cout * hw * hw), float(cin * cout)
        return 0.0, 0.0
    k, e, g = _FBNET_ATTR[op]
    mid = cin * e
    hw_in = hw * stride
    macs = (cin * mid / g) * hw_in * hw_in + mid * k * k * hw * hw + (mid * cout / g) * hw * hw
    params = cin * mid / g + mid * k * k + mid * cout / g
    return macs, params


class FBNetEncoder(SpaceEncoder):
    """FBNet: 22 layers, each one of 9 ops (kernel 3/5, expansion 1/3/6, groups 1/2, or skip).

    Flat: op one-hot per layer (198), per-layer log MACs (22), op counts (9), log total MACs/params.
    Graph: a chain input -> 22 layers -> output; node features are the op one-hot plus its kernel,
    expansion, group, stage position and the layer's log MACs, so the graph net sees where each op sits.
    """

    name = "fbnet"
    aliases = ("fbnet", "fbnet_space")
    linear_features = slice(0, FBNET_LAYERS * len(FBNET_OPS))
    size = (1, _FBNET_MACRO.resolution)  # the layer shapes of _FBNET_SHAPES

    def example(self) -> str:
        return "|".join(["k3_e1"] * FBNET_LAYERS)

    def encode_one(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        toks = fbnet_parse(arch)  # the space's grammar: ArchError naming what is wrong
        k = len(FBNET_OPS)
        onehot = np.zeros((FBNET_LAYERS, k))
        layer_macs = np.zeros(FBNET_LAYERS)
        total_macs, total_params = _FBNET_FIXED_MACS, _FBNET_FIXED_PARAMS
        for i, (op, shape) in enumerate(zip(toks, _FBNET_SHAPES, strict=True)):
            onehot[i, FBNET_OPS.index(op)] = 1.0
            macs, params = _fbnet_layer_cost(op, *shape)
            layer_macs[i] = np.log1p(macs) / 16.0
            total_macs += macs
            total_params += params
        flat = np.concatenate([onehot.ravel(), layer_macs, onehot.sum(0) / 4.0,
                               [np.log(total_macs) - 18.0, np.log(total_params) - 14.0]])
        n = FBNET_LAYERS + 2
        nodes = np.zeros((n, k + 7))
        nodes[0, k] = 1.0
        nodes[-1, k + 1] = 1.0
        for i, op in enumerate(toks):
            kk, e, g = _FBNET_ATTR.get(op, (0, 0, 0))
            nodes[1 + i, :k] = onehot[i]
            nodes[1 + i, k + 2:k + 7] = (kk / 5.0, e / 6.0, g / 2.0, i / FBNET_LAYERS, layer_macs[i])
        adj = np.zeros((n, n))
        adj[np.arange(n - 1), np.arange(1, n)] = 1.0
        return flat, nodes, adj


# ------------------------------------------------------------------------------------- graphs

#: graph features of every network seen in this process, by model sha256 (``add_graphs`` fills it)
_GRAPH_FEATURES: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_GRAPH_FEATURES["empty"] = graph_features(GraphEncoding("empty"))


def add_graphs(encodings: Iterable[GraphEncoding]) -> list[str]:
    """Make networks known to every graph-encoded space by their key (``hwlat.spaces.graph.graph_key``: the
    model's sha256, plus a digest of its input shapes when measured at other shapes than the file's own);
    returns those keys."""
    keys = []
    for enc in encodings:
        if enc.key not in _GRAPH_FEATURES:
            _GRAPH_FEATURES[enc.key] = graph_features(enc)
        keys.append(enc.key)
    return keys


def add_graph_features(keys: Sequence[str], flat: np.ndarray, nodes: np.ndarray, adj: np.ndarray) -> None:
    """Make networks known by precomputed ``graph.features`` rows (a benchmark that encodes a whole space
    keeps arrays, not the per-operator encodings: 15625 NB201 encodings are ~5 GB as Python objects)."""
    for i, key in enumerate(keys):
        _GRAPH_FEATURES[key] = (flat[i], nodes[i], adj[i])


class GraphEncoder(SpaceEncoder):
    """Any network, from the graph of the ONNX file that was measured (``predictor.graph``).

    An "arch" is the model file's sha256 (``model_sha256`` in the dataset); its features come from the
    dataset's ``_graphs/`` folder or from the ONNX file itself (``add_graphs``). Flat: per op type log
    FLOPs, bytes, launches and params, plus totals; graph view: the op-type graph (one node per op type).
    The cost model's features are the raw per-type FLOPs, bytes and launches (``graph.linear``): latency
    is close to additive over operators, with a per-type cost per FLOP, per byte and per launch.
    """

    name = "onnx"
    aliases = ("onnx", "graph")
    graph_cost = True

    def __init__(self, name: str = "onnx") -> None:
        self.name = name
        self.aliases = (name,) if name != "onnx" else GraphEncoder.aliases

    def example(self) -> str:
        return "empty"

    def encode_one(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hit = _GRAPH_FEATURES.get(arch) if isinstance(arch, str) else None
        if hit is None:
            raise ArchError(f"{self.name}: no graph encoding for model {arch!r} (give the ONNX file, or data "
                            "whose _graphs folder holds it)")
        return hit

    def _cached(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.encode_one(arch)

    def degenerate(self, archs: Sequence[str]) -> np.ndarray:
        """Networks whose output does not depend on their input (``graph.constant_output``: every operator dead,
        e.g. an NB201 cell cut off by ``none`` edges): some runtimes fold them to nothing (~0 ms), so their
        relative errors are scored apart, whatever the space."""
        return graph_constant_output(self.encode(archs).flat)


class TracedEncoder(GraphEncoder):
    """A space that hwlat can build (``hwlat.spaces.get_space``: OFA, ``autoformer``, plug-ins) but that has no
    dedicated encoder: its arch strings are encoded by tracing the space's own torch module
    (``hwlat.spaces.trace``, ``predictor.traced``), for training rows and for candidate pools alike.

    Same features as ``GraphEncoder`` (per op type FLOPs, bytes, launches, params; the op-type graph), so the
    same models and cost model apply. Keys of ONNX graphs added with ``add_graphs`` (sha256) are accepted too.
    The space itself is looked up when an arch is first encoded, so a saved model of a plug-in space loads in
    a process that does not know the plug-in (it then predicts only what needs no tracing).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.aliases = (name,)
        #: rows of networks measured at another input size than their arch string names (``measured_keys``)
        self._measured: dict[str, tuple] = {}

    def _space(self) -> Any:
        from hwlat.spaces import get_space

        return get_space(self.name)

    def measured_keys(self, archs: Sequence[str], batches: Sequence[int | None],
                      resolutions: Sequence[int | None], shas: Sequence[str | None]) -> list[str]:
        """The key of each measured row (arch, recorded batch and resolution, ``model_sha256``): its canonical
        arch string when that string names the network that was measured -- batch 1 at the arch's own or the
        space's default resolution, what ``encode`` traces an arch string as -- else its ``model_sha256``,
        whose features are traced here at the recorded batch and resolution.

        Why: an arch string names one network only at one input size. A row measured with ``--batch`` or
        ``--resolution`` is another network (its FLOPs scale with both), which must neither be encoded at
        the default size nor averaged with the same arch's rows at other sizes. A model's sha256 is how the
        graph-encoded spaces name a measured network already (so ``predict`` of that ONNX file finds it),
        and rows at the default size keep their arch strings (profile pools and ``--archs`` are strings).
        A missing batch or resolution (a published table) means the default.
        """
        space = self._space()
        keys: list[str] = []
        sized: dict[tuple[int, int], dict[str, str]] = {}  # (batch, resolution) -> {sha: canonical arch}
        for arch, batch, res, sha in zip(archs, batches, resolutions, shas, strict=True):
            canon = space.validate(arch)  # ArchError naming what is wrong
            batch = 1 if _missing(batch) else int(batch)
            res = space.resolution_for(canon, None if _missing(res) else int(res))
            if batch == 1 and res == space.resolution_for(canon):
                keys.append(canon)
                continue
            if _missing(sha) or not str(sha):
                raise UsageError(f"{self.name} arch {arch!r} was measured at batch {batch}, resolution {res} (not "
                                 "the size its arch string names): its row needs a model_sha256")
            keys.append(str(sha))
            if str(sha) not in self._measured:
                sized.setdefault((batch, res), {})[str(sha)] = canon
        for (batch, res), todo in sized.items():
            rows = traced_rows(self.name, list(todo.values()), batch, res)
            self._measured.update(zip(todo, rows, strict=True))
        return keys

    def _rows(self, archs: Sequence[str]) -> list[tuple]:
        space = None
        canon: list[str | None] = []
        for a in archs:
            if isinstance(a, str) and (a in self._measured or a in _GRAPH_FEATURES):
                canon.append(None)
                continue
            space = space or self._space()
            if not isinstance(a, str):
                raise ArchError(f"{self.name}: arch must be a string, got {type(a).__name__}")
            canon.append(space.validate(a))  # ArchError naming what is wrong
        todo = [c for c in canon if c is not None]
        rows = iter(traced_rows(self.name, todo) if todo else [])
        return [next(rows) if c is not None else self._measured[a] if a in self._measured
                else (*_GRAPH_FEATURES[a], None, None) for a, c in zip(archs, canon, strict=True)]

    def encode_one(self, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._rows([arch])[0][:3]

    def enumerate(self) -> list[str] | None:
        """Every arch of an enumerable space (a plug-in may define ``all_archs``), else None."""
        space = self._space()
        return list(space.all_archs()) if space.enumerable else None

    def encode(self, archs: Sequence[str]) -> Encoded:
        if not archs:
            return super().encode(archs)
        rows = self._rows(list(archs))
        return Encoded(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                       np.stack([r[2] for r in rows]))

    def flops(self, archs: Sequence[str]) -> np.ndarray:
        """Exact FLOPs (2 x MACs) of each arch's network, from its trace."""
        return np.array([np.nan if r[3] is None else r[3] for r in self._rows(list(archs))], np.float64)


def _missing(value: Any) -> bool:
    """None or NaN (a Parquet null read by pandas)."""
    return value is None or (isinstance(value, float) and value != value)


def _autoregister(name: str) -> Callable[[], SpaceEncoder] | None:
    """The encoder of a space hwlat can build but predictor/ has no dedicated encoder for (built-in OFA and
    ``autoformer``, an installed ``hwlat.spaces`` entry point, a ``FILE.py:Class`` spec), registered under
    the space's name and the name it was asked by; None for a name ``get_space`` does not know."""
    from hwlat.spaces import get_space

    try:
        space = get_space(name)
    except UsageError:
        return None
    key = space.name.lower()
    factory = _SPACES.get(key)
    if factory is None:
        def factory(n: str = space.name) -> SpaceEncoder:
            return TracedEncoder(n)
        _SPACES[key] = factory
    _SPACES[name.lower()] = factory
    return factory


def _factory(name: str) -> Callable[[], SpaceEncoder] | None:
    key = str(name).strip()
    return _SPACES.get(key.lower()) or (_autoregister(key) if key else None)


def register_traced_space(name: str) -> str:
    """Encode the space ``name`` by tracing its module (a saved model's traced space, before it is looked up)."""
    canon = str(name).strip().lower()
    if canon not in _SPACES:
        _SPACES[canon] = lambda: TracedEncoder(str(name).strip())
    return canon


def is_traced_space(name: str) -> bool:
    return isinstance(get_encoder(name), TracedEncoder)


def register_graph_space(name: str) -> str:
    """Encode the space ``name`` (one without a dedicated encoder) from its networks' graphs."""
    canon = str(name).strip().lower()
    if canon not in _SPACES:
        _SPACES[canon] = lambda: GraphEncoder(canon)
    return canon


def is_graph_space(name: str) -> bool:
    return isinstance(get_encoder(name), GraphEncoder)


# ------------------------------------------------------------------------------------- registry

_SPACES: dict[str, Callable[[], SpaceEncoder]] = {}
_INSTANCES: dict[str, SpaceEncoder] = {}


def register_space(factory: Callable[[], SpaceEncoder]) -> None:
    """Make a space available under its name and aliases (the encoding layer's extension point)."""
    enc = factory()
    for alias in (enc.name, *enc.aliases):
        _SPACES[alias.lower()] = factory


register_space(NB201Encoder)
register_space(FBNetEncoder)
register_space(GraphEncoder)


def canonical_space(name: str) -> str:
    """Map a space name or alias (``nasbench201``) to its canonical name (``nb201``)."""
    factory = _factory(name)
    if factory is None:
        raise UnknownSpaceError(f"unknown search space {name!r}; known: {', '.join(known_spaces())}")
    return factory().name


def is_registered(name: str) -> bool:
    """Whether a space name or alias has an encoder (dedicated, or a graph space registered so far)."""
    return _factory(name) is not None


def space_key(name: str) -> str:
    """The canonical name of a space with an encoder, else the lower-cased name (a would-be graph space)."""
    return canonical_space(name) if is_registered(name) else str(name).strip().lower()


def known_spaces() -> list[str]:
    """Canonical names of the registered spaces."""
    return sorted({f().name for f in _SPACES.values()})


def get_encoder(name: str) -> SpaceEncoder:
    """The (shared, cache-holding) encoder of a space."""
    canon = canonical_space(name)
    if canon not in _INSTANCES:
        _INSTANCES[canon] = _SPACES[canon.lower()]()
    return _INSTANCES[canon]


def analytic_flops(space: str, archs: Sequence[str]) -> np.ndarray:
    """FLOPs (2 x multiply-accumulates, the exporter's unit) of each arch from the encoders' cost model,
    without building a torch model.

    Cheap enough for a whole space (15625 NB201 cells in well under a second), which is what reports that
    plot FLOPs against predicted latency need; exact per-model counts come from the exporter.
    """
    canon = canonical_space(space)
    if canon == "nb201":
        return 2 * np.array([_nb201_flops_params(_nb201_parse(a))[0] for a in archs])
    if canon == "fbnet":
        return 2 * np.array([_FBNET_FIXED_MACS + sum(_fbnet_layer_cost(op, *shape)[0]
                                         for op, shape in zip(fbnet_parse(a), _FBNET_SHAPES, strict=True))
                             for a in archs])
    enc = get_encoder(canon)
    if isinstance(enc, TracedEncoder):
        return enc.flops(archs)
    raise UnknownSpaceError(f"no analytic FLOPs for search space {space!r}")
