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

from agents.errors import ArchError, UsageError
from agents.files import atomic_write
from hwlat.spaces.graph import encode_file

from .data import LatencyTable
from .encode import (
    add_graphs,
    canonical_space,
    get_encoder,
    is_graph_space,
    register_graph_space,
    register_traced_space,
)
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

    def resolve(self, archs: Sequence[str | Path], space: str | None) -> tuple[list[str], str | None]:
        """ONNX file paths -> their graph keys (sha256) and the graph-encoded space to use; arch strings pass.

        Files are encoded once (cached on disk by sha256, ``hwlat.spaces.graph.encode_file``). Without
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
    """Load a model saved by ``Predictor.save`` (or ``hwlat predictor train``).

    The file is data, never code: ``torch.load(weights_only=True)`` unpickles only tensors and plain
    containers, and refuses storages larger than their bytes in the file. Everything in it is then checked
    before it is used: a file that loads but was edited or damaged (a key missing, a tensor of the wrong
    shape, net sizes that would allocate gigabytes, NaN parameters) is a one-line ``UsageError``.
    """
    try:
        blob = torch.load(str(path), weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"model not found: {path}") from None
    except Exception as exc:  # torch raises many types for a file that is not a model
        raise UsageError(f"cannot read model {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UsageError(f"{path} is not an hwlat predictor model ({FORMAT})")
    try:
        return _from_blob(blob)
    except UsageError as exc:
        raise UsageError(f"{path}: unusable model: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        why = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UsageError(f"{path}: unusable model, damaged or edited ({type(exc).__name__}: {why})") from None


def _check_shapes(kind: str, k: int, hidden: int, n_devices: int, enc: dict, state: dict) -> None:
    """The saved tensors have exactly the shapes their config builds: compared on the meta device, so a
    config asking for huge nets allocates nothing."""
    with torch.device("meta"):
        shell = build_net(kind, k, n_devices, enc["flat_dim"], enc["node_dim"], hidden)
    want = {name: tuple(t.shape) for name, t in shell.state_dict().items()}
    if not isinstance(state, dict) or set(state) != set(want):
        raise UsageError(f"{kind} net parameters {sorted(state) if isinstance(state, dict) else state!r} are not "
                         "the ones its config builds")
    for name, shape in want.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UsageError(f"{kind} net tensor {name} has shape {got}, its config builds {shape}")
        if not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"{kind} net tensor {name} holds NaN or infinite values")


def _from_blob(blob: dict) -> Predictor:
    spaces = blob["spaces"]
    if not isinstance(spaces, dict) or not spaces:
        raise UsageError("no search space in the model")
    models = {}
    for space, s in spaces.items():
        if s["encoder"].get("class") == "GraphEncoder":
            register_graph_space(space)
        elif s["encoder"].get("class") == "TracedEncoder":
            register_traced_space(space)
        enc = _encoder_config(space)
        if enc != s["encoder"]:
            raise UsageError(f"saved {space} encoder {s['encoder']} does not match this version's {enc}")
        tr = dict(s["train"])
        cfg = TrainConfig(**{**tr, "nets": [tuple(n) for n in tr["nets"]]})  # validates the net sizes
        devices = list(s["devices"])
        if not devices or not all(isinstance(d, str) and d for d in devices) or len(set(devices)) != len(devices):
            raise UsageError(f"{space}: the device list must be distinct non-empty names")
        if len(s["nets"]) != len(cfg.nets):
            raise UsageError(f"{space}: {len(s['nets'])} saved nets for {len(cfg.nets)} configured")
        nets = []
        for (kind, k, hidden), state in zip(cfg.nets, s["nets"], strict=True):
            _check_shapes(kind, k, hidden, len(devices), enc, state)
            net = build_net(kind, k, len(devices), enc["flat_dim"], enc["node_dim"], hidden)
            net.load_state_dict(state)
            net.eval()
            nets.append(net)
        m = SpaceModel(space, devices, nets, cfg, s["mu"].numpy(), s["sigma"].numpy(),
                       s["cost"].shape[1] - 1)
        m.cost = s["cost"].numpy().copy()
        m.cost_scale = s["cost_scale"].numpy().copy()
        m.nn_weight = s["nn_weight"].numpy().copy()
        m.cost_cov = {d: c.numpy().copy() for d, c in s["cost_cov"].items()}
        m.cost_floor = {d: float(v) for d, v in s["cost_floor"].items()}
        m.source = list(s["source"])
        shapes = {"mu": m.mu.shape, "sigma": m.sigma.shape, "cost": m.cost.shape[:1], "cost_scale": m.cost_scale.shape,
                  "nn_weight": m.nn_weight.shape}
        n_members = sum(n.k for n in nets)
        expected = {"mu": (n_members, len(devices)), "sigma": (n_members, len(devices)), "cost": (len(devices),),
                    "cost_scale": (len(devices),), "nn_weight": (len(devices),)}
        bad = [k for k in shapes if tuple(shapes[k]) != expected[k]]
        if bad or len(m.source) != len(devices) or set(m.cost_cov) - set(devices):
            raise UsageError(f"{space}: per-device arrays do not match its {len(devices)} devices "
                             f"({', '.join(bad) or 'source/cost_cov'})")
        example = [get_encoder(space).example()]
        for device in devices:  # every device predicts a finite latency, or the file is not usable
            mean, std = m.predict(example, device)
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
                raise UsageError(f"{space}: device {device!r} predicts NaN or infinite latency")
        models[space] = m
    if not isinstance(blob["fingerprint"], str):
        raise UsageError("the data fingerprint is not a string")
    return Predictor(models, blob["fingerprint"], dict(blob.get("meta", {})))
