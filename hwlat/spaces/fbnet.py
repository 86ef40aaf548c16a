"""FBNet (Wu et al., CVPR 2019): 22 searchable layers, 9 candidate blocks each (9^22 architectures).

Arch strings are the 22 block names joined by ``|`` (``k5_e6|skip|k3_e1_g2|...``), the format of
HW-NAS-Bench's FBNet table; ``OPS`` gives the op ids used in its ``op_idx_list`` column.

Two macro-architectures share the 7 stages of FBNet's Table 1 (layers 1,4,4,4,4,4,1; channels
16..352) and differ in strides and head width, as HW-NAS-Bench defines them:

- ``cifar100`` (default): HW-NAS-Bench's CIFAR-100 network, 32x32 input, stem stride 1, stage
  strides 1,1,2,2,1,2,1, 1x1 head to 1504 channels, 100 classes;
- ``imagenet``: FBNet's Table 1 as published, 224x224 input, stem stride 2, stage strides
  1,2,2,2,1,2,1, head to 1984 channels, 1000 classes.

See docs/spaces.md.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from agents.errors import ArchError, UsageError
from hwlat.spaces import SearchSpace, check_count, quote

#: Candidate blocks; a block's index here is its op id.
OPS: tuple[str, ...] = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: Searchable layers and output channels of the 7 stages after the stem (FBNet Table 1).
STAGE_LAYERS: tuple[int, ...] = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS: tuple[int, ...] = (16, 24, 32, 64, 112, 184, 352)
NUM_LAYERS = sum(STAGE_LAYERS)  # 22
STEM_CHANNELS = 16
_BLOCK_RE = re.compile(r"^k(?P<k>[35])_e(?P<e>[136])(?:_g(?P<g>2))?$")


@dataclass(frozen=True)
class Macro:
    """What differs between FBNet's dataset settings (HW-NAS-Bench's ``fbnet_get_metrics``)."""

    name: str
    stem_stride: int
    stage_strides: tuple[int, ...]  # stride of each stage's first layer
    head_channels: int
    num_classes: int
    resolution: int  # the input size the setting was designed for


MACROS: dict[str, Macro] = {
    "cifar100": Macro("cifar100", 1, (1, 1, 2, 2, 1, 2, 1), 1504, 100, 32),
    "imagenet": Macro("imagenet", 2, (1, 2, 2, 2, 1, 2, 1), 1984, 1000, 224),
}


def layer_plan(macro: Macro) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of each of the 22 searchable layers."""
    plan, c_in = [], STEM_CHANNELS
    for layers, c_out, stride in zip(STAGE_LAYERS, STAGE_CHANNELS, macro.stage_strides, strict=True):
        for i in range(layers):
            plan.append((c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    return plan


def parse(arch: str) -> tuple[str, ...]:
    """The 22 block names of an arch string; ``ArchError`` naming what is wrong otherwise."""
    if not isinstance(arch, str):
        raise ArchError(f"fbnet arch {quote(arch)} is not a string")
    tokens = tuple(t.strip() for t in arch.strip().split("|"))
    if len(tokens) != NUM_LAYERS:
        raise ArchError(f"fbnet arch {quote(arch)} has {len(tokens)} '|'-separated block(s), expected {NUM_LAYERS}")
    for pos, token in enumerate(tokens):
        if token not in OPS:
            raise ArchError(
                f"fbnet arch {quote(arch)}: unknown block {token!r} at layer {pos} (known: {', '.join(OPS)})"
            )
    return tokens


class FBNetSpace(SearchSpace):
    """FBNet's space; ``macro`` picks the dataset setting (``MACROS``), ``num_classes`` overrides its classes."""

    name = "fbnet"
    version = 2

    def __init__(self, macro: str = "cifar100", num_classes: int | None = None) -> None:
        if macro not in MACROS:
            raise UsageError(f"unknown FBNet macro-architecture '{macro}' (known: {', '.join(MACROS)})")
        self.macro = MACROS[macro]
        self.num_classes = self.macro.num_classes if num_classes is None else num_classes

    def cache_identity(self) -> str:
        return f"{super().cache_identity()}-{self.macro.name}-cls{self.num_classes}"

    def size(self) -> int:
        return len(OPS) ** NUM_LAYERS

    def validate(self, arch: str) -> str:
        return "|".join(parse(arch))

    def sample(self, count: int, seed: int) -> list[str]:
        """Distinct archs, each layer's block drawn uniformly (``random.Random(seed)``)."""
        check_count(self, count)
        rng = random.Random(seed)
        seen: dict[str, None] = {}
        while len(seen) < count:
            seen.setdefault("|".join(rng.choice(OPS) for _ in range(NUM_LAYERS)))
        return list(seen)

    def from_op_indices(self, indices: Iterable[int]) -> str:
        """Arch string from op ids (``OPS`` order), e.g. HW-NAS-Bench's ``op_idx_list``."""
        idx = list(indices)
        if len(idx) != NUM_LAYERS or not all(isinstance(i, int) and 0 <= i < len(OPS) for i in idx):
            raise ArchError(f"fbnet op ids {quote(idx)}: expected {NUM_LAYERS} integers in 0..{len(OPS) - 1}")
        return "|".join(OPS[i] for i in idx)

    def op_indices(self, arch: str) -> list[int]:
        """Op ids (``OPS`` order) of an arch string."""
        return [OPS.index(t) for t in parse(arch)]

    def input_shape(self, batch: int = 1, resolution: int = 32) -> list[int]:
        return [batch, 3, resolution, resolution]

    def _build(self, arch: str, resolution: int) -> nn.Module:
        return FBNet(parse(arch), self.macro, self.num_classes)


# -- torch modules ----------------------------------------------------------------------------------


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=False))
        super().__init__(*layers)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class IRFBlock(nn.Module):
    """kK_eE[_g2]: 1x1 (group g) expand +BN+ReLU, [shuffle], KxK depthwise +BN+ReLU, 1x1 (group g)
    project +BN; residual add when stride 1 and Cin == Cout."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int, groups: int) -> None:
        super().__init__()
        mid = c_in * expansion
        layers: list[nn.Module] = [ConvBNReLU(c_in, mid, 1, groups=groups)]
        if groups > 1:
            layers.append(ChannelShuffle(groups))
        layers += [
            ConvBNReLU(mid, mid, kernel, stride=stride, groups=mid),
            ConvBNReLU(mid, c_out, 1, groups=groups, relu=False),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def make_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if name == "skip":
        # FBNet's Identity block: a real identity only when the shape does not change.
        if c_in == c_out and stride == 1:
            return nn.Identity()
        return ConvBNReLU(c_in, c_out, 1, stride=stride)
    m = _BLOCK_RE.match(name)
    if m is None:
        raise ValueError(name)
    return IRFBlock(c_in, c_out, stride, int(m["k"]), int(m["e"]), int(m["g"] or 1))


class FBNet(nn.Module):
    """Stem conv 3x3 (16) + BN + ReLU, 22 searchable layers, 1x1 head + BN + ReLU, global pool, FC."""

    def __init__(self, blocks: tuple[str, ...], macro: Macro, num_classes: int) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, STEM_CHANNELS, 3, stride=macro.stem_stride)
        self.blocks = nn.Sequential(
            *(make_block(b, ci, co, s) for b, (ci, co, s) in zip(blocks, layer_plan(macro), strict=True))
        )
        self.head = ConvBNReLU(STAGE_CHANNELS[-1], macro.head_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(macro.head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))
