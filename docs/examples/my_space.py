"""An example hwlat search space plug-in: a small plain CNN with a width and a depth per stage.

Use it without installing anything::

    hwlat measure --device local --space docs/examples/my_space.py:TinyConvSpace --count 5 --out ds/

or register it from your own package (pyproject.toml) and call it by its name::

    [project.entry-points."hwlat.spaces"]
    tinyconv = "my_package.my_space:TinyConvSpace"

Arch string: one ``WIDTHxDEPTH`` per stage, comma-separated, e.g. ``"16x2,32x1,64x3"``; widths
{16, 32, 64}, depths {1, 2, 3}, three stages (9^3 = 729 archs, small enough to enumerate).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from torch import nn

from hwlat.spaces import ArchError, SearchSpace, check_count

WIDTHS = (16, 32, 64)
DEPTHS = (1, 2, 3)
STAGES = 3
CHOICES = [f"{w}x{d}" for w, d in itertools.product(WIDTHS, DEPTHS)]


class TinyConvSpace(SearchSpace):
    """Stem conv, then per stage a stride-2 conv and DEPTH-1 more 3x3 convs (all Conv + BN + ReLU), then a
    global average pool and a 10-class linear head."""

    name = "tinyconv"  # names the dataset partition (search_space=tinyconv) and the export cache entries
    version = 1  # bump whenever build() would give a different network for the same arch string
    default_resolution = 32

    def size(self) -> int:
        return len(CHOICES) ** STAGES

    def validate(self, arch: str) -> str:
        """Canonical form: no spaces, lower-case x. Anything else raises ArchError (one line, quoted)."""
        if not isinstance(arch, str):
            raise ArchError(f"tinyconv arch must be a string, got {type(arch).__name__}")
        parts = [p.strip().lower() for p in arch.split(",")]
        if len(parts) != STAGES or any(p not in CHOICES for p in parts):
            raise ArchError(f"tinyconv arch {arch!r} must be {STAGES} of {', '.join(CHOICES)} joined by commas")
        return ",".join(parts)

    def sample(self, count: int, seed: int) -> list[str]:
        """``count`` distinct archs, the same for the same seed."""
        check_count(self, count)  # a negative count or more than size(): one-line UsageError
        return random.Random(seed).sample(list(self.all_archs()), count)

    # Optional: only for spaces small enough to list (hwlat profile then predicts every arch).
    @property
    def enumerable(self) -> bool:
        return True

    def all_archs(self) -> Iterator[str]:
        return (",".join(p) for p in itertools.product(CHOICES, repeat=STAGES))

    def arch_index(self, arch: str) -> int | None:
        parts = self.validate(arch).split(",")
        index = 0
        for part in parts:
            index = index * len(CHOICES) + CHOICES.index(part)
        return index

    def input_shape(self, batch: int = 1, resolution: int = 32) -> list[int]:
        return [batch, 3, resolution, resolution]

    def _build(self, arch: str, resolution: int) -> nn.Module:
        """The network for a canonical arch. ``build()`` seeds the weights and puts it in eval mode."""

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        layers, cin = conv(3, 16, 1), 16
        for part in arch.split(","):
            width, depth = (int(v) for v in part.split("x"))
            for i in range(depth):
                layers += conv(cin, width, 2 if i == 0 else 1)
                cin = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))

