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


def _preprocess(src: Path, dst: Path, info: QuantInfo) -> Path:
    """quant_pre_process (shape inference + graph optimisation); retry without symbolic shapes; else skip."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
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


def quantize_onnx(src: str | Path, dst: str | Path, *, mode: str, calib: Mapping[str, np.ndarray] | None = None,
                  calib_method: str = "minmax", per_channel: bool = True, target: str = "auto",
                  nodes_to_exclude: list[str] | tuple[str, ...] = (), quantize_conv_dynamic: bool = False,
                  preprocess: bool = True, on_progress: Callable[[int, int], None] | None = None) -> QuantInfo:
    """Write a quantized copy of ``src`` to ``dst`` (atomically) and return what was done.

    ``on_progress(batches, total)`` follows static calibration."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode not in MODES or mode == "none":
        raise InputError(f"unknown quantization mode {mode!r}", expected="fp16 | int8 | int8-dynamic", found=mode)
    src, dst = Path(src), Path(dst)
    info = QuantInfo(mode=mode, target=resolve_target(target))
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
                            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=list(nodes_to_exclude) or None, extra_options=extra)
            info.activation_type = "int8" if sym else "uint8"
            info.weight_type, info.per_channel, info.symmetric_activations = "int8", per_channel, sym
            info.calib_method, info.calib_samples = calib_method, len(next(iter(calib.values())))
        info.nodes_excluded = list(nodes_to_exclude)
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
