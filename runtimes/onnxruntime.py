"""ONNX Runtime backend: CPU EP everywhere; the CUDA EP chosen automatically when the installed onnxruntime
offers it; the TensorRT EP with ``device="tensorrt"`` (engine and timing caches kept between runs).

Options (``load(path, backend="onnxruntime", device="tensorrt", trt_fp16=True, trt_cache=DIR)``):
``trt_fp16`` lets the TensorRT EP pick FP16 kernels; ``trt_cache`` moves its caches.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError

from .base import Option, Session, TensorSpec
from .formats import describe_bytes, detect_format, read_head

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(string)": "object",  # ONNX strings arrive as numpy object arrays of str
}


def cache_dir() -> Path:
    """Where edgesdk keeps per-machine caches (ORT TensorRT engines): $EDGESDK_CACHE, else the XDG cache."""
    root = os.environ.get("EDGESDK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgesdk")
    return Path(root)


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or f"dim{i}") for i, d in enumerate(node.shape or ()))
    return TensorSpec(node.name, _ORT_TYPES.get(node.type, node.type), shape)


def choose_providers(device: str, available: list[str], *, trt_cache: Path | None = None,
                     trt_fp16: bool = False) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers for ``device`` ("auto", "cpu", "cuda", "tensorrt") from those available.

    ``auto`` takes CUDA when present, not the TensorRT EP: that one builds an engine for every new
    process and input shape (minutes for a ResNet) unless its cache is set up, which ``device="tensorrt"``
    does (engine and timing caches under ``trt_cache``, by default ``cache_dir()/ort-trt``).
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]
    wanted = {"cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    if device not in wanted:
        raise BackendUnavailableError(f"unknown device {device!r} for onnxruntime",
                                      expected="auto, cpu, cuda or tensorrt", found=device)
    if wanted[device][0] not in available:
        raise BackendUnavailableError(f"onnxruntime here has no {wanted[device][0]}",
                                      expected=f"device={device} needs onnxruntime-gpu and an NVIDIA GPU"
                                               + (" with TensorRT libraries" if device == "tensorrt" else ""),
                                      found=f"providers: {', '.join(available)}",
                                      hint="pip install onnxruntime-gpu (instead of onnxruntime), or use device='cpu'")
    eps: list[str | tuple[str, dict[str, Any]]] = []
    for ep in wanted[device]:
        if ep == "TensorrtExecutionProvider":
            cache = str(trt_cache or cache_dir() / "ort-trt")
            eps.append((ep, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                             "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                             "trt_fp16_enable": bool(trt_fp16)}))
        elif ep in available:
            eps.append(ep)
    return eps + ["CPUExecutionProvider"]


_UNFUSED_NOTE = ("this CPU has AVX2 without VNNI, where onnxruntime's fused INT8 kernels overflow with full-range "
                 "8-bit weights; the QDQ graph runs unfused (correct, without the INT8 speed-up). Re-quantize with "
                 "7-bit weights (edgesdk does by default when it quantizes on such a CPU) to get the fused kernels")


_WARNED: set[str] = set()


def _needs_unfused_int8(path: Path) -> bool:
    """A QDQ model whose int8 weights use more than 7 bits, on a CPU where that saturates (see
    fingerprint.int8_saturates). Only such CPUs pay for reading the graph."""
    from .fingerprint import int8_saturates

    if not int8_saturates():
        return False
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # the onnx package is part of edgesdk[onnx]; without it, keep the default
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnxruntime reports unreadable files itself
        return False
    weights = {i.name: i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in weights:
            try:  # weights kept in an external file are read relative to the model, not the cwd
                w = numpy_helper.to_array(weights[node.input[0]], base_dir=str(Path(path).parent))
            except Exception:  # noqa: BLE001 - unreadable side data: onnxruntime reports it itself
                return False
            if w.size and int(np.abs(w.astype(np.int16)).max()) > 64:
                return True
    return False


class OrtSession(Session):
    """An onnxruntime.InferenceSession behind the Session API. ``run`` is thread-safe (ORT's own guarantee)."""

    backend = "onnxruntime"
    option_specs = {"trt_fp16": Option(bool, False, "let the TensorRT EP pick FP16 kernels (device='tensorrt')"),
                    "trt_cache": Option((str, Path), None, "folder for the TensorRT EP's engine and timing caches")}

    def _load_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError("onnxruntime is not installed", hint="pip install 'edgesdk[onnx]'") from e
        assert self.path is not None
        fmt = detect_format(self.path)
        if fmt != "onnx":
            raise ArtifactError(f"{self.path} is a {fmt} file, not ONNX; onnxruntime cannot run it",
                                expected="an .onnx model", found=describe_bytes(read_head(self.path)),
                                hint="let load() pick the backend (backend='auto')")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.notes: list[str] = []
        if self.device in ("auto", "cpu") and _needs_unfused_int8(self.path):
            # correct first: the fused kernels would overflow on this CPU; the QDQ graph runs in float math
            so.add_session_config_entry("session.disable_quant_qdq", "1")
            self.notes.append(_UNFUSED_NOTE)
            if str(self.path) not in _WARNED:  # once per file and process: compress loads it many times
                _WARNED.add(str(self.path))
                log.warning("%s: %s", self.path.name, _UNFUSED_NOTE)
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        trt_cache = self.options.get("trt_cache")
        self.providers = choose_providers(self.device, ort.get_available_providers(),
                                          trt_cache=Path(trt_cache) if trt_cache else None,
                                          trt_fp16=bool(self.options.get("trt_fp16", False)))
        for ep in self.providers:
            if isinstance(ep, tuple) and ep[1].get("trt_engine_cache_path"):
                Path(ep[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        self._sess = self._open(ort, so)
        if self._sess.get_providers() == ["CPUExecutionProvider"] and any(
                t.type == "tensor(float16)" for t in (*self._sess.get_inputs(), *self._sess.get_outputs())):
            # onnxruntime's CPU EP runs an fp16 graph through Casts it inserts around ops without fp16 kernels,
            # and its buffer reuse then hands those Casts a buffer of an earlier run's shape (measured with 1.32
            # on the builder's fp16 LLM: "Shape mismatch attempting to re-use buffer. {4,1,128} != {4,33,128}"
            # on the first decode step after a prefill); without reuse every run allocates afresh and is right
            so.enable_mem_reuse = False
            self._sess = self._open(ort, so)
            self.notes.append("fp16 graph on the CPU: onnxruntime's buffer reuse is off (it mis-sizes the casts "
                              "it inserts around ops without fp16 kernels)")
        self.providers = self._sess.get_providers()
        self._in = [_spec(i) for i in self._sess.get_inputs()]
        self._out = [_spec(o) for o in self._sess.get_outputs()]
        self._out_names = [o.name for o in self._out]

    def _open(self, ort: Any, so: Any) -> Any:
        try:
            return ort.InferenceSession(str(self.path), so, providers=self.providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            first = str(e).strip().splitlines()[0][:400] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"onnxruntime cannot load {self.path}", expected="a complete, valid ONNX model",
                                found=f"{type(e).__name__}: {first}",
                                hint="the file may be truncated or corrupt; re-export it, or check it with "
                                     "`edgesdk inspect`") from e

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._out_names, self._sess.run(self._out_names, feeds)))

    def _close_impl(self) -> None:
        self._sess = None


def doctor_detail() -> str:
    """For `edgesdk doctor`: the execution providers this onnxruntime offers."""
    import onnxruntime

    return "providers: " + ", ".join(onnxruntime.get_available_providers())
