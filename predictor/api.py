"""The Python API: ``predictor.load(path).predict(archs, device)`` and friends.

``archs`` are arch strings of a space with a dedicated encoder, or ONNX files (``.onnx`` paths) for a
model trained on graph-encoded data (``hwlat measure --models DIR`` datasets, or any space without an encoder).

A ``Predictor`` holds one ``SpaceModel`` per search space found in the training data. Saved files are
plain ``torch.save`` dicts of tensors and strings (loadable with ``weights_only=True``: a model file is
data, never code) carrying the encoder config, device names and a fingerprint of the training data.
"""

from __future__ import annotations

import datetime as _dt
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from harness.errors import ArchError, UsageError
from harness.export import atomic_write

from .data import LatencyTable
from .encode import add_graphs, canonical_space, get_encoder, is_graph_space, register_graph_space
from .graph import encode_file
from .models import build_net
from .samplers import sample
from .train import SpaceModel, TrainConfig, pretrain
from .transfer import TransferConfig, transfer

FORMAT = "hwlat-predictor/2"


def _encoder_config(space: str) -> dict:
    enc = get_encoder(space)
    e = enc.encode([enc.example()])
    return {"space": space, "flat_dim": int(e.flat.shape[1]), "nodes": int(e.nodes.shape[1]),
            "node_dim": int(e.nodes.shape[2]), "class": type(enc).__name__}


class Predictor:
    """Latency predictor over one or more search spaces and many devices."""

    def __init__(self, models: dict[str, SpaceModel], fingerprint: str, meta: dict | None = None) -> None:
        self.models = models
        self.fingerprint = fingerprint
        self.meta = meta or {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, table: LatencyTable, cfg: TrainConfig | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> Predictor:
        """Pretrain one model per space on every (device, arch) row of ``table``."""
        cfg = cfg or TrainConfig()
        models = {}
        for space in table.spaces():
            sel = table.df[table.df["search_space"] == space]
            devices = sorted(sel["device"].unique())
            dev_of_row = sel["device"].map({d: i for i, d in enumerate(devices)}).to_numpy()
            step_cb = None if progress is None else (lambda s, t, sp=space: progress(sp, s, t))
            models[space] = pretrain(space, sel["arch"].tolist(), devices, sel["latency_ms"].to_numpy(),
                                     dev_of_row, cfg, progress=step_cb)
        return cls(models, table.fingerprint(), {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                                                 "rows": len(table.df)})

    # ------------------------------------------------------------------ queries
    def spaces(self) -> list[str]:
        return sorted(self.models)

    def devices(self, space: str | None = None) -> list[str]:
        return list(self._model(space).devices) if space else sorted({d for m in self.models.values()
                                                                       for d in m.devices})

    def _model(self, space: str | None, archs: Sequence[str] = ()) -> SpaceModel:
        if space is not None:
            canon = canonical_space(space)
            if canon not in self.models:
                raise UsageError(f"the model has no {canon} data; it covers {', '.join(self.spaces())}")
            return self.models[canon]
        if len(self.models) == 1:
            return next(iter(self.models.values()))
        for name, model in self.models.items():
            try:
                get_encoder(name).encode_one(archs[0])
                return model
            except (ArchError, IndexError):
                continue
        raise UsageError("cannot tell the search space of these archs; pass space=")

    def resolve(self, archs: Sequence[str | Path], space: str | None) -> tuple[list[str], str | None]:
        """ONNX file paths -> their graph keys (sha256) and the graph-encoded space to use; arch strings pass.

        Files are encoded once (cached on disk by sha256, ``predictor.graph.encode_file``). Without
        ``space``, the ``onnx`` model answers, else the only graph-encoded one.
        """
        items = list(archs)
        paths = [isinstance(a, Path) or (isinstance(a, str) and a.lower().endswith(".onnx")) for a in items]
        if not items or not all(paths):
            if any(paths):
                raise UsageError("give either ONNX files or arch strings, not both")
            return [str(a) for a in items], space
        keys = add_graphs(encode_file(a) for a in items)
        if space is None:
            graph = [name for name in self.models if is_graph_space(name)]
            if not graph:
                raise UsageError(f"the model has no graph-encoded space for ONNX files; it covers "
                                 f"{', '.join(self.spaces())} (train it on `hwlat measure --models` data)")
            space = "onnx" if "onnx" in graph else graph[0] if len(graph) == 1 else None
            if space is None:
                raise UsageError(f"the model has several graph-encoded spaces ({', '.join(sorted(graph))}); "
                                 "pass space=")
        elif not is_graph_space(self._model(space).space):
            raise UsageError(f"the {canonical_space(space)} model takes arch strings, not ONNX files")
        return keys, space

    def _device(self, model: SpaceModel, device: str) -> None:
        if device not in model.devices:
            raise UsageError(f"device {device!r} is not in the {model.space} model; known: "
                             f"{', '.join(model.devices)}")

    def predict(self, archs: Sequence[str | Path], device: str, space: str | None = None) -> np.ndarray:
        """Predicted latency in ms for each arch string or ONNX file (``.onnx`` paths)."""
        return self.predict_with_uncertainty(archs, device, space)[0]

    def predict_with_uncertainty(self, archs: Sequence[str | Path], device: str,
                                 space: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms, std of log latency): a std of 0.1 means roughly +-10%.

        The std combines the ensemble's spread with, for a transferred device, its cost model's posterior.
        """
        archs, space = self.resolve(archs, space)
        model = self._model(space, archs)
        self._device(model, device)
        mean, std = model.predict(archs, device)
        return np.exp(mean), std

    def transfer(self, device: str, archs: Sequence[str | Path], latency_ms: Sequence[float],
                 space: str | None = None, cfg: TransferConfig | None = None, seed: int = 0) -> dict:
        """Add a new device from a few measured archs or ONNX files (see ``predictor.transfer``)."""
        archs, space = self.resolve(archs, space)
        return transfer(self._model(space, archs), device, archs, np.asarray(latency_ms, float), cfg, seed)

    def suggest(self, device: str, n: int, sampler: str = "default", measured: Iterable[str | Path] = (),
                candidates: Sequence[str | Path] | None = None, space: str | None = None,
                seed: int = 0) -> list[str]:
        """Which archs (or, for ONNX candidates, which files) to measure next on ``device``, never one in
        ``measured``."""
        named: dict[str, str] = {}
        if candidates is not None:
            keys, space = self.resolve(candidates, space)
            named = dict(zip(keys, map(str, candidates), strict=True))
            candidates = keys
            measured, _ = self.resolve(list(measured), space)
        model = self._model(space, list(candidates or measured or ()))
        pool = list(candidates) if candidates is not None else get_encoder(model.space).enumerate()
        if pool is None:
            raise UsageError(f"{model.space} is too large to enumerate; pass candidates")
        picks = sample(sampler, model.space, pool, n, seed=seed, measured=measured, model=model, device=device)
        return [named.get(p, p) for p in picks]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        blob = {"format": FORMAT, "fingerprint": self.fingerprint, "meta": dict(self.meta), "spaces": {}}
        for space, m in self.models.items():
            blob["spaces"][space] = {
                "encoder": _encoder_config(space),
                "train": {"nets": [list(n) for n in m.cfg.nets], **{k: v for k, v in m.cfg.__dict__.items()
                                                                   if k != "nets"}},
                "devices": list(m.devices), "source": list(m.source),
                "mu": torch.from_numpy(m.mu), "sigma": torch.from_numpy(m.sigma),
                "cost": torch.from_numpy(m.cost), "cost_scale": torch.from_numpy(m.cost_scale),
                "nn_weight": torch.from_numpy(m.nn_weight),
                "cost_cov": {d: torch.from_numpy(c) for d, c in m.cost_cov.items()},
                "cost_floor": dict(m.cost_floor), "nets": [n.state_dict() for n in m.nets],
            }
        buf = io.BytesIO()
        torch.save(blob, buf)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(Path(path), buf.getvalue())  # a kill never leaves half a model behind
        except OSError as exc:
            raise UsageError(f"cannot write model {path}: {exc.strerror or exc}") from exc


def load(path: str | Path) -> Predictor:
    """Load a model saved by ``Predictor.save`` (or ``hwlat predictor train``)."""
    try:
        blob = torch.load(str(path), weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"model not found: {path}") from None
    except Exception as exc:  # torch raises many types for a file that is not a model
        raise UsageError(f"cannot read model {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UsageError(f"{path} is not an hwlat predictor model ({FORMAT})")
    models = {}
    for space, s in blob["spaces"].items():
        if s["encoder"].get("class") == "GraphEncoder":
            register_graph_space(space)
        enc = _encoder_config(space)
        if enc != s["encoder"]:
            raise UsageError(f"{path}: saved {space} encoder {s['encoder']} does not match this version's {enc}")
        tr = dict(s["train"])
        cfg = TrainConfig(**{**tr, "nets": [tuple(n) for n in tr["nets"]]})
        nets = []
        for (kind, k, hidden), state in zip(cfg.nets, s["nets"], strict=True):
            net = build_net(kind, k, state["emb"].shape[1], enc["flat_dim"], enc["node_dim"], hidden)
            net.load_state_dict(state)
            net.eval()
            nets.append(net)
        m = SpaceModel(space, list(s["devices"]), nets, cfg, s["mu"].numpy(), s["sigma"].numpy(),
                       s["cost"].shape[1] - 1)
        m.cost = s["cost"].numpy().copy()
        m.cost_scale = s["cost_scale"].numpy().copy()
        m.nn_weight = s["nn_weight"].numpy().copy()
        m.cost_cov = {d: c.numpy().copy() for d, c in s["cost_cov"].items()}
        m.cost_floor = {d: float(v) for d, v in s["cost_floor"].items()}
        m.source = list(s["source"])
        models[space] = m
    return Predictor(models, blob["fingerprint"], dict(blob.get("meta", {})))
