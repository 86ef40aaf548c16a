"""An ONNX file with a dynamic axis that the shape tests measure and predict: an attention block whose FLOPs grow
with the sequence length, so two sizes of one file are two networks."""

from __future__ import annotations

from pathlib import Path

import torch

#: the block's model width: its input is [1, seq, WIDTH]
WIDTH = 16


def export_attention_block(path: Path, inner: int = WIDTH) -> None:
    """Attention on [1, seq, WIDTH] through ``inner``-wide q/k/v projections, ``seq`` a dynamic axis (input ``x``,
    output ``y``; batch fixed at 1)."""

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(WIDTH, inner) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.q(x) @ self.k(x).transpose(1, 2), dim=-1) @ self.v(x)

    torch.onnx.export(Block().eval(), (torch.randn(1, 8, WIDTH),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {1: "seq"}, "y": {1: "seq"}}, opset_version=17, dynamo=False)
