"""The graph encoding of a space's arch, traced from the space's own torch module: no export, no weights.

Why: a space without a dedicated predictor encoder (OFA, the ViT space ``autoformer``, a user's plug-in)
needs a graph encoding (``hwlat.spaces.graph.GraphEncoding``) of every arch the predictor sees: the
measured ones when it trains, and every candidate when ``hwlat profile`` predicts a pool of 10,000. Exporting
an ONNX file per candidate takes ~0.3-1 s (docs/spaces.md); this module builds the module on torch's
``meta`` device (shapes only: no memory, no arithmetic) and runs one forward pass on a meta input under a
``TorchFunctionMode`` that records every torch function call. Torch-function granularity is close to the
exported ONNX graph (``F.conv2d`` is one Conv, ``F.linear`` one Gemm/MatMul, ``x.reshape`` one Reshape),
unlike the aten ops a dispatch mode would see (``matmul`` decomposed into expand/view/bmm/view).

What is recorded, in the same vocabulary and units as the ONNX reader (``graph.OP_TYPES``):

* one operator per torch function (``F.conv2d``, ``F.batch_norm``, ``x + y``, ``x.mean``, ...), typed
  like its ONNX counterpart; calls on constants only (``weight.t()``) are folded away, as the exporter's
  constant folding does; no-ops in eval mode (``dropout``, ``contiguous``, ``clone``) are skipped;
* BatchNorm right after a convolution is folded into it (the exporter fuses Conv + BN in eval mode);
  its parameters still count, as ``torch_flops_params`` counts every trainable tensor;
* the activation fusions of ``graph.py``: ``x * sigmoid(x)`` is swish and ``x * hardsigmoid(x)`` is
  h-swish; ``F.gelu``/``F.silu``/``F.hardswish`` are one operator already. OFA's written-out
  ``x * relu6(x + 3) / 6`` stays Add, Clip (relu), Mul, Div, exactly as its ONNX graph and its runtimes have it;
* FLOPs = 2 x MACs of convolutions, linear layers and matrix products (``torch_flops_params``'s rule),
  bytes read/written (fp32 activations, weights), parameters (trainable tensors, at first use), edges.

A space whose module cannot be built or run on the meta device (data-dependent control flow, tensors
created on an explicit device) is traced on CPU instead, with real (uninitialised-weight) arithmetic: slower,
same result.

A user's own module (the predictor API's ``predict([module], ..., input_shapes=...)``) goes through the same
recorder (``trace_module``): its weights are swapped for meta tensors for the call (nothing copied or computed),
or, where that cannot run, it is run once on zeros; it is keyed by a digest of what was traced (``module_key``).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agents.errors import UsageError
from hwlat.spaces import SearchSpace, one_line, quote
from hwlat.spaces.graph import GraphEncoding, mark_dead

if TYPE_CHECKING:
    import torch

#: bump when the recorded operators change for the same module (the encodings' cache keys include it).
#: 2: dead operators marked (``hwlat.spaces.graph.mark_dead``)
TRACE_VERSION = 2

# torch function name -> normalised op type (names as ``func.__name__``; Tensor dunders included)
_CONV = ("conv1d", "conv2d", "conv3d")
_TYPE: dict[str, str] = {
    **{n: "conv_transpose" for n in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")},
    "linear": "gemm", "bilinear": "gemm",
    **{n: "matmul" for n in ("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "baddbmm", "addmm")},
    "softmax": "softmax", "log_softmax": "softmax", "_softmax": "softmax",
    "layer_norm": "layernorm", "rms_norm": "layernorm", "batch_norm": "batchnorm",
    "instance_norm": "norm_other", "group_norm": "norm_other", "normalize": "norm_other",
    "local_response_norm": "norm_other",
    **{n: "pool_max" for n in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                               "max_pool2d_with_indices", "max_pool3d_with_indices", "lp_pool2d")},
    **{n: "pool_avg" for n in ("avg_pool1d", "avg_pool2d", "avg_pool3d")},
    **{n: "relu" for n in ("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "prelu",
                           "clamp", "clamp_", "clip", "threshold")},
    "hardswish": "hswish", "hardsigmoid": "hsigmoid", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
    "silu": "swish", "gelu": "gelu",
    **{n: "act_other" for n in ("tanh", "tanh_", "elu", "selu", "celu", "softplus", "softsign", "mish", "erf",
                                "hardshrink", "softshrink", "tanhshrink", "logsigmoid", "rrelu")},
    **{n: "eltwise" for n in (
        "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__", "__isub__",
        "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__", "__rtruediv__",
        "__itruediv__", "__floordiv__", "true_divide", "pow", "__pow__", "__rpow__", "sqrt", "rsqrt", "neg",
        "__neg__", "abs", "exp", "log", "reciprocal", "maximum", "minimum", "where", "eq", "__eq__", "ne",
        "lt", "__lt__", "le", "gt", "__gt__", "ge", "masked_fill", "floor", "ceil", "round", "sign", "sin",
        "cos", "addcmul", "lerp", "square", "float", "half", "to", "type_as")},
    **{n: "reduce" for n in ("mean", "sum", "amax", "amin", "max", "min", "argmax", "argmin", "std", "var",
                             "prod", "cumsum", "norm", "logsumexp")},
    **{n: "reshape" for n in ("reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "expand",
                              "expand_as", "view_as", "reshape_as", "broadcast_to")},
    **{n: "transpose" for n in ("transpose", "permute", "t", "swapaxes", "movedim", "pixel_shuffle",
                                "pixel_unshuffle", "channel_shuffle")},
    "cat": "concat", "concat": "concat", "stack": "concat",
    **{n: "slice" for n in ("__getitem__", "narrow", "select", "split", "chunk", "unbind", "__iter__", "gather",
                            "index_select", "tile", "repeat", "roll", "tensor_split", "embedding")},
    "pad": "pad", "interpolate": "resize", "upsample": "resize", "upsample_bilinear": "resize",
    "upsample_nearest": "resize",
}
#: calls that compute nothing in an eval-mode forward (the exporter drops them): outputs alias the input
_PASS = frozenset({"contiguous", "clone", "detach", "dropout", "dropout1d", "dropout2d", "dropout3d",
                   "alpha_dropout", "feature_alpha_dropout", "identity", "requires_grad_"})
_ADAPTIVE = {"adaptive_avg_pool1d": "pool_avg", "adaptive_avg_pool2d": "pool_avg", "adaptive_avg_pool3d": "pool_avg",
             "adaptive_max_pool1d": "pool_max", "adaptive_max_pool2d": "pool_max", "adaptive_max_pool3d": "pool_max",
             "adaptive_max_pool2d_with_indices": "pool_max"}
#: products: one with the number 0 makes its result a constant (``mark_dead``)
_MUL = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__"})
_MAC = frozenset({*_CONV, "linear", "bilinear", "matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "baddbmm",
                  "addmm"})


def trace_key(space: SearchSpace, arch: str, batch: int, resolution: int) -> str:
    """The cache key of one traced network: what decides it (space identity, canonical arch, input size,
    this tracer's version and torch's)."""
    import torch

    parts = (space.cache_identity(), arch, f"b{batch}", f"r{resolution}", f"trace-v{TRACE_VERSION}", torch.__version__)
    text = "\x1f".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()


def trace_encoding(space: SearchSpace, arch: str, batch: int = 1, resolution: int | None = None) -> GraphEncoding:
    """The ``GraphEncoding`` of ``space``'s network for ``arch`` (any spelling), keyed by ``trace_key``.

    Bad archs raise ``ArchError``; an operator the tracer has no type for is a one-line ``UsageError``
    naming it.
    """

    canon = space.validate(arch)
    res = space.resolution_for(canon, resolution)
    space.check_input(batch, res)
    key = trace_key(space, canon, batch, res)
    with _no_cyclic_gc():
        return _trace_space(space, canon, batch, res, key)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: a trace allocates thousands of short-lived objects (modules, meta
    tensors, records) and frees them by reference counting; the collector would walk them all several times
    over (half the time)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _trace_space(space: SearchSpace, canon: str, batch: int, res: int, key: str) -> GraphEncoding:
    import torch

    try:
        with _meta_build():
            model = space._build(canon, res).eval()
        x = torch.empty(space.input_shape(batch, res), device="meta")
        return _trace(lambda: model(x), [x], model.parameters(), key)
    except UsageError:
        raise
    except Exception:  # any meta-device failure: trace with real tensors instead
        pass
    with torch.random.fork_rng(devices=[]):
        model = space._build(canon, res).eval()
    try:
        x = torch.zeros(space.input_shape(batch, res))
        return _trace(lambda: model(x), [x], model.parameters(), key)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot trace {space.name} arch {quote(canon, 80)}: {type(exc).__name__}: "
                         f"{one_line(exc)}") from None


def forward_inputs(module: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(required, optional) argument names of ``module.forward``, in order: what a module's input shapes are
    named by (a module, unlike an ONNX graph, declares no inputs). ``*args``/``**kwargs`` have no names."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return [], []
    required: list[str] = []
    optional: list[str] = []
    for param in sig.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        (required if param.default is param.empty else optional).append(param.name)
    return required, optional


def trace_module(module: torch.nn.Module, shapes: Mapping[str, Sequence[int]], label: str = "module",
                 recorded: Mapping[str, Sequence[int]] | None = None,
                 dtypes: Mapping[str, str] | None = None) -> GraphEncoding:
    """The ``GraphEncoding`` of a user's torch module called on ``shapes`` (by ``forward`` argument name), with
    the tracer the spaces use, in eval mode as ``torch.onnx.export`` runs it; the module is left as it was.

    Its weights are replaced by meta tensors for the trace (``torch.func.functional_call``: nothing is computed
    or copied); a module that cannot run on the meta device is run once on zeros on its own device instead.
    Inputs are floating tensors of the module's parameter dtype, except those ``dtypes`` names ({argument: torch
    dtype name}, e.g. "int64" for token ids). ``recorded`` is what the encoding's ``inputs``
    say (default ``shapes``: a caller may name them as the user did). The key is ``module_key`` of what was
    traced. A function the tracer has no type for, or a module that cannot be called on those shapes, is a
    one-line ``UsageError`` naming ``label``.
    """
    import torch

    sized = {str(n): [int(d) for d in dims] for n, dims in shapes.items()}
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    default = tensors[0].dtype if tensors else torch.float32
    dtype = {n: _torch_dtype(dtypes[n], n, label) if dtypes and n in dtypes else default for n in sized}
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with _no_cyclic_gc():
            enc = _trace_module(module, sized, dtype, label)
    except UsageError as exc:
        msg = str(exc)
        raise UsageError(msg if msg.startswith(f"cannot trace {label}") else f"{label}: {msg}") from None
    finally:
        for m, mode in modes:
            m.training = mode
    key = module_key(enc)
    inputs = {str(n): [int(d) for d in dims] for n, dims in (recorded or sized).items()}
    return GraphEncoding(key, enc.ops, enc.edges, inputs=inputs, key=key, liveness=enc.liveness)


def module_key(enc: GraphEncoding) -> str:
    """``torch-`` and the sha256 of a traced module's operators and edges (this tracer's version included).

    Why a digest of the trace: a module has no file whose bytes could be hashed, and its Python code and weights
    do not say what network it is (``forward`` may read shapes, flags, other objects); what the predictor sees is
    the traced graph, so two modules with the same graph are the same network to it and share a key. Input
    names are left out: they do not change the network."""
    body = json.dumps({"ops": enc.ops, "edges": [list(e) for e in enc.edges], "trace": TRACE_VERSION},
                      sort_keys=True, separators=(",", ":"))
    return "torch-" + hashlib.sha256(body.encode()).hexdigest()


def _torch_dtype(name: str, arg: str, label: str) -> Any:
    """The torch dtype called ``name`` ("int64", "float16"), or a one-line ``UsageError``."""
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"{label}: input {arg} is given as a tensor of dtype {name!r}, which torch has no dtype for")
    return dtype


def _trace_module(module: torch.nn.Module, shapes: dict[str, list[int]], dtype: dict[str, Any],
                  label: str) -> GraphEncoding:
    import torch
    from torch.func import functional_call

    required, optional = forward_inputs(module)
    order = [n for n in (*required, *optional) if n in shapes]
    positional = [n for n in required if n in shapes]
    try:
        params = {n: torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
                  for n, p in module.named_parameters()}
        buffers = {n: torch.empty_like(b, device="meta") for n, b in module.named_buffers()}
        meta = {n: torch.empty(shapes[n], dtype=dtype[n], device="meta") for n in order}
        args, kwargs = [meta[n] for n in positional], {n: meta[n] for n in order if n not in positional}
        return _trace(lambda: functional_call(module, {**params, **buffers}, tuple(args), kwargs),
                      list(meta.values()), params.values(), "")
    except UsageError:
        raise
    except Exception:  # any meta-device failure: run the module itself once, on zeros
        pass
    device = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    real = {n: torch.zeros(shapes[n], dtype=dtype[n], device=device) for n in order}
    args, kwargs = [real[n] for n in positional], {n: real[n] for n in order if n not in positional}
    try:
        return _trace(lambda: module(*args, **kwargs), list(real.values()), module.parameters(), "")
    except UsageError:
        raise
    except Exception as exc:
        floats = [n for n in order if dtype[n].is_floating_point]
        many = len(floats) > 1
        hint = (f" (input{'s' if many else ''} {', '.join(floats)} {'were' if many else 'was'} "
                f"{str(dtype[floats[0]]).removeprefix('torch.')}: an input of another dtype, such as integer token "
                "ids, is given as an example tensor in input_shapes)") if floats else ""
        raise UsageError(f"cannot trace {label} at input shapes {json.dumps(shapes)}: {type(exc).__name__}: "
                         f"{one_line(exc)}{hint}") from None


def _meta_build_mode() -> type:
    """A ``TorchFunctionMode`` that builds modules on the meta device, cheaply: factory functions (``torch.empty``,
    ``torch.zeros``, ...) get ``device="meta"`` (as ``with torch.device("meta")`` does), and in-place tensor
    methods (``uniform_``, ``normal_``, ``zero_``: weight initialisation) do nothing. On the meta device they
    would compute nothing anyway, but each still costs a Python decomposition, more than the module itself."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    factories = _device_constructors()

    class MetaBuild(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            if func in factories:
                kwargs["device"] = "meta"
                return func(*args, **kwargs)
            name = getattr(func, "__name__", "")
            if name[-1:] == "_" and name[-2:] != "__" and name not in _RESHAPING and args \
                    and getattr(args[0], "is_meta", False):
                return args[0]
            return func(*args, **kwargs)

    return MetaBuild


def _meta_build() -> Any:
    """``with _meta_build(): module = ...`` builds ``module`` on the meta device without initialising it."""
    global _META_BUILD
    if _META_BUILD is None:
        _META_BUILD = _meta_build_mode()
    return _META_BUILD()


_META_BUILD: type | None = None
#: in-place methods that change a tensor's shape: the meta build runs them
_RESHAPING = frozenset({"resize_", "resize_as_", "squeeze_", "unsqueeze_", "t_", "transpose_", "swapdims_",
                        "swapaxes_", "as_strided_", "set_", "unflatten_"})

#: (function, description of its arguments) -> description of its output, for meta tensors: the shapes of a
#: call's outputs depend only on its inputs' shapes and its other arguments, and most calls repeat across
#: the archs of a space (the same block at the same size), so a repeated call skips torch's meta kernels
#: (many are Python decompositions: ~1 s per OFA network without this, ~10 ms with it)
_MEMO: dict[tuple, Any] = {}


class _NoMemo(Exception):
    """An argument or result the memo cannot describe: call the function."""


def _desc(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        if not obj.is_meta:
            raise _NoMemo
        return ("T", tuple(obj.shape), obj.dtype)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_desc(o) for o in obj))
    if isinstance(obj, dict):
        return ("D", tuple((k, _desc(v)) for k, v in sorted(obj.items())))
    if isinstance(obj, slice):
        return ("S", _desc(obj.start), _desc(obj.stop), _desc(obj.step))
    if obj is None or obj is Ellipsis or isinstance(obj, (bool, int, float, str, torch.dtype, torch.device,
                                                          torch.memory_format, torch.layout)):
        return obj
    raise _NoMemo


def _out_desc(out: Any, ins: list[Any]) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        for i, t in enumerate(ins):
            if t is out:
                return ("A", i)  # in place: the result is that input
        return ("T", tuple(out.shape), tuple(out.stride()), out.dtype)
    if isinstance(out, (list, tuple)) and not isinstance(out, torch.Size):
        return (type(out).__name__, tuple(_out_desc(o, ins) for o in out))
    if out is None or isinstance(out, (bool, int, float, torch.Size, torch.dtype)):
        return ("V", out)
    raise _NoMemo


def _rebuild(desc: Any, ins: list[Any]) -> Any:
    import torch

    tag = desc[0]
    if tag == "A":
        return ins[desc[1]]
    if tag == "T":
        return torch.empty_strided(desc[1], desc[2], dtype=desc[3], device="meta")
    if tag == "V":
        return desc[1]
    items = [_rebuild(d, ins) for d in desc[1]]
    return tuple(items) if tag == "tuple" else items


def _call(func: Any, args: tuple, kwargs: dict, ins: list[Any]) -> Any:
    """``func(*args, **kwargs)``, from the memo when the inputs are meta tensors and it was seen before."""
    try:
        key = (func, _desc(args), _desc(kwargs))
        hit = _MEMO.get(key)
    except (_NoMemo, TypeError):
        return func(*args, **kwargs)
    if hit is not None:
        return _rebuild(hit, ins)
    out = func(*args, **kwargs)
    with contextlib.suppress(_NoMemo):
        _MEMO[key] = _out_desc(out, ins)
    return out


def _tensors(obj: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _nbytes(t: torch.Tensor) -> int:
    return math.prod(t.shape) * t.element_size()


class _Op:
    """One recorded call: its name, type, activation inputs (op ids), tensors, attributes, FLOPs."""

    __slots__ = ("acts", "attrs", "flops", "ins", "name", "outs", "params", "srcs", "type", "weights", "zeroing")

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.type = name, kind
        self.srcs: list[int] = []  # producer op index per activation input (-1: the network input)
        self.acts: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []
        self.outs: list[torch.Tensor] = []
        self.attrs: dict[str, Any] = {}
        self.flops = 0
        self.params = 0
        self.zeroing = False  # a product with the number 0 (``x * 0``: a NAS supernet's "none" op)


def _trace(forward: Callable[[], Any], inputs: list[torch.Tensor], params: Iterable[torch.Tensor],
           key: str) -> GraphEncoding:
    """Record ``forward()`` (a module called on ``inputs``; ``params``: its trainable tensors, counted once)."""
    import torch
    from torch.overrides import TorchFunctionMode

    trainable = {id(p): p for p in params}
    ops: list[_Op] = []
    producer: dict[int, int] = {id(x): -1 for x in inputs}  # tensor id -> op index (-1: a network input)
    alive: list[Any] = list(inputs)  # keeps every seen tensor alive, so an id is never reused during the trace
    counted: set[int] = set()
    const_src: dict[int, list[int]] = {}  # folded constant tensor id -> ids of the parameters it came from

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            ins = _tensors((args, kwargs))
            out = func(*args, **kwargs) if name == "__iter__" else _call(func, args, kwargs, ins)
            if name == "__get__" or (name.startswith("_") and name not in _TYPE):
                name = "identity"  # attribute reads (x.shape; x.data, x.T alias), private helpers
            if name == "__iter__":
                out = list(out)
            outs = _tensors(out)
            if not outs:
                return iter(out) if name == "__iter__" else out
            alive.extend(ins)
            alive.extend(outs)
            act_ins = [t for t in ins if id(t) in producer]
            if not act_ins:  # constants only (weight.t(), a mask): folded like the exporter's constant folding
                srcs = [s for t in ins for s in const_src.get(id(t), [id(t)] if id(t) in trainable else [])]
                for t in outs:
                    const_src[id(t)] = srcs
                return iter(out) if name == "__iter__" else out
            if name in _PASS:
                for t in outs:
                    producer[id(t)] = producer[id(act_ins[0])]
                return out
            op = _Op(name, _kind(name, args, kwargs, act_ins, outs))
            op.srcs = [producer[id(t)] for t in act_ins]
            op.acts = act_ins
            op.weights = [t for t in ins if id(t) not in producer]
            op.outs = outs
            op.zeroing = name in _MUL and any(
                isinstance(a, (int, float)) and not isinstance(a, bool) and a == 0 for a in (*args, *kwargs.values()))
            if name in _CONV or _TYPE.get(name) == "conv_transpose":
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
                dilation = args[5] if len(args) > 5 else kwargs.get("dilation", 1)
                groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
                nd = weight.dim() - 2
                op.attrs = {"kernel": _shape(weight)[2:], "stride": _tuple(stride, nd), "groups": int(groups),
                            "dilation": _tuple(dilation, nd)}
            elif op.type in ("pool_max", "pool_avg") and name not in _ADAPTIVE:
                kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
                stride = args[2] if len(args) > 2 else kwargs.get("stride")
                nd = act_ins[0].dim() - 2
                op.attrs = {"kernel": _tuple(kernel, nd), "stride": _tuple(stride or kernel, nd)}
            if name in _MAC:
                op.flops = 2 * _macs(name, args, kwargs, outs[0])
            bias = None
            if name == "linear" and act_ins[0].dim() > 2 and len(op.weights) == 2:
                bias = op.weights.pop()  # exported as MatMul + Add (Gemm takes 2-D inputs only)
            _add(op, outs)
            if bias is not None:
                _add(_follow(ops, "add", "eltwise", outs[0], [bias]), outs)
            elif name in ("unbind", "__iter__"):  # exported as one Split and a Squeeze per output
                for t in outs:
                    _add(_follow(ops, "squeeze", "reshape", t, []), [t])
            return iter(out) if name == "__iter__" else out

    def _add(op: _Op, outs: list[torch.Tensor]) -> None:
        for w in op.weights:
            for src in const_src.get(id(w), [id(w)] if id(w) in trainable else []):
                if src not in counted:
                    counted.add(src)
                    op.params += trainable[src].numel()
        ops.append(op)
        for t in outs:
            producer[id(t)] = len(ops) - 1

    with torch.no_grad(), Recorder():
        result = forward()
    return _encode(ops, key, {producer[id(t)] for t in _tensors(result) if producer.get(id(t), -1) >= 0})


def _follow(ops: list[_Op], name: str, kind: str, x: torch.Tensor, weights: list[torch.Tensor]) -> _Op:
    """An operator the exporter adds after the last recorded one, reading its output ``x`` (in place)."""
    op = _Op(name, kind)
    op.srcs, op.acts, op.weights, op.outs = [len(ops) - 1], [x], weights, [x]
    for k, prev in enumerate(reversed(ops)):  # the op that made x (a Squeeze follows its Split)
        if any(t is x for t in prev.outs):
            op.srcs = [len(ops) - 1 - k]
            break
    return op


def _tuple(v: Any, nd: int) -> list[int]:
    return [int(a) for a in v] if isinstance(v, (list, tuple)) else [int(v)] * nd


def _kind(name: str, args: tuple, kwargs: dict, acts: list[torch.Tensor], outs: list[torch.Tensor]) -> str:
    """The ``OP_TYPES`` name of one call (``UsageError`` for a function with no type)."""
    if name in _CONV:
        x, weight = acts[0], args[1] if len(args) > 1 else kwargs["weight"]
        groups = int(args[6] if len(args) > 6 else kwargs.get("groups", 1))
        if groups > 1:
            return "conv_dw" if groups == x.shape[1] else "conv_group"
        return "conv_pw" if all(k == 1 for k in weight.shape[2:]) else "conv"
    if name in _ADAPTIVE:
        return "pool_global" if all(s == 1 for s in outs[0].shape[2:]) else _ADAPTIVE[name]
    kind = _TYPE.get(name)
    if kind is None:
        raise UsageError(f"operator {name} is not supported by the graph encoder's tracer (hwlat.spaces.trace)")
    if kind == "matmul":
        operands = args[1:3] if name in ("addmm", "baddbmm") else args[:2]
        if sum(any(t is a for a in acts) for t in operands) < 2:
            return "gemm"  # one operand is a constant: a fully connected layer (as graph.py types MatMul)
    if kind == "reduce" and name in ("max", "min") and len(acts) == 2:
        return "eltwise"
    return kind


def _macs(name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    """Multiply-accumulates, counted as ``torch.utils.flop_counter`` counts them (bias adds excluded)."""
    if name in _CONV:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return math.prod(out.shape) * math.prod(weight.shape[1:])
    if name in ("linear", "bilinear"):
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return math.prod(out.shape) * math.prod(weight.shape[1:])
    if name in ("addmm", "baddbmm"):
        return math.prod(out.shape) * int(args[1].shape[-1])
    if name == "__rmatmul__":  # other @ self: the contracted dimension is self's second to last
        return math.prod(out.shape) * int(args[0].shape[-2] if args[0].dim() > 1 else args[0].shape[0])
    return math.prod(out.shape) * int(args[0].shape[-1])


def _encode(ops: list[_Op], key: str, outputs: set[int]) -> GraphEncoding:
    """Fold BN into the conv before it, fuse swish / h-swish, mark dead ops (``outputs``: the ops whose tensors
    the forward returned), and write the ``GraphEncoding`` records."""
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for s in op.srcs:
            consumers.setdefault(s, []).append(i)
    merged: dict[int, int] = {}  # op index -> the op it was folded into
    for i, op in enumerate(ops):
        if op.type == "batchnorm" and op.srcs[0] >= 0 and ops[op.srcs[0]].type.startswith("conv") \
                and consumers.get(op.srcs[0]) == [i]:
            merged[i] = op.srcs[0]
        elif op.name in ("mul", "__mul__", "__rmul__") and len(op.srcs) == 2:
            for a, b in (op.srcs, op.srcs[::-1]):
                if a >= 0 and ops[a].type in ("sigmoid", "hsigmoid") and ops[a].srcs == [b] \
                        and consumers.get(a) == [i]:
                    merged[a] = i
                    op.type = "swish" if ops[a].type == "sigmoid" else "hswish"
                    break
    gates_of: dict[int, list[int]] = {}
    for j, into in merged.items():
        if j < into:
            gates_of.setdefault(into, []).append(j)
    records: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    for i, op in enumerate(ops):
        if i in merged and merged[i] > i:
            continue  # a gate folded into the Mul that follows it
        if i in merged:  # BN folded into its conv: the conv's output, bias and parameters change
            rec = records[index[merged[i]]]
            rec["onnx"].append(op.name)
            rec["outputs"] = [_shape(t) for t in op.outs]
            rec["params"] += op.params
            if len(rec["weights"]) == 1:  # the folded BN gives the conv a bias
                rec["weights"].append([int(op.outs[0].shape[1])])
                rec["bytes_read"] += int(op.outs[0].shape[1]) * op.outs[0].element_size()
            index[i] = index[merged[i]]
            continue
        gates = gates_of.get(i, [])
        acts, weights, params, names = list(op.acts), list(op.weights), op.params, [op.name]
        srcs = list(op.srcs)
        for j in gates:
            g = ops[j]
            names.insert(0, g.name)
            weights += g.weights
            params += g.params
            drop = [k for k, s in enumerate(srcs) if s == j]
            acts = [t for k, t in enumerate(acts) if k not in drop]
            srcs = [s for k, s in enumerate(srcs) if k not in drop]
        index[i] = len(records)
        records.append({
            "type": op.type, "onnx": names, "name": f"{op.name}_{i}", "attrs": op.attrs,
            "inputs": [_shape(t) for t in acts], "weights": [_shape(t) for t in weights],
            "outputs": [_shape(t) for t in op.outs], "flops": int(op.flops),
            "bytes_read": sum(_nbytes(t) for t in (*acts, *weights)),
            "bytes_written": sum(_nbytes(t) for t in op.outs), "params": int(params),
            "_srcs": srcs,
        })
    edges = sorted({(index[s], index[i]) for i in index for s in ops[i].srcs if s >= 0 and index.get(s) is not None
                    and index[s] != index[i] and i not in merged})
    for rec in records:
        del rec["_srcs"]
    zeroing = {index[i] for i, op in enumerate(ops) if op.zeroing and i in index}
    mark_dead(records, edges, zeroing, {index[i] for i in outputs if i in index})
    return GraphEncoding(key, records, edges, liveness=True)
