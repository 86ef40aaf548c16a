"""Torch models: a dense graph network and an MLP, each a *batched ensemble* with device embeddings.

Every weight carries a leading member axis ``K``, so K independently initialised networks train in one
set of batched matmuls: an ensemble (and hence an uncertainty for every prediction) at roughly the cost
of one wider network, which is what keeps pretraining within a laptop CPU budget.

A network maps (arch encoding, device id) -> standardised log latency of that arch on that device.
The device enters through a learned embedding (one table per member) that is concatenated with the arch
representation before a small head, so pretraining on many devices shares the arch trunk while the
embedding captures what makes a device different; transfer to a new device mostly means finding its
embedding.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EnsLinear(nn.Module):
    """K parallel linear layers: [K, B, in] -> [K, B, out]."""

    def __init__(self, k: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(k, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return torch.baddbmm(self.bias, x, self.weight)
        # [K, B, N, in] (graph nodes): fold nodes into the batch axis
        k, b, n, d = x.shape
        return torch.baddbmm(self.bias, x.reshape(k, b * n, d), self.weight).reshape(k, b, n, -1)


class Head(nn.Module):
    """Arch representation + device embedding -> one standardised log latency per member."""

    def __init__(self, k: int, d_arch: int, d_emb: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = EnsLinear(k, d_arch + d_emb, hidden)
        self.fc2 = EnsLinear(k, hidden, 1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.fc1(torch.cat([h, emb], dim=-1)))
        return self.fc2(z).squeeze(-1)


class LatencyNet(nn.Module):
    """Base: device embeddings + head; subclasses define the arch trunk ``represent``."""

    def __init__(self, k: int, n_devices: int, d_arch: int, d_emb: int, hidden: int) -> None:
        super().__init__()
        self.k = k
        self.emb = nn.Parameter(0.1 * torch.randn(k, n_devices, d_emb))
        self.head = Head(k, d_arch, d_emb, hidden)

    def represent(self, flat: torch.Tensor, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, flat: torch.Tensor, nodes: torch.Tensor, adj: torch.Tensor,
                device: torch.Tensor) -> torch.Tensor:
        """Inputs carry the member axis ([K, B, ...]); ``device`` is [K, B] ids into the embedding table.

        (Fitting a new device's embedding does not come through here: ``transfer.FrozenHead`` precomputes
        the trunk and runs only the head's embedding half.)
        """
        h = self.represent(flat, nodes, adj)
        e = torch.gather(self.emb, 1, device.unsqueeze(-1).expand(-1, -1, self.emb.shape[-1]))
        return self.head(h, e)


class MLPNet(LatencyNet):
    """Flat encoding -> two hidden layers -> arch representation."""

    def __init__(self, k: int, n_devices: int, d_flat: int, hidden: int = 128, d_emb: int = 16) -> None:
        super().__init__(k, n_devices, hidden, d_emb, hidden)
        self.fc1 = EnsLinear(k, d_flat, hidden)
        self.fc2 = EnsLinear(k, hidden, hidden)

    def represent(self, flat: torch.Tensor, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc2(torch.relu(self.fc1(flat))))


class GraphNet(LatencyNet):
    """Dense message passing over the arch graph, forward and backward along arcs, then sum readout.

    Each layer mixes a node's own state with the mean of its predecessors' and successors' states (the
    two directions get separate weights: a conv feeding a pool is not a pool feeding a conv). The
    readout also sees the flat encoding's whole-network features (FLOPs, params, op counts) through a
    linear skip, because those are what latency depends on most and a sum readout recovers them only
    approximately.
    """

    def __init__(self, k: int, n_devices: int, d_node: int, d_flat: int, hidden: int = 64,
                 layers: int = 3, d_emb: int = 16) -> None:
        super().__init__(k, n_devices, 2 * hidden, d_emb, 2 * hidden)
        self.inp = EnsLinear(k, d_node, hidden)
        self.self_w = nn.ModuleList(EnsLinear(k, hidden, hidden) for _ in range(layers))
        self.fwd_w = nn.ModuleList(EnsLinear(k, hidden, hidden) for _ in range(layers))
        self.bwd_w = nn.ModuleList(EnsLinear(k, hidden, hidden) for _ in range(layers))
        self.flat_w = EnsLinear(k, d_flat, hidden)

    def represent(self, flat: torch.Tensor, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        # adj[k, b, u, v] = 1 if u -> v; predecessors of v are column v
        into = adj.transpose(-1, -2)
        into = into / into.sum(-1, keepdim=True).clamp(min=1.0)
        out = adj / adj.sum(-1, keepdim=True).clamp(min=1.0)
        h = torch.relu(self.inp(nodes))
        for ws, wf, wb in zip(self.self_w, self.fwd_w, self.bwd_w, strict=True):
            h = torch.relu(ws(h) + wf(into @ h) + wb(out @ h)) + h
        readout = h.sum(dim=2)
        return torch.cat([readout, torch.relu(self.flat_w(flat))], dim=-1)


def build_net(kind: str, k: int, n_devices: int, d_flat: int, d_node: int, hidden: int) -> LatencyNet:
    """Construct a member-batched network from its config (also used when loading a saved model)."""
    if kind == "mlp":
        return MLPNet(k, n_devices, d_flat, hidden=hidden)
    if kind == "gnn":
        return GraphNet(k, n_devices, d_node, d_flat, hidden=hidden)
    raise ValueError(f"unknown net kind {kind!r}")
