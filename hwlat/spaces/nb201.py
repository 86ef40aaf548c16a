"""NAS-Bench-201 (Dong & Yang, ICLR 2020): a 4-node cell with 5 ops per edge, 15625 architectures.

Arch strings are NB201's own: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` where ``op~j`` on the i-th
group is the op on the edge from node j to node i. The canonical index is NB201's: all cells
enumerated node by node (node 1's single edge varies slowest; within a node the edge from node 0
is the outermost loop; ops in ``OPS`` order), then ``random.seed(88); random.shuffle(archs)``.
This reproduces NB201's ``arch_index`` exactly (checked against all 15625 rows of its table).

The network is NB201's CIFAR macro-architecture (``TinyNetwork`` with C=16, N=5): see docs/spaces.md.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator

import torch
from torch import nn

from agents.errors import ArchError, UsageError
from hwlat.spaces import SearchSpace, check_count, quote

#: Edge operations in NB201's order (the index is the op code used in NB201's tables).
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (to-node, from-node) of the six edges, in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
_FORMAT_HINT = "expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op in " + ", ".join(OPS)


def ops_to_str(ops: tuple[str, ...] | list[str]) -> str:
    """The canonical arch string of six edge ops given in ``EDGES`` order."""
    nodes, k = [], 0
    for i in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{ops[k + j]}~{j}" for j in range(i)) + "|")
        k += i
    return "+".join(nodes)


@functools.cache
def canonical_archs() -> tuple[str, ...]:
    archs = [ops_to_str(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]
    # NB201 did random.seed(88); random.shuffle(archs). A private Random(88) gives the same
    # permutation without touching the caller's global random state.
    random.Random(88).shuffle(archs)
    return tuple(archs)


@functools.cache
def _index_of() -> dict[str, int]:
    return {arch: i for i, arch in enumerate(canonical_archs())}


def parse(arch: str) -> tuple[str, ...]:
    """The six edge ops of an NB201 arch string, in ``EDGES`` order; ``ArchError`` if malformed.

    Edges inside a node may be listed in any order (``|skip_connect~1|none~0|`` is accepted);
    the canonical string lists them by source node.
    """
    if not isinstance(arch, str):
        raise ArchError(f"nb201 arch {quote(arch)} is not a string")
    text = arch.strip()
    groups = text.split("+")
    if len(groups) != NUM_NODES - 1:
        raise ArchError(
            f"nb201 arch {quote(arch)} has {len(groups)} node group(s) separated by '+', "
            f"expected {NUM_NODES - 1} ({_FORMAT_HINT})"
        )
    ops: list[str] = []
    for i, group in enumerate(groups, start=1):
        if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
            raise ArchError(f"nb201 arch {quote(arch)}: node {i} group {group!r} must be |op~j|...| ({_FORMAT_HINT})")
        found: dict[int, str] = {}
        for token in group[1:-1].split("|"):
            op, sep, src = token.partition("~")
            if not sep or not src.isdigit():
                raise ArchError(f"nb201 arch {quote(arch)}: edge {token!r} of node {i} must be op~j ({_FORMAT_HINT})")
            if op not in OPS:
                raise ArchError(f"nb201 arch {quote(arch)}: unknown op {op!r} on node {i} (known: {', '.join(OPS)})")
            j = int(src)
            if j >= i:
                raise ArchError(
                    f"nb201 arch {quote(arch)}: node {i} has an edge from node {j}; only 0..{i - 1} allowed"
                )
            if j in found:
                raise ArchError(f"nb201 arch {quote(arch)}: node {i} has two edges from node {j}")
            found[j] = op
        if len(found) != i:
            raise ArchError(
                f"nb201 arch {quote(arch)}: node {i} has {len(found)} edge(s), expected {i} "
                f"(one from each of nodes 0..{i - 1})"
            )
        ops.extend(found[j] for j in range(i))
    return tuple(ops)


def output_disconnected(arch: str) -> bool:
    """True when no path of non-``none`` edges leads from the cell input to its output.

    Such cells output zeros (15 of them in a network feed only the skip path of the reduction
    blocks), which is why some devices report near-zero latencies for them.
    """
    ops = dict(zip(EDGES, parse(arch), strict=True))
    reach = {0}
    for i in range(1, NUM_NODES):
        if any(j in reach and ops[(i, j)] != "none" for j in range(i)):
            reach.add(i)
    return NUM_NODES - 1 not in reach


class NB201Space(SearchSpace):
    """NAS-Bench-201 on CIFAR: C=16, N=5 cells per stage, 10 classes by default."""

    name = "nb201"
    version = 1

    def __init__(self, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5) -> None:
        self.num_classes = num_classes
        self.channels = channels
        self.cells_per_stage = cells_per_stage

    def cache_identity(self) -> str:
        return f"{super().cache_identity()}-C{self.channels}-N{self.cells_per_stage}-cls{self.num_classes}"

    def size(self) -> int:
        return len(OPS) ** len(EDGES)

    def validate(self, arch: str) -> str:
        return ops_to_str(parse(arch))

    def sample(self, count: int, seed: int) -> list[str]:
        """Distinct archs: arch indices drawn without replacement (``random.Random(seed)``)."""
        check_count(self, count)
        archs = canonical_archs()
        return [archs[i] for i in random.Random(seed).sample(range(len(archs)), count)]

    def degenerate(self, arch: str) -> bool:
        """A cell whose output is cut off from its input (``output_disconnected``): zeros at any latency."""
        return output_disconnected(arch)

    def arch_index(self, arch: str) -> int:
        return _index_of()[self.validate(arch)]

    def arch_at(self, index: int) -> str:
        """The arch string at NB201 index ``index`` (0..15624)."""
        if not isinstance(index, int) or not 0 <= index < self.size():
            raise ArchError(f"nb201 arch index {index!r} out of range 0..{self.size() - 1}")
        return canonical_archs()[index]

    @property
    def enumerable(self) -> bool:
        return True

    def all_archs(self) -> Iterator[str]:
        return iter(canonical_archs())

    def input_shape(self, batch: int = 1, resolution: int = 32) -> list[int]:
        return [batch, 3, resolution, resolution]

    def check_input(self, batch: int, resolution: int) -> None:
        super().check_input(batch, resolution)
        if resolution % 4:
            raise UsageError(
                f"nb201 needs a resolution divisible by 4 (two stride-2 reductions with an AvgPool "
                f"shortcut), got {resolution}"
            )

    def _build(self, arch: str, resolution: int) -> nn.Module:
        return TinyNetwork(parse(arch), self.channels, self.cells_per_stage, self.num_classes)


# -- torch modules (NB201's cell_infers/tiny_network.py, reduced to what inference needs) ----------


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=True),
        )


class Zero(nn.Module):
    """The ``none`` op: multiply by 0, so the graph stays connected (and valid ONNX)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(name)


class InferCell(nn.Module):
    """node0 = input; node_i = sum_{j<i} op_{i,j}(node_j); the output is node 3."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.edges = list(EDGES)
        self.layers = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NUM_NODES):
            total = None
            for (to, src), layer in zip(self.edges, self.layers, strict=True):
                if to == i:
                    out = layer(nodes[src])
                    total = out if total is None else total + out
            nodes.append(total)
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    """NB201's reduction block: two ReLUConvBN 3x3 (first stride 2), AvgPool+1x1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """Stem, N cells at C, reduction, N cells at 2C, reduction, N cells at 4C, BN-ReLU, GAP, FC."""

    def __init__(self, ops: tuple[str, ...], channels: int, cells_per_stage: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        cells: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                cells.append(ResNetBasicblock(c, 2 * c))
                c *= 2
            cells.extend(InferCell(ops, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))
