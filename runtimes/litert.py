"""LiteRT (TFLite) backend on ``ai-edge-litert``: XNNPACK, threads, dynamic batch, int8 I/O scaling, thread safety.

An Interpreter must never be shared between threads, so each concurrent caller takes one from
a pool. Full-integer models take and return float through this wrapper: inputs are quantized
with each tensor's scale and zero point (values outside the representable range are clipped,
with one warning), outputs dequantized. ``raw_io=True`` exposes the integer tensors instead.

Example::

    with load("model.int8.tflite", threads=2) as sess:
        probs = sess.run({"x": x_float32})["output"]
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError, InferenceError

from .base import Option, Session, TensorSpec
from .formats import describe_bytes, detect_format, read_head
from .pool import Pool

log = logging.getLogger(__name__)


class _IO:
    """One input/output: index, name, numpy dtype, (scale, zero point) when quantized."""

    __slots__ = ("index", "name", "dtype", "scale", "zero", "shape_sig", "qmin", "qmax")

    def __init__(self, d: dict[str, Any]) -> None:
        self.index, self.name, self.dtype = d["index"], d["name"], np.dtype(d["dtype"])
        scale, zero = d.get("quantization", (0.0, 0))
        self.scale, self.zero = (float(scale), int(zero)) if scale else (None, None)
        self.shape_sig = [int(v) for v in d.get("shape_signature", d["shape"])]
        if self.scale is not None:
            info = np.iinfo(self.dtype)
            self.qmin, self.qmax = info.min, info.max


def quantize(x: np.ndarray, io: _IO) -> tuple[np.ndarray, bool]:
    """Float -> integer with the tensor's scale/zero point; returns (array, whether anything was clipped).

    Rounds half away from zero, as TFLite's own quantize kernel does (numpy's round goes to even); NaN
    maps to the zero point (an integer tensor has no NaN; check_finite=True refuses such feeds).
    """
    with np.errstate(invalid="ignore"):
        v = x / io.scale
        q = np.trunc(v + np.copysign(0.5, v)) + io.zero
        q = np.where(np.isnan(q), io.zero, q)
    clipped = bool((q < io.qmin).any() or (q > io.qmax).any())
    return np.clip(q, io.qmin, io.qmax).astype(io.dtype), clipped


def dequantize(q: np.ndarray, io: _IO) -> np.ndarray:
    return ((q.astype(np.float32) - io.zero) * io.scale).astype(np.float32)


def delegation(it: Any) -> dict[str, Any]:
    """How much of a loaded interpreter's graph XNNPACK runs: delegated and total nodes, partitions, and the
    ops left to LiteRT's own kernels (each one between partitions costs a hand-over and often a slow
    reference kernel, e.g. PADV2 with a -inf pad value before a max pool).

    The interpreter lists every node of the model plus one DELEGATE node per partition; a node runs on its
    own when it feeds a partition or a graph output without being inside one, or feeds such a node.

    Example::

        delegation(interpreter)  # {"delegate": "XNNPACK", "delegated": 36, "total": 37, "partitions": 2,
                                 #  "not_delegated": {"PADV2": 1}}
    """
    ops = it._get_ops_details()
    parts = [o for o in ops if o["op_name"] == "DELEGATE"]
    nodes = [o for o in ops if o["op_name"] != "DELEGATE"]
    by_partition = {int(t) for d in parts for t in d["outputs"]}
    wanted = {int(t) for d in parts for t in d["inputs"]} | {int(d["index"]) for d in it.get_output_details()}
    left = [n for n in nodes if not {int(t) for t in n["outputs"]} & by_partition]
    own: list[dict[str, Any]] = []
    grew = True
    while grew:  # walk back from what the partitions and the graph outputs need
        grew = False
        for n in list(left):
            if {int(t) for t in n["outputs"]} & wanted:
                own.append(n)
                left.remove(n)
                wanted |= {int(t) for t in n["inputs"]}
                grew = True
    names: dict[str, int] = {}
    for n in own:
        names[n["op_name"]] = names.get(n["op_name"], 0) + 1
    return {"delegate": "XNNPACK" if parts else None, "delegated": len(nodes) - len(own), "total": len(nodes),
            "partitions": len(parts), "not_delegated": dict(sorted(names.items()))}


class LiteRTSession(Session):
    """A pool of ``ai_edge_litert`` Interpreters behind the Session API."""

    backend = "litert"
    option_specs = {"xnnpack": Option(bool, True, "use the XNNPACK delegate"),
                    "raw_io": Option(bool, False, "feed and return a full-integer model's int8 tensors as they are")}
    _in: list[_IO] | None = None
    _out: list[_IO] | None = None

    def _new_interpreter(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kwargs: dict[str, Any] = {"model_path": str(self.path), "num_threads": int(self.threads or 1)}
        if not self.options.get("xnnpack", True):
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = Interpreter(**kwargs)
        it.allocate_tensors()
        return it

    def _load_impl(self) -> None:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as e:
            raise BackendUnavailableError("the LiteRT runtime is not installed",
                                          hint="pip install 'edgesdk[tflite]' (ai-edge-litert; not tflite-runtime, "
                                               "whose wheel breaks with NumPy 2)") from e
        assert self.path is not None
        fmt = detect_format(self.path)
        if fmt != "tflite":
            raise ArtifactError(f"{self.path} is a {fmt} file, not TFLite; LiteRT cannot run it",
                                found=describe_bytes(read_head(self.path)), hint="use backend='auto'")
        if self.device not in ("auto", "cpu"):
            raise BackendUnavailableError(f"this LiteRT backend runs on the CPU (XNNPACK); device={self.device!r}",
                                          hint="use device='cpu' (or 'auto')")
        try:
            first = self._new_interpreter()
        except (ValueError, RuntimeError) as e:
            text = " ".join(str(e).split())
            op = re.search(r"Didn't find op for (?:builtin opcode|custom opcode) '([^']+)'", text)
            if op:  # a valid file with an op this runtime has no kernel for
                raise ArtifactError(f"the LiteRT runtime here has no kernel for op {op.group(1)} in "
                                    f"{self.path.name}", found=text[:300],
                                    hint="rewrite that op in the model (sort/topk, for instance, often lower to "
                                         "it), or ship the ONNX artifact for this model") from e
            raise ArtifactError(f"LiteRT cannot load {self.path}", expected="a valid TFLite flatbuffer",
                                found=text[:300] or type(e).__name__,
                                hint="the file may be truncated or corrupt; re-export it") from e
        self.raw_io = bool(self.options.get("raw_io", False))
        self._in = [_IO(d) for d in first.get_input_details()]
        self._out = [_IO(d) for d in first.get_output_details()]
        # a model exported with a fixed batch of 1 (some graphs cannot keep it symbolic) still serves any
        # batch: the wrapper runs it one sample at a time
        self._per_sample = all(io.shape_sig[:1] == [1] for io in [*self._in, *self._out])
        try:  # a diagnostic on a private interpreter API: never a reason to refuse the model
            self.delegation: dict[str, Any] | None = delegation(first)
        except Exception as e:  # noqa: BLE001
            log.debug("XNNPACK delegation not readable: %s", e)
            self.delegation = None
        self._pool: Pool[Any] = Pool(self._new_interpreter)
        self._pool.put(first)
        self._warned = threading.Event()

    def _spec(self, io: _IO) -> TensorSpec:
        dtype = io.dtype.name if (io.scale is None or self.raw_io) else "float32"
        # litert-torch writes outputs with the traced batch (e.g. [2, 10]) even when the input batch is -1;
        # an output of such a model follows the input batch
        batch_in = self._per_sample or any(i.shape_sig[:1] == [-1] for i in self._in)
        shape = tuple("batch" if (i == 0 and (d < 0 or batch_in)) else (d if d >= 0 else f"dim{i}")
                      for i, d in enumerate(io.shape_sig))
        return TensorSpec(io.name, dtype, shape)

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values()))) if feeds else 1
        if self._per_sample and n != 1:
            parts = [self._invoke({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._invoke(feeds)

    def _invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ins, outs = self._in, self._out
        if ins is None or outs is None:  # closed by another thread while this call was on its way
            raise InferenceError(f"{self._who()}: the session was closed", hint="load it again before running")
        with self._pool.take() as it:
            resized = False
            current = {d["index"]: tuple(d["shape"]) for d in it.get_input_details()}
            for io in ins:
                shape = feeds[io.name].shape
                if current[io.index] != shape:  # dynamic batch: resize this interpreter's input
                    it.resize_tensor_input(io.index, list(shape))
                    resized = True
            if resized:
                it.allocate_tensors()
            for io in ins:
                x = feeds[io.name]
                if io.scale is not None and not self.raw_io:
                    x, clipped = quantize(x, io)
                    if clipped and not self._warned.is_set():
                        self._warned.set()
                        log.warning("%s: input %r has values outside the int8 range this model was calibrated for; "
                                    "they were clipped (warned once)", self.path.name if self.path else "model",
                                    io.name)
                it.set_tensor(io.index, x)
            it.invoke()
            out = {}
            for io in outs:
                y = it.get_tensor(io.index)
                out[io.name] = dequantize(y, io) if io.scale is not None and not self.raw_io else y.copy()
            return out

    def _close_impl(self) -> None:
        self._pool.clear()
        self._in = self._out = None

    @property
    def inputs(self) -> list[TensorSpec]:
        if self._in is None:
            self.load()
        return [self._spec(io) for io in self._in or []]

    @property
    def outputs(self) -> list[TensorSpec]:
        if self._out is None:
            self.load()
        return [self._spec(io) for io in self._out or []]
