"""TensorRT engine backend (TensorRT 10 Python API + cuda-python), imported only when used.

An engine is a compiled program for one TensorRT version and one GPU generation. Before it
deserializes anything, the session reads the engine record written beside it
(``model.engine.json``) and compares it with this machine (:func:`check_compatibility`); a
mismatch is a clear ArtifactError, and ``rebuild=True`` rebuilds the engine from the ONNX file
the record names (no torch needed). Engines are executable code: load only engines you built.

Concurrency: one ICudaEngine, and a pool of slots, each an (execution context, CUDA stream,
device buffers) triple; a caller takes a slot for one run, so threads never share a context.
(Contexts of one engine share its optimization profile: TensorRT 10 always enables profile
sharing, ``PreviewFeature.PROFILE_SHARING_0806``.)
``cuda_graph=True`` captures ``execute_async_v3`` once per input-shape signature and replays it;
an engine TensorRT cannot capture runs without a graph.

Example::

    with load("out/model.fp16.engine") as sess:          # or load("out/", artifact="model.fp16.engine")
        y = sess.run({"x": x})
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError, FeedError, InferenceError

from .base import Option, Session, TensorSpec
from .pool import Pool
from .tensorrt_env import (check_compatibility, check_cuda, gpu_identity, host_platform, import_cudart,
                           import_tensorrt, read_record)

log = logging.getLogger(__name__)


def _numpy_dtype(trt: Any, dtype: Any, name: str, engine: str) -> str:
    """numpy dtype name of a TensorRT DataType; a clear error for those numpy lacks (bf16, fp8, int4...)."""
    try:
        np_type = trt.nptype(dtype)
    except TypeError:  # TensorRT 10: "Could not resolve TensorRT datatype to an equivalent numpy datatype"
        np_type = None
    if np_type is None:
        raise ArtifactError(f"{engine}: tensor {name!r} has TensorRT type {dtype}, which numpy has no type for",
                            expected="float32, float16, int8, uint8, int32, int64 or bool inputs and outputs",
                            hint="export the model with float32/float16 inputs and outputs (cast inside the model)")
    return np.dtype(np_type).name


def _graph_instantiate(cudart: Any, graph: Any) -> tuple[Any, Any]:
    """cudaGraphInstantiate across cuda-python releases: ``(err, graph_exec)``.

    ``cudaGraphInstantiateWithFlags(graph, flags)`` has the same signature in CUDA 11.4+ and 12;
    ``cudaGraphInstantiate`` changed (11.x: ``(graph, log_buffer, size)`` returning a 3-tuple;
    12.x: ``(graph, flags)``), so it is only the fallback.
    """
    if hasattr(cudart, "cudaGraphInstantiateWithFlags"):
        res = cudart.cudaGraphInstantiateWithFlags(graph, 0)
    else:
        res = cudart.cudaGraphInstantiate(graph, 0)
    return res[0], res[1]


class _Slot:
    """One execution context with its own stream and device buffers; used by one caller at a time."""

    def __init__(self, engine: Any, cudart: Any) -> None:
        self.cudart = cudart
        self.stream: Any = None
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
        err, self.stream = cudart.cudaStreamCreate()
        check_cuda(cudart, err, "cudaStreamCreate")
        self.handle = int(self.stream)  # TensorRT takes the raw cudaStream_t as an int (stream_handle)
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self.graphs: dict[tuple, Any] = {}  # input shapes -> cudaGraphExec_t, or None: not capturable

    def buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self.buffers.get(name, (0, 0))
        if nbytes > cap:
            if ptr:
                del self.buffers[name]  # gone before a failing cudaMalloc below could leave it to a second free
                self.cudart.cudaFree(ptr)
            self.drop_graphs()  # captured graphs hold the old addresses
            err, ptr = self.cudart.cudaMalloc(max(nbytes, 256))
            check_cuda(self.cudart, err, "cudaMalloc")
            self.buffers[name] = (int(ptr), max(nbytes, 256))
        return self.buffers[name][0]

    def drop_graphs(self) -> None:
        for g in self.graphs.values():
            if g is not None:
                self.cudart.cudaGraphExecDestroy(g)
        self.graphs.clear()

    def free(self) -> None:
        if self.stream is not None:
            self.cudart.cudaStreamSynchronize(self.stream)  # nothing of ours may still be in flight
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()
        self.drop_graphs()
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None


class TensorRTSession(Session):
    """Runs a serialized TensorRT engine. Options: ``cuda_graph``, ``rebuild``, ``max_contexts``."""

    backend = "tensorrt"
    option_specs = {"cuda_graph": Option(bool, False, "capture and replay a CUDA graph per input shape"),
                    "rebuild": Option(bool, False, "rebuild an engine made for another GPU/TensorRT from its ONNX"),
                    "max_contexts": Option(int, None, "most execution contexts kept for concurrent runs")}

    def _load_impl(self) -> None:
        trt = import_tensorrt()
        self._cudart = import_cudart()
        assert self.path is not None
        self.record = read_record(self.path)
        here = {"tensorrt": trt.__version__, **gpu_identity(), "platform": host_platform()}
        if self.record is not None:
            reasons = check_compatibility(self.record, here)
            if reasons and self.options.get("rebuild"):
                self._rebuild(reasons)
            elif reasons:
                raise ArtifactError(f"{self.path.name} was built for another machine and cannot run here",
                                    found="; ".join(reasons),
                                    hint="rebuild it here from its ONNX file: `edgesdk benchmark DIR --rebuild` "
                                         "(API: load(..., rebuild=True))")
        settings = (self.record or {}).get("settings") or {}
        self._logger = trt.Logger(trt.Logger.ERROR)  # must outlive the runtime and the engine
        self._runtime = trt.Runtime(self._logger)
        if settings.get("version_compatible") and hasattr(self._runtime, "engine_host_code_allowed"):
            # a version-compatible plan embeds TensorRT's lean runtime (host code): TensorRT refuses to load
            # it unless told the plan is trusted (these are engines this SDK built, see the module docstring)
            self._runtime.engine_host_code_allowed = True
        if settings.get("dla_core") is not None:
            self._runtime.DLA_core = int(settings["dla_core"])  # run on the DLA core it was built for
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {self.path.name}",
                                expected=f"an engine built with TensorRT {here['tensorrt']} for {here['gpu']}",
                                found=f"engine record: {self.record or 'none beside the engine'}",
                                hint="engines are tied to one TensorRT release and GPU; rebuild with --rebuild")
        self._trt = trt
        self._in, self._out = [], []
        self._host: set[str] = set()  # shape tensors TensorRT reads/writes in host memory
        host = getattr(getattr(trt, "TensorLocation", None), "HOST", None)
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = _numpy_dtype(trt, self._engine.get_tensor_dtype(name), name, self.path.name)
            shape = tuple(d if d >= 0 else ("batch" if j == 0 else f"dim{j}")
                          for j, d in enumerate(self._engine.get_tensor_shape(name)))
            spec = TensorSpec(name, dtype, shape)
            (self._in if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self._out).append(spec)
            if host is not None and hasattr(self._engine, "get_tensor_location") \
                    and self._engine.get_tensor_location(name) == host:
                self._host.add(name)
        self._graphs = bool(self.options.get("cuda_graph"))
        if self._graphs and self._host:
            log.warning("%s has host shape tensors (%s): running without CUDA graphs", self.path.name,
                        ", ".join(sorted(self._host)))
            self._graphs = False
        self._pool: Pool[_Slot] = Pool(lambda: _Slot(self._engine, self._cudart), self.options.get("max_contexts"))
        with self._pool.take():  # one context up front: load errors surface at load time
            pass

    def _rebuild(self, reasons: list[str]) -> None:
        from edgesdk.runtimes.tensorrt_build import EngineSettings, build_engine

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
        with self._pool.take() as slot:
            try:
                return self._run_on(slot, feeds)
            except BaseException:
                # the pool drops a slot whose run raised: give its stream, buffers and graphs back now
                try:
                    slot.free()
                except Exception as e:  # the original error is the one to report
                    log.debug("freeing a failed TensorRT slot: %s", e)
                raise

    def _run_on(self, slot: _Slot, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ctx = slot.context
        for spec in self._in:
            a = feeds[spec.name]
            if not ctx.set_input_shape(spec.name, a.shape):
                raise self._shape_error(ctx, spec, a.shape)
            if spec.name in self._host:  # a shape tensor: TensorRT reads its values from host memory
                ctx.set_tensor_address(spec.name, a.ctypes.data)
                continue
            ptr = slot.buffer(spec.name, a.nbytes)
            ctx.set_tensor_address(spec.name, ptr)
            check_cuda(cudart, cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, h2d, slot.stream)[0],
                       "cudaMemcpyAsync")
        outs = {}
        for spec in self._out:
            shape = tuple(ctx.get_tensor_shape(spec.name))  # valid once every input shape is set
            if any(d < 0 for d in shape):
                raise InferenceError(f"TensorRT output {spec.name!r} of {self.path.name} has a data-dependent "
                                     f"shape", found=f"shape {shape} after setting the input shapes",
                                     hint="outputs sized by the data (NonZero, NMS...) need an IOutputAllocator, "
                                          "which this backend does not implement; run this model with onnxruntime")
            out = np.empty(shape, dtype=spec.dtype)
            outs[spec.name] = out
            addr = out.ctypes.data if spec.name in self._host else slot.buffer(spec.name, out.nbytes)
            ctx.set_tensor_address(spec.name, addr)
        self._execute(slot, tuple(feeds[s.name].shape for s in self._in))
        for name, out in outs.items():
            if name in self._host:
                continue
            check_cuda(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, slot.buffers[name][0], out.nbytes, d2h,
                                                      slot.stream)[0], "cudaMemcpyAsync")
        check_cuda(cudart, cudart.cudaStreamSynchronize(slot.stream)[0], "cudaStreamSynchronize")
        return outs

    def _shape_error(self, ctx: Any, spec: TensorSpec, shape: tuple[int, ...]) -> FeedError:
        """set_input_shape refused ``shape``: name the optimization profile's range."""
        allowed = ""
        try:
            profile = getattr(ctx, "active_optimization_profile", 0)
            lo, _, hi = self._engine.get_tensor_profile_shape(spec.name, profile)
            allowed = f" (from {tuple(lo)} to {tuple(hi)})"
        except Exception:  # a static input has no profile; the model's shape says it all
            pass
        return FeedError(f"input {spec.name!r} shape {tuple(shape)} is outside what {self.path.name} was built for",
                         expected=f"{spec.describe()}{allowed}",
                         found=str(tuple(shape)),
                         hint="rebuild the engine with a wider range (--trt-batch MIN:OPT:MAX or trt_shapes)")

    def _execute(self, slot: _Slot, signature: tuple) -> None:
        cudart = self._cudart
        graph = slot.graphs.get(signature) if self._graphs else None
        if graph is None:
            if not slot.context.execute_async_v3(slot.handle):
                raise InferenceError(f"TensorRT failed to run {self.path.name}", hint="run with --debug for its log")
            if self._graphs and signature not in slot.graphs:
                # the run above settled shape-dependent state and already produced this call's outputs;
                # capture the next runs of these shapes
                slot.graphs[signature] = self._capture(slot)
            return
        check_cuda(cudart, cudart.cudaGraphLaunch(graph, slot.stream)[0], "cudaGraphLaunch")

    def _capture(self, slot: _Slot) -> Any:
        """Capture one ``execute_async_v3`` into an executable CUDA graph; None when TensorRT cannot be captured."""
        cudart = self._cudart
        # thread-local: another slot's thread may cudaMalloc/cudaFree while this stream captures, which the
        # global mode forbids (trtexec captures the same way, samples/common/sampleDevice.h)
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check_cuda(cudart, cudart.cudaStreamBeginCapture(slot.stream, mode)[0], "cudaStreamBeginCapture")
        ok = slot.context.execute_async_v3(slot.handle)
        err, g = cudart.cudaStreamEndCapture(slot.stream)  # always end: the stream stays capturing otherwise
        if not ok or err != cudart.cudaError_t.cudaSuccess:
            if g is not None and err == cudart.cudaError_t.cudaSuccess:
                cudart.cudaGraphDestroy(g)
            log.warning("TensorRT could not capture %s into a CUDA graph (%s); running it without one",
                        self.path.name, err if ok else "execute_async_v3 failed during capture")
            return None
        try:
            err, graph = _graph_instantiate(cudart, g)
            check_cuda(cudart, err, "cudaGraphInstantiate")
        finally:
            cudart.cudaGraphDestroy(g)
        return graph

    def _close_impl(self) -> None:
        for slot in self._pool.clear():
            slot.free()
        self._engine = self._runtime = None


def doctor_detail() -> str:
    """For `edgesdk doctor`: the GPU TensorRT would build for."""
    gpu = gpu_identity()
    return f"GPU: {gpu['gpu']} (compute capability {gpu['compute_capability']})"
