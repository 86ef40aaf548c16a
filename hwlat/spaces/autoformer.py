"""AutoFormer-tiny (``autoformer``): the vision-transformer subnets of AutoFormer's ``supernet-T`` space.

Registered like any user plug-in: an ``hwlat.spaces`` entry point in pyproject.toml (and the built-in
table). The space is ``AutoFormer/experiments/supernet/supernet-T.yaml`` of github.com/microsoft/Cream:
embed dim {192, 216, 240}, depth {12, 13, 14}, per layer MLP ratio {3.5, 4} and heads {3, 4}; the layers
follow ``Vision_TransformerSuper`` as the released commands train it (``--change_qkv``: 64 dims per
head; ``--gp``: the head reads the mean of the patch tokens; pre-norm; qkv bias), written with plain
torch modules so that it exports to ONNX as MatMul / Softmax / LayerNormalization / Erf (GELU).
AutoFormer's optional relative position embeddings are left out (docs/spaces.md says why).

Arch string: JSON ``{"embed": E, "depth": D, "mlp": [D ratios], "heads": [D head counts]}``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from agents.errors import ArchError, UsageError
from hwlat.spaces import SearchSpace, check_count, dump_json_arch, json_arch, quote

if TYPE_CHECKING:
    import torch

EMBEDS = (192, 216, 240)
DEPTHS = (12, 13, 14)
MLP_RATIOS = (3.5, 4.0)
HEADS = (3, 4)
HEAD_DIM = 64
PATCH = 16
NUM_CLASSES = 1000
_KEYS = ("embed", "depth", "mlp", "heads")


class AutoFormerSpace(SearchSpace):
    """AutoFormer-T: embed {192,216,240}, depth {12,13,14}, per-layer MLP ratio {3.5,4} and heads {3,4}."""

    name = "autoformer"
    version = 1
    default_resolution = 224

    def size(self) -> int:
        per_layer = len(MLP_RATIOS) * len(HEADS)
        return len(EMBEDS) * sum(per_layer**d for d in DEPTHS)

    # -- arch strings ----------------------------------------------------------------------------
    def parse(self, arch: str) -> dict[str, Any]:
        """The arch as ``{"embed": int, "depth": int, "mlp": [float], "heads": [int]}``; ``ArchError`` if bad."""
        obj = json_arch("autoformer", arch, _KEYS)
        embed, depth = obj["embed"], obj["depth"]
        if type(embed) is not int or embed not in EMBEDS:
            raise ArchError(f"autoformer arch {quote(arch)}: embed = {embed!r}, must be one of 192, 216, 240")
        if type(depth) is not int or depth not in DEPTHS:
            raise ArchError(f"autoformer arch {quote(arch)}: depth = {depth!r}, must be one of 12, 13, 14")
        for key in ("mlp", "heads"):
            if not isinstance(obj[key], list) or len(obj[key]) != depth:
                raise ArchError(f"autoformer arch {quote(arch)}: '{key}' must be a list of depth = {depth} values")
        mlp: list[float] = []
        for pos, v in enumerate(obj["mlp"]):
            if type(v) not in (int, float) or float(v) not in MLP_RATIOS:
                raise ArchError(f"autoformer arch {quote(arch)}: mlp[{pos}] = {v!r}, must be 3.5 or 4.0")
            mlp.append(float(v))
        for pos, v in enumerate(obj["heads"]):
            if type(v) is not int or v not in HEADS:
                raise ArchError(f"autoformer arch {quote(arch)}: heads[{pos}] = {v!r}, must be 3 or 4")
        return {"embed": embed, "depth": depth, "mlp": mlp, "heads": list(obj["heads"])}

    def validate(self, arch: str) -> str:
        return _dump(self.parse(arch))

    def sample(self, count: int, seed: int) -> list[str]:
        """Like AutoFormer's sampler: embed and depth uniform, then each layer's MLP ratio and heads uniform."""
        check_count(self, count)
        rng = random.Random(seed)
        out: list[str] = []
        seen: set[str] = set()
        while len(out) < count:
            depth = rng.choice(DEPTHS)
            raw = {
                "embed": rng.choice(EMBEDS),
                "depth": depth,
                "mlp": [rng.choice(MLP_RATIOS) for _ in range(depth)],
                "heads": [rng.choice(HEADS) for _ in range(depth)],
            }
            arch = _dump(raw)
            if arch not in seen:
                seen.add(arch)
                out.append(arch)
        return out

    # -- the network -----------------------------------------------------------------------------
    def input_shape(self, batch: int = 1, resolution: int = 224) -> list[int]:
        return [batch, 3, resolution, resolution]

    def check_input(self, batch: int, resolution: int) -> None:
        super().check_input(batch, resolution)
        if resolution % PATCH:
            raise UsageError(f"autoformer needs a resolution divisible by the patch size {PATCH}, got {resolution}")

    def _build(self, arch: str, resolution: int) -> torch.nn.Module:
        return _build_net(self.parse(arch), resolution)


def _dump(arch: dict[str, Any]) -> str:
    """Compact JSON, keys in the order embed, depth, mlp, heads; ratios as floats (the canonical spelling)."""
    return dump_json_arch(arch, _KEYS)


def _build_net(arch: dict[str, Any], resolution: int) -> torch.nn.Module:
    """AutoFormer's subnet as plain modules (see the module docstring and docs/spaces.md)."""
    import torch
    from torch import nn

    embed = arch["embed"]
    n_tokens = (resolution // PATCH) ** 2 + 1

    class Attention(nn.Module):
        """Multi-head self-attention with ``heads * 64`` dims for q, k and v (AutoFormer's ``change_qkv``)."""

        def __init__(self, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(embed, 3 * heads * HEAD_DIM)
            self.proj = nn.Linear(heads * HEAD_DIM, embed)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Fixed sizes instead of x.shape: the exported Reshapes get constant targets, so the graph has
            # no Shape arithmetic and ONNX shape inference (hence onnx_flops) sees every tensor's shape.
            q, k, v = self.qkv(x).reshape(-1, n_tokens, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1) * HEAD_DIM**-0.5).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(-1, n_tokens, self.heads * HEAD_DIM))

    class Layer(nn.Module):
        """Pre-norm encoder layer: x + attn(LN(x)), then x + fc2(GELU(fc1(LN(x))))."""

        def __init__(self, heads: int, mlp_ratio: float) -> None:
            super().__init__()
            hidden = int(embed * mlp_ratio)
            self.attn_norm = nn.LayerNorm(embed)
            self.attn = Attention(heads)
            self.ffn_norm = nn.LayerNorm(embed)
            self.ffn = nn.Sequential(nn.Linear(embed, hidden), nn.GELU(), nn.Linear(hidden, embed))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.attn_norm(x))
            return x + self.ffn(self.ffn_norm(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Conv2d(3, embed, PATCH, PATCH)
            self.cls_token = nn.Parameter(torch.randn(1, 1, embed) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, embed) * 0.02)
            self.layers = nn.Sequential(*(Layer(h, m) for h, m in zip(arch["heads"], arch["mlp"], strict=True)))
            self.norm = nn.LayerNorm(embed)
            self.head = nn.Linear(embed, NUM_CLASSES)
            with torch.no_grad():  # non-trivial LN affine, like BN's (randomize_batchnorm), so a broken
                for mod in self.modules():  # LayerNorm export cannot pass a numeric check
                    if isinstance(mod, nn.LayerNorm):
                        mod.weight.uniform_(0.5, 1.5)
                        mod.bias.normal_(0.0, 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(x).reshape(-1, embed, n_tokens - 1).transpose(1, 2)  # flatten(2), static
            # cls_token.expand(batch, ...) would export as Shape/Expand arithmetic on the batch size; a
            # zero slice of x broadcasts it to the batch with static shapes (Slice, Mul, Add) instead.
            cls = x[:, :1] * 0.0 + self.cls_token
            x = torch.cat((cls, x), dim=1) + self.pos_embed
            x = self.norm(self.layers(x))
            return self.head(x[:, 1:].mean(dim=1))

    return Net()
