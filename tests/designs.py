"""A one-hot design for tests of the cost model's machinery (``predictor.additive``): every NB201 cell as 6 x 5
edge-op indicators. The product's NB201 cost features are its traced networks' FLOPs, bytes and launches
(``NB201Encoder.linear``); these tests need a design whose synthetic devices are additive per op choice."""

from __future__ import annotations

import numpy as np

from predictor.encode import NB201_OPS, nb201_all_archs
from predictor.encode import _nb201_parse as parse


def nb201_onehots() -> tuple[list[str], np.ndarray]:
    """(every NB201 arch, its edge-op one-hots [15625, 30] in edge-major order)."""
    archs = nb201_all_archs()
    index = {op: i for i, op in enumerate(NB201_OPS)}
    rows = np.array([[index[op] for op in parse(a)] for a in archs])
    x = np.zeros((len(archs), 6, len(NB201_OPS)))
    np.put_along_axis(x, rows[:, :, None], 1.0, axis=2)
    return archs, x.reshape(len(archs), -1)


def nb201_onehot_quantities(archs: list[str], x: np.ndarray) -> np.ndarray:
    """Each edge-op column's FLOPs, bytes and launches [30, 3] in ``graph.LINEAR_UNITS``: the least-squares split
    of the traced networks' totals (``NB201Encoder.linear`` over the op-type columns of ``graph_quantities``)
    over the edge choices, the cheapest op of an edge at 0."""
    from predictor.encode import get_encoder
    from predictor.opcost import graph_quantities

    enc = get_encoder("nb201")
    q, _, shared = graph_quantities()  # the op types' own columns count every operator once
    totals = enc.linear(enc.encode(archs).flat) @ (q * shared[:, None])  # [archs, FLOPs / bytes / launches]
    per_choice = np.linalg.lstsq(np.hstack([np.ones((len(x), 1)), x]), totals, rcond=None)[0][1:]
    return per_choice - per_choice.reshape(6, len(NB201_OPS), 3).min(1).repeat(len(NB201_OPS), 0)


def nb201_onehot_prior(archs: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """A hardware-agnostic prior (``opcost.components``) for the one-hot design, from
    ``nb201_onehot_quantities``, with the typical arch drawing each edge's op uniformly."""
    from predictor.opcost import components

    return components(nb201_onehot_quantities(archs, x), list(NB201_OPS) * 6,
                      np.full(x.shape[1], 1.0 / len(NB201_OPS)))
