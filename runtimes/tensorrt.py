"""TensorRT engine backend (TensorRT 10 Python API + cuda-python), imported only when used.

An engine is a compiled program for one TensorRT version and one GPU generation. Before it
deserializes anything, the session reads the engine record written beside it
(``model.engine.json``) and compares it with this machine (:func:`check_compatibility`); a
mismatch is a clear ArtifactError, and ``rebuild=True`` rebuilds the engine from the ONNX file
the record names (no torch needed). Engines are executable code: load only engines you built.

Concurrency: one ICudaEngine, and a pool of slots, each an (execution context, CUDA stream,
device buffers) triple; a caller takes a slot for one run, so threads never share a context.
``cuda_graph=True`` captures ``execute_async_v3`` once per input-shape signature and replays it.

Example::

    with load("out/model.fp16.engine") as sess:          # or load("out/", artifact="model.fp16.engine")
        y = sess.run({"x": x})
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError

from .base import Session, TensorSpec
from .pool import Pool

log = logging.getLogger(__name__)


INSTALL = ("pip install 'edgesdk[tensorrt]' --extra-index-url https://pypi.nvidia.com "
           "(on Jetson: JetPack's python3-libnvinfer)")


def import_tensorrt() -> Any:
    """The tensorrt module, or BackendUnavailableError with the install command."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError("the tensorrt Python package is not installed", found=str(e),
                                      hint=INSTALL) from e
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as e:
            raise BackendUnavailableError("cuda-python is not installed (needed for TensorRT device buffers)",
                                          hint=INSTALL) from e
    return cudart


def check_cuda(cudart: Any, err: Any, what: str) -> None:
    """Raise a clear error when a cuda-python call returned a non-zero status."""
    if int(err) != 0:
        _, text = cudart.cudaGetErrorString(err)
        raise BackendUnavailableError(f"CUDA call {what} failed", found=f"{err}: {text!r}",
                                      hint="check the NVIDIA driver and that a GPU is visible (nvidia-smi)")


def gpu_identity() -> dict[str, Any]:
    """Name and compute capability of CUDA device 0 (what an engine is tied to)."""
    cudart = import_cudart()
    err, prop = cudart.cudaGetDeviceProperties(0)
    check_cuda(cudart, err, "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}"}


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in str(v).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _cc(v: str | None) -> tuple[int, int] | None:
    if not v:
        return None
    major, _, minor = str(v).partition(".")
    return int(major), int(minor or 0)


def check_compatibility(record: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """Reasons the engine described by ``record`` cannot run on ``here``; empty when it can.

    ``record`` is the engine record (``tensorrt``, ``gpu``, ``compute_capability``, ``settings``);
    ``here`` has the same keys for this machine. TensorRT's rules: a plain engine needs the exact
    TensorRT release (major.minor.patch) it was built with; a version-compatible one runs on the
    same or a later release of the same major version. A plain engine needs the same compute
    capability; ``ampere_plus`` hardware compatibility needs compute capability 8.0 or newer.

    Example::

        check_compatibility({"tensorrt": "10.3.0", "compute_capability": "8.7"},
                            {"tensorrt": "10.7.0", "compute_capability": "8.7"})
        # ['built with TensorRT 10.3.0, this machine has 10.7.0 (engines need the same release)']
    """
    settings = record.get("settings") or {}
    reasons = []
    built, have = record.get("tensorrt"), here.get("tensorrt")
    if built and have:
        b, h = _version_tuple(built), _version_tuple(have)
        if settings.get("version_compatible"):
            if h[0] != b[0] or h < b:
                reasons.append(f"built version-compatible with TensorRT {built}, this machine has {have} (needs "
                               f"{b[0]}.x at or after {built})")
        elif b != h:
            reasons.append(f"built with TensorRT {built}, this machine has {have} (engines need the same release)")
    built_cc, have_cc = _cc(record.get("compute_capability")), _cc(here.get("compute_capability"))
    if built_cc and have_cc:
        if settings.get("hardware_compatibility") == "ampere_plus":
            if have_cc < (8, 0):
                reasons.append(f"built for Ampere and newer GPUs (compute capability >= 8.0), this GPU is "
                               f"{here.get('gpu')} ({here.get('compute_capability')})")
        elif built_cc != have_cc:
            reasons.append(f"built on {record.get('gpu')} (compute capability {record.get('compute_capability')}), "
                           f"this GPU is {here.get('gpu')} ({here.get('compute_capability')})")
    return reasons


def read_record(engine: Path) -> dict[str, Any] | None:
    path = engine.with_name(engine.name + ".json")
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"the engine record {path} is unreadable", found=str(e),
                            hint="rebuild the engine with `edgesdk compress --targets tensorrt`") from e
    if not isinstance(record, dict):
        raise ArtifactError(f"the engine record {path} is not a JSON object", found=type(record).__name__)
    return record


class _Slot:
    """One execution context with its own stream and device buffers; used by one caller at a time."""

    def __init__(self, engine: Any, cudart: Any) -> None:
        self.cudart = cudart
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
        err, self.stream = cudart.cudaStreamCreate()
        check_cuda(cudart, err, "cudaStreamCreate")
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self.graphs: dict[tuple, Any] = {}

    def buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self.buffers.get(name, (0, 0))
        if nbytes > cap:
            if ptr:
                self.cudart.cudaFree(ptr)
            self.graphs.clear()  # captured graphs hold the old addresses
            err, ptr = self.cudart.cudaMalloc(max(nbytes, 256))
            check_cuda(self.cudart, err, "cudaMalloc")
            self.buffers[name] = (int(ptr), max(nbytes, 256))
        return self.buffers[name][0]

    def free(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()
        for g in self.graphs.values():
            self.cudart.cudaGraphExecDestroy(g)
        self.graphs.clear()
        self.cudart.cudaStreamDestroy(self.stream)
        self.context = None


class TensorRTSession(Session):
    """Runs a serialized TensorRT engine. Options: ``cuda_graph``, ``rebuild``, ``max_contexts``."""

    backend = "tensorrt"
    _in: list[TensorSpec] | None = None
    _out: list[TensorSpec] | None = None

    def _load_impl(self) -> None:
        trt = import_tensorrt()
        self._cudart = import_cudart()
        assert self.path is not None
        self.record = read_record(self.path)
        here = {"tensorrt": trt.__version__, **gpu_identity()}
        if self.record is not None:
            reasons = check_compatibility(self.record, here)
            if reasons and self.options.get("rebuild"):
                self._rebuild(reasons)
            elif reasons:
                raise ArtifactError(f"{self.path.name} was built for another machine and cannot run here",
                                    found="; ".join(reasons),
                                    hint="rebuild it here from its ONNX file: `edgesdk benchmark DIR --rebuild` "
                                         "(API: load(..., rebuild=True))")
        logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {self.path.name}",
                                expected=f"an engine built with TensorRT {here['tensorrt']} for {here['gpu']}",
                                found=f"engine record: {self.record or 'none beside the engine'}",
                                hint="engines are tied to one TensorRT release and GPU; rebuild with --rebuild")
        self._trt = trt
        self._in, self._out = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
            shape = tuple(d if d >= 0 else ("batch" if j == 0 else f"dim{j}")
                          for j, d in enumerate(self._engine.get_tensor_shape(name)))
            spec = TensorSpec(name, dtype, shape)
            (self._in if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self._out).append(spec)
        self._graphs = bool(self.options.get("cuda_graph"))
        self._pool: Pool[_Slot] = Pool(lambda: _Slot(self._engine, self._cudart), self.options.get("max_contexts"))
        with self._pool.take():  # one context up front: load errors surface at load time
            pass

    def _rebuild(self, reasons: list[str]) -> None:
        from edgesdk.compress.export_tensorrt import EngineSettings, build_engine

        assert self.path is not None and self.record is not None
        source = self.path.parent / str((self.record.get("source_onnx") or {}).get("path", ""))
        if not source.is_file():
            raise ArtifactError(f"cannot rebuild {self.path.name}: its ONNX source is missing",
                                expected=f"{source}", found="; ".join(reasons),
                                hint="copy the whole artifact directory (it holds the ONNX beside the engine)")
        want = (self.record.get("source_onnx") or {}).get("sha256")
        from edgesdk.atomic import sha256_file

        if want and sha256_file(source) != want:
            raise ArtifactError(f"cannot rebuild {self.path.name}: {source.name} changed since the engine was built",
                                expected=f"sha256 {want}", found=f"sha256 {sha256_file(source)}",
                                hint="copy the artifact directory again, or re-run `edgesdk compress`")
        log.warning("rebuilding %s from %s: %s", self.path.name, source.name, "; ".join(reasons))
        build_engine(source, self.path, EngineSettings.from_dict(self.record.get("settings") or {}))
        self.record = read_record(self.path)

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._pool.take() as slot:
            ctx = slot.context
            for spec in self._in:
                a = feeds[spec.name]
                ctx.set_input_shape(spec.name, a.shape)
                ptr = slot.buffer(spec.name, a.nbytes)
                ctx.set_tensor_address(spec.name, ptr)
                check_cuda(cudart, cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, h2d, slot.stream)[0],
                           "cudaMemcpyAsync")
            outs = {}
            for spec in self._out:
                shape = tuple(ctx.get_tensor_shape(spec.name))
                out = np.empty(shape, dtype=spec.dtype)
                ctx.set_tensor_address(spec.name, slot.buffer(spec.name, out.nbytes))
                outs[spec.name] = out
            self._execute(slot, tuple(feeds[s.name].shape for s in self._in))
            for name, out in outs.items():
                check_cuda(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, slot.buffers[name][0], out.nbytes, d2h,
                                                          slot.stream)[0], "cudaMemcpyAsync")
            check_cuda(cudart, cudart.cudaStreamSynchronize(slot.stream)[0], "cudaStreamSynchronize")
        return outs

    def _execute(self, slot: _Slot, signature: tuple) -> None:
        cudart = self._cudart
        if not self._graphs:
            if not slot.context.execute_async_v3(slot.stream):
                raise ArtifactError(f"TensorRT failed to run {self.path}", hint="run with --debug for its log")
            return
        graph = slot.graphs.get(signature)
        if graph is None:
            slot.context.execute_async_v3(slot.stream)  # a first run settles shape-dependent allocations
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
            check_cuda(cudart, cudart.cudaStreamBeginCapture(slot.stream, mode)[0], "cudaStreamBeginCapture")
            slot.context.execute_async_v3(slot.stream)
            err, g = cudart.cudaStreamEndCapture(slot.stream)
            check_cuda(cudart, err, "cudaStreamEndCapture")
            err, graph = cudart.cudaGraphInstantiate(g, 0)
            check_cuda(cudart, err, "cudaGraphInstantiate")
            cudart.cudaGraphDestroy(g)
            slot.graphs[signature] = graph
        check_cuda(cudart, cudart.cudaGraphLaunch(graph, slot.stream)[0], "cudaGraphLaunch")

    def _close_impl(self) -> None:
        for slot in self._pool.clear():
            slot.free()
        self._engine = self._runtime = None
        self._in = self._out = None

    @property
    def inputs(self) -> list[TensorSpec]:
        if self._in is None:
            self.load()
        return list(self._in or [])

    @property
    def outputs(self) -> list[TensorSpec]:
        if self._out is None:
            self.load()
        return list(self._out or [])
