"""The Python API: ``predictor.load(path).predict(archs, device)`` and friends.

``archs`` are arch strings of a space with a dedicated encoder, or networks -- ONNX files (``.onnx`` paths)
and ``torch.nn.Module`` objects -- for a model trained on graph-encoded data (``hwlat measure --models DIR``
datasets, or any space without an encoder). ONNX files are encoded at the input shapes they would be measured
at: ``input_shapes={"x": (1, 64, 32)}``, ``batch=`` and ``resolution=`` size dynamic dimensions exactly as
``--input-shape``, ``--batch`` and ``--resolution`` do for ``hwlat measure --models`` (``hwlat.spaces.shapes``),
and a dynamic dimension nobody sizes is refused, never encoded at 1. A torch module declares no inputs:
``input_shapes`` gives the full shape of each ``forward`` argument, and the module is traced by the tracer the
built-in spaces are encoded with (``hwlat.spaces.trace.trace_module``), so it is encoded as its ONNX export is.

A ``Predictor`` holds one ``SpaceModel`` per search space found in the training data. Saved files are
plain ``torch.save`` dicts of tensors and strings (loadable with ``weights_only=True``: a model file is
data, never code) carrying the encoder config, device names and a fingerprint of the training data.
"""

from __future__ import annotations

import datetime as _dt
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import torch

from agents.errors import ArchError, UsageError
from agents.files import atomic_write
from hwlat.spaces import one_line
from hwlat.spaces.graph import GraphEncoding, encode_file, model_file_errors
from hwlat.spaces.shapes import (
    ShapeRequest,
    check_names_used,
    graph_dims,
    resolve_dims,
    shape_request,
    shapes_json,
)
from hwlat.spaces.trace import forward_inputs, trace_module

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
from .predictions import prediction_table
from .samplers import sample
from .train import SpaceModel, TrainConfig, pretrain
from .transfer import TransferConfig, transfer

FORMAT = "hwlat-predictor/2"
#: The pretrained predictor shipped with the package (rebuilt by `hwlat predictor train --data datasets/ ...`).
BUNDLED_MODEL = Path(__file__).resolve().parent / "pretrained" / "hwlat-bundled.pt"


#: ``input_shapes=`` of the API: {graph input name: its full shape}, e.g. {"input": (1, 3, 224, 224)}; a shape may
#: be an example tensor, whose dtype a torch module is traced with ({"ids": torch.zeros(1, 128, dtype=torch.long)})
InputShapes = Mapping[str, Sequence[int] | torch.Tensor]

#: graph inputs of the ONNX files seen, by (resolved path, mtime ns, size): a prediction loop over the same
#: files parses each once, not once per call
_DIMS: dict[tuple[str, int, int], dict[str, list[int | str]]] = {}


def _input_dims(path: Path) -> dict[str, list[int | str]]:
    """The graph inputs of an ONNX file (``hwlat.spaces.shapes.graph_dims``), or a one-line ``UsageError``."""
    with model_file_errors(path):
        st = path.stat()
    memo = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if memo not in _DIMS:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises several types for a file that is not a model
            raise UsageError(f"{path}: not a readable ONNX model ({one_line(exc)})") from None
        _DIMS[memo] = graph_dims(model)
    return _DIMS[memo]


#: what ``predict`` and friends take besides arch strings: an ONNX file or a torch module
Network = str | Path | torch.nn.Module


def is_network(item: object) -> bool:
    """An ONNX file (a ``Path``, or a string ending in ``.onnx``) or a torch module, not an arch string."""
    return isinstance(item, (Path, torch.nn.Module)) or (isinstance(item, str) and item.lower().endswith(".onnx"))


def _module_shapes(module: torch.nn.Module, request: ShapeRequest
                   ) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[str, str]]:
    """({forward argument: shape} to trace ``module`` at, {name as given: shape} to record, {forward argument: dtype}
    of the inputs given as example tensors) from ``input_shapes``.

    A module declares no input shapes, so each required ``forward`` argument needs one, by its name; a module whose
    forward takes one tensor takes the only shape given whatever it is named (its ONNX export's input name, say),
    so one ``input_shapes`` serves a module and its export. Anything else is a one-line ``UsageError``.
    """
    label = f"torch module {type(module).__name__}"
    required, optional = forward_inputs(module)
    given = request.input_shapes
    if not required and not optional:
        raise UsageError(f"{label}: its forward takes only *args/**kwargs, so its inputs have no names to size; "
                         "wrap it in a module whose forward names them")
    if len(required) == 1 and len(given) == 1 and not set(given) & {*required, *optional}:
        name, dims = next(iter(given.items()))
        return {required[0]: dims}, {name: dims}, {required[0]: request.dtypes[name]} if name in request.dtypes else {}
    missing = [n for n in required if n not in given]
    if missing:
        example = ", ".join(f"{n!r}: (...)" for n in required)
        raise UsageError(f"{label} declares no input shapes: give the full shape of its forward argument"
                         f"{'s' if len(required) > 1 else ''} {', '.join(missing)} with input_shapes={{{example}}}")
    named = {n: given[n] for n in (*required, *optional) if n in given}
    return named, named, {n: request.dtypes[n] for n in named if n in request.dtypes}


def encode_networks(items: Sequence[Network], input_shapes: InputShapes | None = None, batch: int | None = None,
                    resolution: int | None = None, where: str | None = None) -> list[GraphEncoding]:
    """The graph encodings of ONNX files and torch modules at the shapes they would be measured at.

    Files: ``input_shapes``/``batch``/``resolution`` mean what ``--input-shape``/``--batch``/``--resolution`` mean
    for ``hwlat measure --models`` (one owner: ``hwlat.spaces.shapes``), so the encoding is the network the
    harness measures and its ``key`` that network's ``graph_key``: the one the dataset's rows train on, and
    never the key of the same file at another size. A dynamic dimension that nothing sizes, a size that
    contradicts a fixed dimension and an ``input_shapes`` name that no file or module has (``where`` names them
    in that message; default "the given files", or "networks" with modules among them) are one-line
    ``UsageError``s. File encodings are cached on disk by key (``encode_file``).

    Modules: traced at ``input_shapes`` (``_module_shapes``; ``batch``/``resolution`` size dynamic dimensions
    of files, and a module has none: refused), with an input given as an example tensor traced at its dtype
    (files declare their own), keyed by ``module_key``, a digest of the traced graph. They are
    not cached: the trace is the work a cache would save, and only the trace says what network a module is.
    """
    request = shape_request(input_shapes, batch, resolution)
    modules = any(isinstance(i, torch.nn.Module) for i in items)
    where = where or ("the given networks" if modules else "the given files")
    if modules and (batch is not None or resolution is not None):
        raise UsageError("batch and resolution size dynamic dimensions of ONNX files; a torch module takes its "
                         "full input shapes from input_shapes")
    used: list[dict[str, list[int]]] = []
    todo: list[tuple[Network, dict[str, list[int]], dict[str, list[int]], dict[str, str]]] = []
    for item in items:
        if isinstance(item, torch.nn.Module):
            traced, recorded, dtypes = _module_shapes(item, request)
        else:
            item = Path(item)
            traced = recorded = resolve_dims(item, _input_dims(item), request)
            dtypes = {}
        used.append(recorded)
        todo.append((item, traced, recorded, dtypes))
    check_names_used(request, used, where)
    out = []
    for item, traced, recorded, dtypes in todo:
        if isinstance(item, torch.nn.Module):
            out.append(trace_module(item, traced, f"torch module {type(item).__name__}", recorded, dtypes))
            continue
        enc = encode_file(item, input_shapes=traced)
        if enc.inputs is None:  # a cache entry written before encodings recorded them: found at these shapes
            enc.inputs = recorded
        out.append(enc)
    return out


def encode_files(paths: Sequence[str | Path], input_shapes: InputShapes | None = None, batch: int | None = None,
                 resolution: int | None = None, where: str = "the given files") -> list[GraphEncoding]:
    """``encode_networks`` of ONNX files only (``predict --models DIR``)."""
    return encode_networks([Path(p) for p in paths], input_shapes, batch, resolution, where)


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

    def resolve(self, archs: Sequence[Network], space: str | None, input_shapes: InputShapes | None = None,
                batch: int | None = None, resolution: int | None = None) -> tuple[list[str], str | None]:
        """ONNX files and torch modules -> their graph keys and the graph-encoded space to use; arch strings pass.

        Networks are encoded at ``input_shapes``/``batch``/``resolution`` (``encode_networks``: files sized as
        ``hwlat measure --models`` sizes them and cached on disk by key, modules traced). Sizes with arch strings
        are refused, never ignored: an arch string names a network of its space's size.
        """
        items = list(archs)
        networks = [is_network(a) for a in items]
        if not items or not all(networks):
            if any(networks):
                raise UsageError("give either torch modules and ONNX files or arch strings, not both")
            if items and (input_shapes or batch is not None or resolution is not None):
                raise UsageError("input_shapes, batch and resolution size ONNX files and torch modules; arch "
                                 "strings name networks of their space's own size")
            return [str(a) for a in items], space
        return add_graphs(encode_networks(items, input_shapes, batch, resolution)), self._graph_space(space)

    def _graph_space(self, space: str | None) -> str:
        """The graph-encoded space that predicts networks: ``space``, else the ``onnx`` one, else the only one."""
        if space is not None:
            if not is_graph_space(self._model(space).space):
                raise UsageError(f"the {canonical_space(space)} model takes arch strings, not networks (ONNX files, "
                                 "torch modules)")
            return space
        graph = [name for name in self.models if is_graph_space(name)]
        if not graph:
            raise UsageError(f"the model has no graph-encoded space for ONNX files or torch modules; it covers "
                             f"{', '.join(self.spaces())} (train it on `hwlat measure --models` data)")
        if "onnx" in graph:
            return "onnx"
        if len(graph) > 1:
            raise UsageError(f"the model has several graph-encoded spaces ({', '.join(sorted(graph))}); pass space=")
        return graph[0]

    def _device(self, model: SpaceModel, device: str) -> None:
        if device not in model.devices:
            raise UsageError(f"device {device!r} is not in the {model.space} model; known: "
                             f"{', '.join(model.devices)}")

    def predict(self, archs: Sequence[str | Network], device: str, space: str | None = None, *,
                input_shapes: InputShapes | None = None, batch: int | None = None,
                resolution: int | None = None) -> np.ndarray:
        """Predicted latency in ms for each arch string, or each network: ONNX file (``.onnx`` paths) or
        ``torch.nn.Module``.

        ``input_shapes={"x": (1, 64, 32)}``, ``batch`` and ``resolution`` size the files' dynamic dimensions as
        ``hwlat measure --models`` does; a file with a dynamic dimension nothing sizes is refused. A module needs
        ``input_shapes`` for its ``forward`` arguments (``encode_networks``)."""
        return self.predict_with_uncertainty(archs, device, space, input_shapes=input_shapes, batch=batch,
                                             resolution=resolution)[0]

    def predict_with_uncertainty(self, archs: Sequence[str | Network], device: str, space: str | None = None, *,
                                 input_shapes: InputShapes | None = None, batch: int | None = None,
                                 resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms, std of log latency): a std of 0.1 means roughly +-10%.

        The std combines the ensemble's spread with, for a transferred device, its cost model's posterior.
        Networks are sized as in ``predict``.
        """
        archs, space = self.resolve(archs, space, input_shapes, batch, resolution)
        model = self._model(space, archs)
        self._device(model, device)
        mean, std = model.predict(archs, device)
        return np.exp(mean), std

    def prediction_table(self, networks: Sequence[Network], device: str, space: str | None = None, *,
                         input_shapes: InputShapes | None = None, batch: int | None = None,
                         resolution: int | None = None, where: str | None = None) -> pa.Table:
        """``predict_with_uncertainty`` of ONNX files and torch modules as a ``predictor.predictions`` table (what
        ``hwlat predictor predict --models`` writes): ``arch`` is the file stem or the module's class name,
        ``flops`` the encoding's FLOPs, ``model_key`` the network's encoding key and ``input_shapes_json`` the
        shapes it was predicted at.

        Why both: a file's ``model_key`` and ``input_shapes_json`` are those of the measured rows of the same
        file at the same shapes (``hwlat measure --models``), so predictions join to measurements; a module's
        ``model_key`` is its trace digest (``module_key``; no file, so no ``model_sha256`` or ``path``), and its
        ``input_shapes_json`` uses the names given in ``input_shapes``."""
        if not networks or not all(is_network(n) for n in networks):
            raise UsageError("prediction_table takes networks (ONNX files, torch modules), not arch strings")
        encoded = encode_networks(networks, input_shapes, batch, resolution, where)
        space = self._graph_space(space)
        ms, log_std = self.predict_with_uncertainty(add_graphs(encoded), device, space)
        files = [None if isinstance(n, torch.nn.Module) else Path(n) for n in networks]
        return prediction_table(
            space, device, [type(n).__name__ if f is None else f.stem for n, f in zip(networks, files, strict=True)],
            ms, log_std, flops=np.array([e.total("flops") for e in encoded], np.float64),
            model_sha256=[None if f is None else e.sha256 for e, f in zip(encoded, files, strict=True)],
            paths=[None if f is None else str(f.resolve()) for f in files], model_key=[e.key for e in encoded],
            input_shapes=[shapes_json(e.inputs) for e in encoded])

    def transfer(self, device: str, archs: Sequence[str | Network], latency_ms: Sequence[float],
                 space: str | None = None, cfg: TransferConfig | None = None, seed: int = 0, *,
                 input_shapes: InputShapes | None = None, batch: int | None = None,
                 resolution: int | None = None) -> dict:
        """Add a new device from a few measured archs or networks (see ``predictor.transfer``); networks are
        sized as in ``predict``: give the shapes they were measured at."""
        archs, space = self.resolve(archs, space, input_shapes, batch, resolution)
        return transfer(self._model(space, archs), device, archs, np.asarray(latency_ms, float), cfg, seed)

    def suggest(self, device: str, n: int, sampler: str = "default", measured: Iterable[str | Network] = (),
                candidates: Sequence[str | Network] | None = None, space: str | None = None,
                seed: int = 0, *, input_shapes: InputShapes | None = None, batch: int | None = None,
                resolution: int | None = None) -> list[str | torch.nn.Module]:
        """Which archs to measure next on ``device``, never one in ``measured``: for network candidates, which
        files (their paths, as strings) or modules (the module objects). Networks are sized as in ``predict``."""
        named: dict[str, str | torch.nn.Module] = {}
        if candidates is not None:
            keys, space = self.resolve(candidates, space, input_shapes, batch, resolution)
            named = {k: c if isinstance(c, torch.nn.Module) else str(c) for k, c in zip(keys, candidates, strict=True)}
            candidates = keys
            measured, _ = self.resolve(list(measured), space, input_shapes, batch, resolution)
        elif input_shapes or batch is not None or resolution is not None:
            raise UsageError("input_shapes, batch and resolution size network candidates; none were given")
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
                "cost_floor": dict(m.cost_floor), "cost_noise": dict(m.cost_noise),
                "nets": [n.state_dict() for n in m.nets],
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
        m.cost_noise = {d: float(v) for d, v in s.get("cost_noise", {}).items()}
        m.source = list(s["source"])
        shapes = {"mu": m.mu.shape, "sigma": m.sigma.shape, "cost": m.cost.shape[:1], "cost_scale": m.cost_scale.shape,
                  "nn_weight": m.nn_weight.shape}
        n_members = sum(n.k for n in nets)
        expected = {"mu": (n_members, len(devices)), "sigma": (n_members, len(devices)), "cost": (len(devices),),
                    "cost_scale": (len(devices),), "nn_weight": (len(devices),)}
        bad = [k for k in shapes if tuple(shapes[k]) != expected[k]]
        if bad or len(m.source) != len(devices) or (set(m.cost_cov) | set(m.cost_noise)) - set(devices):
            raise UsageError(f"{space}: per-device arrays do not match its {len(devices)} devices "
                             f"({', '.join(bad) or 'source/cost_cov/cost_noise'})")
        if not all(np.isfinite(v) and v >= 0.0 for v in m.cost_noise.values()):
            raise UsageError(f"{space}: a device's cost_noise is negative or not finite")
        example = [get_encoder(space).example()]
        for device in devices:  # every device predicts a finite latency, or the file is not usable
            mean, std = m.predict(example, device)
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
                raise UsageError(f"{space}: device {device!r} predicts NaN or infinite latency")
        models[space] = m
    if not isinstance(blob["fingerprint"], str):
        raise UsageError("the data fingerprint is not a string")
    return Predictor(models, blob["fingerprint"], dict(blob.get("meta", {})))
