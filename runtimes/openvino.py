"""OpenVINO backend (Intel CPUs): runs ONNX artifacts (FP32 and QDQ INT8) and OpenVINO IR (.xml).

OpenVINO runs FP32 models in bf16 on CPUs that have it unless told otherwise, which breaks
FP32 parity; this backend asks for f32 and exposes bf16 as its own ``precision="bf16"``.

Example::

    with load("model.onnx", backend="openvino", threads=2) as sess:   # f32 by default
        y = sess.run({"x": x})
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError, InferenceError, InputError

from .base import Option, Session, TensorSpec
from .formats import describe_bytes, detect_format, read_head
from .pool import Pool

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def _spec(port: Any, i: int, name: str | None = None) -> TensorSpec:
    shape: list[int | str] = []
    for k, d in enumerate(port.get_partial_shape()):
        shape.append(d.get_length() if d.is_static else ("batch" if k == 0 else f"dim{k}"))
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except (AttributeError, TypeError):
        dtype = str(port.get_element_type())
    if name is None:
        name = port.get_any_name() if port.get_names() else f"output_{i}"
    return TensorSpec(name, dtype, tuple(shape))


class OpenVINOSession(Session):
    """An OpenVINO compiled model; thread-safe through a pool of infer requests (one per concurrent caller)."""

    backend = "openvino"
    option_specs = {"precision": Option(str, "fp32", "inference precision: fp32, bf16 or fp16")}

    def _load_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError("OpenVINO is not installed", hint="pip install 'edgesdk[openvino]'") from e
        assert self.path is not None
        fmt = detect_format(self.path)
        if fmt not in ("onnx", "openvino"):
            raise ArtifactError(f"{self.path} is a {fmt} file; OpenVINO runs ONNX or OpenVINO IR (.xml)",
                                found=describe_bytes(read_head(self.path)), hint="use backend='auto'")
        precision = str(self.options.get("precision", "fp32")).lower()
        if precision not in PRECISIONS:
            raise InputError(f"unknown OpenVINO precision {precision!r}", expected="fp32 | bf16 | fp16")
        if self.device not in ("auto", "cpu"):
            raise BackendUnavailableError(f"this OpenVINO backend runs on the CPU; device={self.device!r} asked for",
                                          hint="use device='cpu' (or 'auto')")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"OpenVINO cannot load {self.path}", expected="a valid ONNX model or OpenVINO IR",
                                found=first, hint="check the file with `edgesdk inspect`; re-export it") from e
        try:  # what the plugin actually runs: an f16 hint becomes bf16 on CPUs without fp16 arithmetic
            hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        except Exception:  # noqa: BLE001 - older plugins do not report it
            self.precision = PRECISIONS[precision]
        if precision == "fp16" and self.precision == "bf16":
            log.warning("OpenVINO runs %s in bf16 on this CPU (no fp16 arithmetic); asked for fp16", self.path.name)
        elif precision in ("bf16", "fp16", "f16") and self.precision == "f32":
            log.warning("OpenVINO runs %s in f32 on this CPU: it has no %s arithmetic (bf16 needs AVX512-BF16 or "
                        "AMX); asked for %s", self.path.name, precision, precision)
        # the graph's own input and output names, read before compilation: a compiled port can carry several
        # names (a Cast fused into an FP16 model's input, an Identity feeding an output) and get_any_name()
        # may then return an internal one such as graph_input_cast_0
        declared_in = [p.get_any_name() if p.get_names() else None for p in model.inputs]
        self._in = [_spec(p, i, declared_in[i] if i < len(declared_in) else None)
                    for i, p in enumerate(self._compiled.inputs)]
        declared = [o.get_any_name() if o.get_names() else None for o in model.outputs]
        self._out = [_spec(p, i, declared[i] if i < len(declared) else None)
                     for i, p in enumerate(self._compiled.outputs)]
        self._pool: Pool[Any] = Pool(self._compiled.create_infer_request)

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        empty = [k for k, v in feeds.items() if v.size == 0]
        if empty:  # OpenVINO's CPU plugin fails on them and stays broken for later runs of the compiled model
            raise InferenceError(f"{self._who()}: OpenVINO cannot run empty inputs",
                                 expected="at least one element in every input",
                                 found=", ".join(f"{k}: shape {tuple(feeds[k].shape)}" for k in empty),
                                 hint="skip the call when there is nothing to run")
        ins, outs = self._in, self._out
        if ins is None or outs is None:  # closed by another thread while this call was on its way
            raise InferenceError(f"{self._who()}: the session was closed", hint="load it again before running")
        with self._pool.take() as req:
            res = req.infer({s.name: feeds[s.name] for s in ins})
            return {s.name: np.array(o, copy=True) for s, o in zip(outs, res.values())}

    def _close_impl(self) -> None:
        self._pool.clear()
        self._compiled = None


def doctor_detail() -> str:
    """For `edgesdk doctor`: the devices OpenVINO sees."""
    import openvino as ov

    return "devices: " + ", ".join(ov.Core().available_devices)
