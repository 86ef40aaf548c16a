"""The Python API: ``predictor.load(path).predict(archs, device)`` and friends.

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

from agents.errors import ArchError, UsageError
from agents.files import atomic_write

from .data import LatencyTable
from .encode import canonical_space, get_encoder
from .models import build_net
from .samplers import sample
from .train import SpaceModel, TrainConfig, pretrain
from .transfer import TransferConfig, transfer

FORMAT = "hwlat-predictor/2"
#: The pretrained predictor shipped with the package (rebuilt by `hwlat predictor train --data datasets/ ...`).
BUNDLED_MODEL = Path(__file__).resolve().parent / "pretrained" / "hwlat-bundled.pt"


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

    def _device(self, model: SpaceModel, device: str) -> None:
        if device not in model.devices:
            raise UsageError(f"device {device!r} is not in the {model.space} model; known: "
                             f"{', '.join(model.devices)}")

    def predict(self, archs: Sequence[str], device: str, space: str | None = None) -> np.ndarray:
        """Predicted latency in ms for each arch."""
        return self.predict_with_uncertainty(archs, device, space)[0]

    def predict_with_uncertainty(self, archs: Sequence[str], device: str,
                                 space: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms, std of log latency): a std of 0.1 means roughly +-10%.

        The std combines the ensemble's spread with, for a transferred device, its cost model's posterior.
        """
        archs = list(archs)
        model = self._model(space, archs)
        self._device(model, device)
        mean, std = model.predict(archs, device)
        return np.exp(mean), std

    def transfer(self, device: str, archs: Sequence[str], latency_ms: Sequence[float], space: str | None = None,
                 cfg: TransferConfig | None = None, seed: int = 0) -> dict:
        """Add a new device from a few measured archs (see ``predictor.transfer``)."""
        archs = list(archs)
        return transfer(self._model(space, archs), device, archs, np.asarray(latency_ms, float), cfg, seed)

    def suggest(self, device: str, n: int, sampler: str = "default", measured: Iterable[str] = (),
                candidates: Sequence[str] | None = None, space: str | None = None, seed: int = 0) -> list[str]:
        """Which archs to measure next on ``device`` (never one in ``measured``)."""
        model = self._model(space, list(candidates or measured or ()))
        pool = list(candidates) if candidates is not None else get_encoder(model.space).enumerate()
        if pool is None:
            raise UsageError(f"{model.space} is too large to enumerate; pass candidates")
        return sample(sampler, model.space, pool, n, seed=seed, measured=measured, model=model, device=device)

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
