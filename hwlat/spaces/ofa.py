"""Once-for-all MobileNetV3 (``ofa``): the subnets of OFA's ``ofa_mbv3_d234_e346_k357_w1.0`` supernet.

Registered like any user plug-in: an ``hwlat.spaces`` entry point in pyproject.toml (and the built-in
table, for a checkout that was never installed). The network follows ``OFAMobileNetV3`` of
github.com/mit-han-lab/once-for-all (``get_active_subnet``), width multiplier 1.0; docs/spaces.md lists
the layers. The code is our own; only the architecture's facts are taken from OFA's.

Arch string: JSON ``{"ks": [20 kernel sizes], "e": [20 expand ratios], "d": [5 depths], "r": R}``.
Block ``i`` of stage ``s`` (list position ``4*s + i``) is active when ``i < d[s]``; the canonical form
sets ``ks`` and ``e`` of inactive blocks to 3, so two strings that build the same network have one
canonical string (one cache entry, one dataset key).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from agents.errors import ArchError
from hwlat.spaces import SearchSpace, check_count, dump_json_arch, json_arch, quote

if TYPE_CHECKING:
    import torch

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
RESOLUTIONS = tuple(range(128, 225, 4))
MAX_DEPTH = 4
#: The 5 searchable stages: (output channels, first stride, activation, squeeze-excite).
STAGES = (
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "h_swish", False),
    (112, 1, "h_swish", True),
    (160, 2, "h_swish", True),
)
N_BLOCKS = MAX_DEPTH * len(STAGES)
STEM_CH = 16
FINAL_EXPAND_CH = 960
FEATURE_MIX_CH = 1280
NUM_CLASSES = 1000
#: Value that inactive blocks' ks and e take in the canonical form.
INACTIVE = 3
_KEYS = ("ks", "e", "d", "r")


def make_divisible(v: float, divisor: int = 8) -> int:
    """OFA's (and TF MobileNet's) channel rounding: nearest multiple of ``divisor``, never 10% below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class OFAMobileNetV3Space(SearchSpace):
    """OFA MobileNetV3 w1.0: kernel {3,5,7}, expand {3,4,6} per block, depth {2,3,4} per stage, r 128..224."""

    name = "ofa"
    version = 1
    default_resolution = 224

    def size(self) -> int:
        per_stage = sum((len(KERNELS) * len(EXPANDS)) ** d for d in DEPTHS)
        return per_stage ** len(STAGES) * len(RESOLUTIONS)

    # -- arch strings ----------------------------------------------------------------------------
    def parse(self, arch: str) -> dict[str, Any]:
        """The arch as ``{"ks": [...], "e": [...], "d": [...], "r": int}``, canonical; ``ArchError`` if bad."""
        obj = json_arch("ofa", arch, _KEYS)
        ks = _int_list(arch, obj, "ks", N_BLOCKS, KERNELS)
        e = _int_list(arch, obj, "e", N_BLOCKS, EXPANDS)
        d = _int_list(arch, obj, "d", len(STAGES), DEPTHS)
        r = obj["r"]
        if type(r) is not int or r not in RESOLUTIONS:
            raise ArchError(f"ofa arch {quote(arch)}: r must be an integer in 128, 132, ..., 224, got {r!r}")
        for s, depth in enumerate(d):
            for i in range(depth, MAX_DEPTH):
                ks[MAX_DEPTH * s + i] = e[MAX_DEPTH * s + i] = INACTIVE
        return {"ks": ks, "e": e, "d": d, "r": r}

    def validate(self, arch: str) -> str:
        return _dump(self.parse(arch))

    def arch_resolution(self, arch: str) -> int | None:
        return int(self.parse(arch)["r"])

    def sample(self, count: int, seed: int) -> list[str]:
        """Like OFA's ``sample_active_subnet``: every ks, e and d uniform, plus a uniform resolution."""
        check_count(self, count)
        rng = random.Random(seed)
        out: list[str] = []
        seen: set[str] = set()
        while len(out) < count:
            raw = {
                "ks": [rng.choice(KERNELS) for _ in range(N_BLOCKS)],
                "e": [rng.choice(EXPANDS) for _ in range(N_BLOCKS)],
                "d": [rng.choice(DEPTHS) for _ in STAGES],
                "r": rng.choice(RESOLUTIONS),
            }
            arch = self.validate(_dump(raw))
            if arch not in seen:
                seen.add(arch)
                out.append(arch)
        return out

    # -- the network -----------------------------------------------------------------------------
    def input_shape(self, batch: int = 1, resolution: int = 224) -> list[int]:
        return [batch, 3, resolution, resolution]

    def _build(self, arch: str, resolution: int) -> torch.nn.Module:
        return _build_net(self.parse(arch))


def _int_list(arch: str, obj: dict[str, Any], key: str, length: int, allowed: tuple[int, ...]) -> list[int]:
    value = obj[key]
    if not isinstance(value, list) or len(value) != length:
        raise ArchError(f"ofa arch {quote(arch)}: '{key}' must be a list of {length} integers")
    for pos, v in enumerate(value):
        if type(v) is not int or v not in allowed:
            choices = ", ".join(map(str, allowed))
            raise ArchError(f"ofa arch {quote(arch)}: {key}[{pos}] = {v!r}, must be one of {choices}")
    return list(value)


def _dump(arch: dict[str, Any]) -> str:
    """Compact JSON, keys in the order ks, e, d, r (the canonical spelling)."""
    return dump_json_arch(arch, _KEYS)


def _build_net(arch: dict[str, Any]) -> torch.nn.Module:
    """OFA's ``MobileNetV3`` for one active subnet (see the module docstring and docs/spaces.md)."""
    from torch import nn
    from torch.nn import functional as F

    class HSwish(nn.Module):
        """OFA's ``Hswish``: x * relu6(x + 3) / 6, written out as OFA exports it."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * F.relu6(x + 3.0) / 6.0

    class HSigmoid(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu6(x + 3.0) / 6.0

    def act(kind: str) -> nn.Module:
        return nn.ReLU() if kind == "relu" else HSwish()

    class SqueezeExcite(nn.Module):
        """OFA's ``SEModule``: mean over H and W, 1x1 reduce (bias) + ReLU, 1x1 expand (bias) + h-sigmoid."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            mid = make_divisible(channels // 4)
            self.fc = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.ReLU(), nn.Conv2d(mid, channels, 1), HSigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.fc(x.mean(3, keepdim=True).mean(2, keepdim=True))

    def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]

    class MBConv(nn.Module):
        """OFA's ``MBConvLayer`` in a ``ResidualBlock``: [1x1 expand + BN + act] -> depthwise kxk + BN + act
        [-> SE] -> 1x1 project + BN, plus the input when the shapes allow."""

        def __init__(self, cin: int, cout: int, k: int, e: int, stride: int, kind: str, se: bool) -> None:
            super().__init__()
            mid = make_divisible(round(cin * e))
            layers: list[nn.Module] = [] if e == 1 else [*conv_bn(cin, mid, 1), act(kind)]
            layers += [*conv_bn(mid, mid, k, stride, groups=mid), act(kind)]
            if se:
                layers.append(SqueezeExcite(mid))
            layers += conv_bn(mid, cout, 1)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return y + x if self.residual else y

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first_conv = nn.Sequential(*conv_bn(3, STEM_CH, 3, 2), HSwish())
            blocks: list[nn.Module] = [MBConv(STEM_CH, STEM_CH, 3, 1, 1, "relu", False)]
            cin = STEM_CH
            for s, (cout, stride, kind, se) in enumerate(STAGES):
                for i in range(arch["d"][s]):
                    pos = MAX_DEPTH * s + i
                    blocks.append(MBConv(cin, cout, arch["ks"][pos], arch["e"][pos], stride if i == 0 else 1, kind, se))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.final_expand = nn.Sequential(*conv_bn(cin, FINAL_EXPAND_CH, 1), HSwish())
            self.feature_mix = nn.Sequential(nn.Conv2d(FINAL_EXPAND_CH, FEATURE_MIX_CH, 1, bias=False), HSwish())
            self.classifier = nn.Linear(FEATURE_MIX_CH, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.final_expand(self.blocks(self.first_conv(x)))
            x = self.feature_mix(x.mean(3, keepdim=True).mean(2, keepdim=True))
            return self.classifier(x.flatten(1))

    return Net()
