"""Plain records passed between the coordinator's stages.

search space -> ``ModelSpec`` -> exporter -> ``ModelArtifact`` -> transport/agent
-> ``agents.records.MeasureResult`` -> ``harness.store`` (one Parquet row each).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """A candidate network before export: which space, which arch, at which input size.

    ``key`` identifies the export uniquely (space, arch, batch, resolution, format, opset and
    exporter version all change the file), so the exporter can cache by it. ``resolution`` None:
    the arch's own (OFA archs carry one) or else the space's default.
    """

    search_space: str
    arch: str
    batch: int = 1
    resolution: int | None = None
    arch_index: int | None = None


@dataclass
class ModelArtifact:
    """An exported model file, content-addressed by ``sha256``, measured as the network ``key``."""

    search_space: str
    arch: str
    path: str
    sha256: str
    format: str
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    batch: int = 1
    resolution: int = 32
    flops: int | None = None
    params: int | None = None
    arch_index: int | None = None
    opset: int | None = None
    #: shapes the agent must feed ({input: dims}); set for the user's ONNX files, whose graphs may have dynamic
    #: dimensions sized by ``--input-shape``/``--batch``/``--resolution``. Empty: the model's own fixed shapes.
    feed_shapes: dict[str, list[int]] = field(default_factory=dict)
    #: which network this is: the file at ``input_shapes`` (``hwlat.spaces.graph.network_key``; the row's
    #: ``model_key``, what resume matches). Empty: ``sha256``, a file at its own shapes (every exported network).
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.sha256
