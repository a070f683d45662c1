"""Quantize an ONNX artifact with onnxruntime.quantization: static INT8 (QDQ), dynamic INT8, FP16.

The fast configuration is chosen for the target and recorded:

* x86/Arm CPUs: uint8 activations, int8 per-channel weights (int8 activations measured
  2-3x slower on VNNI CPUs);
* TensorRT: symmetric int8 activations and weights (explicit quantization);
* dynamic INT8 quantizes MatMul/Gemm only: on Conv it produces ConvInteger, measured 5-8x
  slower than FP32, so Conv stays float unless asked for explicitly.

Example::

    info = quantize_onnx("model.onnx", "model.int8.onnx", mode="int8", calib={"x": x_calib})
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from edgesdk.errors import InputError
from edgesdk.recipe import CALIB_METHODS, QUANT_MODES as MODES, QUANT_TARGETS as TARGETS

log = logging.getLogger(__name__)
_DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "GRU", "EmbedLayerNormalization"]


@dataclass
class QuantInfo:
    """What the quantizer did, for the manifest."""

    mode: str
    target: str
    activation_type: str | None = None
    weight_type: str | None = None
    per_channel: bool | None = None
    symmetric_activations: bool | None = None
    calib_method: str | None = None
    calib_samples: int | None = None
    preprocessed: bool = False
    preprocess_note: str | None = None
    op_types: list[str] | None = None
    nodes_excluded: list[str] = field(default_factory=list)
    # compute nodes the output still runs in float (FP32), by op type:
    # {"count", "nodes" (first 5), "weights" (elements), "reason", "reasons" ({reason: count})}
    float_ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    # share of the compute ops' weight elements stored quantized (None when the graph has no weights)
    quantized_weight_fraction: float | None = None
    reduce_range: bool | None = None  # 7-bit weights (see _reduce_range)
    reduce_range_reason: str | None = None
    time_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Reader:
    """onnxruntime CalibrationDataReader over arrays named like the inputs, in small batches."""

    def __init__(self, data: Mapping[str, np.ndarray], batch: int = 16, exact: bool = False,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        n = len(next(iter(data.values())))
        last = n - batch + 1 if exact else n  # exact: only whole batches (a fixed-batch model takes no other)
        self._batches = [{k: np.ascontiguousarray(v[i:i + batch]) for k, v in data.items()}
                         for i in range(0, max(last, 0), batch)]
        self._it = iter(self._batches)
        self._served = 0
        self._on_progress = on_progress

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is not None and self._on_progress is not None:
            self._served += 1
            self._on_progress(min(self._served, len(self._batches)), len(self._batches))
        return item

    def rewind(self) -> None:
        self._it = iter(self._batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self._batches)


@contextlib.contextmanager
def _tmpdir(near: Path) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=".quant-", dir=near.parent))
    try:
        yield d
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def _fixed_batch(path: Path) -> int | None:
    """The batch size a fixed-batch ONNX model takes (its first input's dim 0), None when it is dynamic."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return None


def op_histogram(path: str | Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def resolve_target(target: str) -> str:
    """'auto' means the CPU configuration until a TensorRT export stage is in the recipe."""
    if target not in TARGETS:
        raise InputError(f"unknown quantization target {target!r}", expected=" | ".join(TARGETS), found=target)
    return "cpu" if target == "auto" else target


def preprocess(src: Path, dst: Path) -> tuple[Path, QuantInfo]:
    """Run quantization pre-processing once (the budget search quantizes the same graph many times)."""
    info = QuantInfo(mode="int8", target="cpu")
    return _preprocess(src, dst, info), info


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    """Run in ``path`` (our staging dir, removed with the run), so files onnxruntime's symbolic shape
    inference drops into the current directory when it fails never land in the user's folder."""
    with _CWD_LOCK:
        before = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(before)


def _preprocess(src: Path, dst: Path, info: QuantInfo) -> Path:
    """quant_pre_process (shape inference + graph optimisation); retry without symbolic shapes; else skip."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            from .export_onnx import _quiet

            # on failure it prints and writes sym_shape_infer_temp.onnx + *.data into the current directory
            with _cwd(dst.parent), _quiet():
                quant_pre_process(str(src.absolute()), str(dst.absolute()), skip_symbolic_shape=skip_symbolic)
            info.preprocessed = True
            if skip_symbolic:
                info.preprocess_note = "symbolic shape inference failed; pre-processed without it"
                log.info(info.preprocess_note)
            return dst
        except Exception as e:  # the pre-processor raises many types on exotic graphs
            note = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log.info("quant_pre_process (skip_symbolic_shape=%s) failed: %s", skip_symbolic, note)
            info.preprocess_note = f"pre-processing skipped ({note})"
    log.warning("quantization pre-processing failed; quantizing the graph as exported (%s)", info.preprocess_note)
    return src


def _reduce_range(target: str, asked: bool | None) -> tuple[bool, str | None]:
    """7-bit weights where 8-bit ones overflow: the CPU target on an x86 CPU without VNNI, where
    onnxruntime's u8 x s8 kernels add pairs of products in int16 (VPMADDUBSW) and saturate with full-range
    weights (measured on the digits CNN: cosine 0.989 instead of 0.9998). TensorRT reads full-range weights."""
    if asked is not None:
        return asked, "asked for" if asked else None
    from edgesdk.runtimes.fingerprint import int8_saturates

    if target == "cpu" and int8_saturates():
        return True, ("this CPU has AVX2 without VNNI: full-range int8 weights overflow onnxruntime's int16 "
                      "accumulation (VPMADDUBSW), so weights use 7 bits")
    return False, None


def quantize_onnx(src: str | Path, dst: str | Path, *, mode: str, calib: Mapping[str, np.ndarray] | None = None,
                  calib_method: str = "minmax", per_channel: bool = True, target: str = "auto",
                  nodes_to_exclude: list[str] | tuple[str, ...] = (), quantize_conv_dynamic: bool = False,
                  preprocess: bool = True, on_progress: Callable[[int, int], None] | None = None,
                  reduce_range: bool | None = None) -> QuantInfo:
    """Write a quantized copy of ``src`` to ``dst`` (atomically) and return what was done.

    ``on_progress(batches, total)`` follows static calibration. ``reduce_range`` None chooses 7-bit
    weights where this CPU needs them (see ``_reduce_range``); the choice is recorded."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode not in MODES or mode == "none":
        raise InputError(f"unknown quantization mode {mode!r}", expected="fp16 | int8 | int8-dynamic", found=mode)
    src, dst = Path(src), Path(dst)
    info = QuantInfo(mode=mode, target=resolve_target(target))
    if mode != "fp16":
        info.reduce_range, info.reduce_range_reason = _reduce_range(info.target, reduce_range)
    t0 = time.perf_counter()
    with _tmpdir(dst) as tmp:
        out = tmp / dst.name
        if mode == "fp16":
            _fp16(src, out, nodes_to_exclude)
            info.activation_type = info.weight_type = "float16"
        elif mode == "int8-dynamic":
            hist = op_histogram(src)
            ops = list(_DYNAMIC_OPS) + (["Conv"] if quantize_conv_dynamic else [])
            if hist.get("Conv") and not quantize_conv_dynamic:
                info.warnings.append(f"dynamic INT8 left {hist['Conv']} Conv nodes in float: dynamic ConvInteger "
                                     "runs 5-8x slower than FP32 on CPUs; use --quantize int8 (static) for conv nets")
            pre = _preprocess(src, tmp / "pre.onnx", info) if preprocess else src
            quantize_dynamic(str(pre), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                             reduce_range=bool(info.reduce_range),
                             op_types_to_quantize=ops, nodes_to_exclude=list(nodes_to_exclude) or None)
            info.weight_type, info.per_channel, info.op_types = "int8", per_channel, ops
        else:
            if calib is None:
                raise InputError("static INT8 needs calibration data",
                                 expected="--calib FILE.npz | DIR | random (random only when asked for)",
                                 hint="pass representative inputs; 100-500 samples are usually enough")
            if calib_method not in CALIB_METHODS:
                raise InputError(f"unknown calibration method {calib_method!r}", expected=" | ".join(CALIB_METHODS),
                                 found=calib_method)
            sym = info.target == "tensorrt"
            act = QuantType.QInt8 if sym else QuantType.QUInt8
            pre = _preprocess(src, tmp / "pre.onnx", info) if preprocess else src
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[calib_method]
            extra = {"ActivationSymmetric": sym, "WeightSymmetric": True}
            if calib_method == "percentile":
                extra["CalibPercentile"] = 99.999
            fixed = _fixed_batch(pre)  # a fixed-batch model is calibrated in batches of exactly that size
            reader = _Reader(calib, batch=fixed or 16, exact=fixed is not None, on_progress=on_progress)
            quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=bool(info.reduce_range),
                            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=list(nodes_to_exclude) or None, extra_options=extra)
            info.activation_type = "int8" if sym else "uint8"
            info.weight_type, info.per_channel, info.symmetric_activations = "int8", per_channel, sym
            info.calib_method, info.calib_samples = calib_method, len(next(iter(calib.values())))
        info.nodes_excluded = list(nodes_to_exclude)
        info.float_ops, info.quantized_weight_fraction = float_ops(out, mode, excluded=nodes_to_exclude,
                                                                   op_types=info.op_types)
        for w in float_op_warnings(info.float_ops, mode, info.quantized_weight_fraction):
            info.warnings.append(w)
            log.info(w)  # the budget quantizes many times; the manifest carries it once
        os.replace(out, dst)
    info.time_s = time.perf_counter() - t0
    return info


def _fp16(src: Path, dst: Path, exclude: list[str] | tuple[str, ...] = ()) -> None:
    """FP16 weights and compute; inputs and outputs stay FP32 so callers feed the same arrays; the nodes
    named in ``exclude`` stay FP32 (casts are inserted around them)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(exclude) or None)
    onnx.save(model, str(dst))


# -- what stayed in float ----------------------------------------------------------------
# compute op -> the input indices holding its weights (for LSTM/GRU/RNN: W and R); the first is checked
_WEIGHTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (1,), "Einsum": (1,), "LSTM": (1, 2),
            "GRU": (1, 2), "RNN": (1, 2), "Attention": (1,), "Gather": (0,), "EmbedLayerNormalization": (2, 3, 4)}
# compute ops without weights: their activation input (0) is checked
_ACTIVATION_OPS = ("Softmax", "LayerNormalization", "MultiHeadAttention", "InstanceNormalization")
_SIGNIFICANT = ("LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "Conv", "ConvTranspose", "MatMul", "Gemm")
_RECURRENT = ("LSTM", "GRU", "RNN")
_PASS_THROUGH = ("DequantizeLinear", "Cast", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze")
_MODE_LABEL = {"int8": "static INT8", "int8-dynamic": "dynamic INT8", "fp16": "FP16"}
_EXCLUDED = "excluded by the user or the accuracy budget"


class _Graph:
    """Producers, initializer sizes and element types of an ONNX graph (weights are not loaded)."""

    def __init__(self, path: Path, with_types: bool) -> None:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        self.nodes = list(model.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.init = {i.name: (int(np.prod(i.dims)) if len(i.dims) else 1, i.data_type) for i in model.graph.initializer}
        for n in self.nodes:  # some exporters write weights as Constant nodes instead of initializers
            t = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
            if n.op_type == "Constant" and t is not None:
                self.init[n.output[0]] = (int(np.prod(t.dims)) if len(t.dims) else 1, t.data_type)
        self.types = {name: t for name, (_, t) in self.init.items()}
        if with_types:  # FP16 mode asks which tensors are still FP32: shape inference knows
            try:
                model = onnx.shape_inference.infer_shapes(model)
            except Exception as e:  # inference fails on exotic contrib ops; Cast targets still answer
                log.info("shape inference for the float-op report failed: %s", e)
            for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
                self.types.setdefault(vi.name, vi.type.tensor_type.elem_type)
            for n in self.nodes:
                if n.op_type == "Cast":
                    self.types[n.output[0]] = next(a.i for a in n.attribute if a.name == "to")

    def weight(self, name: str) -> tuple[int, int] | None:
        """(elements, element type) of the initializer behind ``name``, through DequantizeLinear/Cast/Transpose."""
        for _ in range(4):
            if name in self.init:
                return self.init[name]
            node = self.producer.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None
            name = node.input[0]
        return None

    def from_dq(self, name: str) -> bool:
        node = self.producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"


_INTEGER_WEIGHTS = {"MatMulInteger": (1,), "ConvInteger": (1,), "DynamicQuantizeLSTM": (1, 2), "QAttention": (1,),
                    "DynamicQuantizeMatMul": (1,), "MatMulIntegerToFloat": (1,), "QEmbedLayerNormalization": (2,)}
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_CONV_DYNAMIC = "ConvInteger runs 5-8x slower than FP32 on CPUs, so dynamic INT8 leaves Conv float unless asked"
_NO_WEIGHT_DYNAMIC = "dynamic INT8 quantizes only ops with constant weights (activation x activation stays float)"
_EXPECTED = (_EXCLUDED, _CONV_DYNAMIC, _NO_WEIGHT_DYNAMIC)  # reasons that are choices, not surprises


def _supported(mode: str) -> set[str] | None:
    """The op types onnxruntime's quantizer handles in ``mode`` (None when its registry cannot be read)."""
    try:
        from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry
    except ImportError:  # an internal module: its layout may change between releases
        return None
    return set(QDQRegistry if mode == "int8" else IntegerOpsRegistry)


def _reason(node: Any, mode: str, excluded: set[str], op_types: list[str] | None, has_weight: bool) -> str:
    op = node.op_type
    if node.name in excluded:
        return _EXCLUDED
    if mode == "fp16":
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

        return ("the FP16 converter keeps this op type in FP32 (its op block list)" if op in DEFAULT_OP_BLOCK_LIST
                else "the FP16 converter kept it in FP32")
    supported = _supported(mode)
    kind = "QDQ" if mode == "int8" else "dynamic"
    if supported is not None and op not in supported:
        return f"onnxruntime's {kind} quantizer has no {op} kernel"
    if mode == "int8-dynamic" and op_types is not None and op not in op_types:
        if op == "Conv":
            return _CONV_DYNAMIC
        return f"not among the op types dynamic INT8 quantizes ({', '.join(op_types)})"
    if mode == "int8-dynamic" and not has_weight:
        return _NO_WEIGHT_DYNAMIC
    return "the quantizer left it in float (no quantization parameters for its inputs)"


def _node_state(g: _Graph, node: Any, mode: str) -> tuple[str | None, list[tuple[int, int]]]:
    """("float" | "quantized" | None when there is nothing to quantize, its weights as (elements, type))."""
    op, ins = node.op_type, list(node.input)
    if op in _INTEGER_WEIGHTS:
        return "quantized", [w for i in _INTEGER_WEIGHTS[op] if i < len(ins) and (w := g.weight(ins[i]))]
    if op in _WEIGHTS:
        idx = [i for i in _WEIGHTS[op] if i < len(ins) and ins[i]]
        weights = [w for i in idx if (w := g.weight(ins[i]))]
        if op == "Gather" and not (weights and (weights[0][1] in _FLOAT_TYPES or g.from_dq(ins[0]))):
            return None, []  # indexing a shape or an activation: data movement, nothing to quantize
        checked = idx[:1] if weights else [i for i in (0, 1) if i < len(ins)]  # activation x activation
    elif op in _ACTIVATION_OPS:
        weights, checked = [], [0]
    else:
        return None, []
    if mode == "fp16":
        types = [g.types.get(ins[i]) for i in checked]
        if any(t == 1 for t in types):
            return "float", weights
        return ("quantized" if all(t == 10 for t in types) else None), weights
    return ("quantized" if all(g.from_dq(ins[i]) for i in checked) else "float"), weights


def float_ops(path: str | Path, mode: str, *, excluded: list[str] | tuple[str, ...] = (),
              op_types: list[str] | None = None) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Which compute nodes of a quantized ONNX graph still run in float, by op type, and why.

    Returns ``({op_type: {"count", "nodes" (first 5), "weights" (elements), "reason", "reasons"}},
    quantized_weight_fraction)``; the fraction is over the compute ops' weight elements (None when
    none has weights). Shape and integer ops are not listed: they have nothing to quantize.

    Example::

        ops, frac = float_ops("model.int8.onnx", "int8")
        ops["LSTM"]["reason"]   # "onnxruntime's QDQ quantizer has no LSTM kernel"
    """
    g = _Graph(Path(path), with_types=mode == "fp16")
    skip = set(excluded)
    found: dict[str, dict[str, Any]] = {}
    done = total = 0
    for node in g.nodes:
        state, weights = _node_state(g, node, mode)
        size = sum(n for n, _ in weights)
        total += size if state else 0
        if state == "quantized":
            done += size
        if state != "float":
            continue
        entry = found.setdefault(node.op_type, {"count": 0, "nodes": [], "weights": 0, "reasons": {}})
        why = _reason(node, mode, skip, op_types, bool(weights))
        entry["count"] += 1
        entry["weights"] += size
        entry["reasons"][why] = entry["reasons"].get(why, 0) + 1
        if len(entry["nodes"]) < 5:
            entry["nodes"].append(node.name or node.output[0])
    for entry in found.values():
        r = entry["reasons"]
        entry["reason"] = next(iter(r)) if len(r) == 1 else "; ".join(f"{n}: {why}" for why, n in r.items())
    return found, (round(done / total, 4) if total else None)


def float_op_warnings(ops: Mapping[str, Mapping[str, Any]], mode: str, fraction: float | None) -> list[str]:
    """Warnings for the significant compute op types that stayed float for a reason nobody chose.

    Example::

        ops, frac = float_ops("m.int8.onnx", "int8")
        float_op_warnings(ops, "int8", frac)
        # ["static INT8 left 2 LSTM nodes in float (onnxruntime's QDQ quantizer has no LSTM kernel): ..."]
    """
    label = _MODE_LABEL.get(mode, mode)
    out = []
    for op in _SIGNIFICANT:
        e = ops.get(op)
        if not e:
            continue
        n = sum(c for why, c in e["reasons"].items() if why not in _EXPECTED)
        if not n:
            continue
        why = "; ".join(w for w in e["reasons"] if w not in _EXPECTED)
        if op in _RECURRENT:
            what = "the recurrent layers run in FP32 and keep their FP32 weights"
        elif op in ("Attention", "MultiHeadAttention"):
            what = "attention runs in FP32"
        else:
            what = "those layers run in FP32" + (f" and keep {e['weights']:,} FP32 weights" if e["weights"] else "")
        out.append(f"{label} left {n} {op} node{'s' if n > 1 else ''} in float ({why}): {what}")
    # the size note only where no other note explains it (budget exclusions and dynamic Conv have their own)
    unexplained = any(e["weights"] and set(e["reasons"]) - {_EXCLUDED, _CONV_DYNAMIC} for e in ops.values())
    if fraction is not None and fraction < 0.5 and unexplained:
        out.append(f"{label} quantized only {fraction:.0%} of the weights: the file stays close to its FP32 size "
                   f"(see float_ops for what stayed in float)")
    return out
