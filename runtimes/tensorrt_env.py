"""What a TensorRT engine depends on, without loading one: importing TensorRT and cuda-python, this GPU and
platform, the engine record written beside each engine and the compatibility rules (TensorRT release, GPU
generation, platform). Shared by the runtime (edgesdk.runtimes.tensorrt) and the builder (tensorrt_build).

Example::

    reasons = check_compatibility(read_record(Path("model.engine")), {"tensorrt": "10.3.0", **gpu_identity()})
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Mapping

from edgesdk.errors import ArtifactError, BackendUnavailableError

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
    """Raise a clear error when a cuda-python call returned a status other than ``cudaSuccess``.

    cuda-python returns ``(cudaError_t, value...)`` tuples; the error is compared with the enum member,
    as NVIDIA's samples do (samples/python/common_runtime.py), and its text decoded from bytes.
    """
    if err == cudart.cudaError_t.cudaSuccess:
        return
    try:
        text = cudart.cudaGetErrorString(err)[1]
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    except Exception:  # the error text is a nicety; the failure itself is what matters
        text = "?"
    raise BackendUnavailableError(f"CUDA call {what} failed", found=f"{err}: {text}",
                                  hint="check the NVIDIA driver and that a GPU is visible (nvidia-smi)")

def gpu_identity() -> dict[str, Any]:
    """Name and compute capability of the current CUDA device (what an engine is tied to)."""
    cudart = import_cudart()
    err, device = cudart.cudaGetDevice()
    check_cuda(cudart, err, "cudaGetDevice")
    err, prop = cudart.cudaGetDeviceProperties(device)
    check_cuda(cudart, err, "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name.split("\x00")[0], "compute_capability": f"{prop.major}.{prop.minor}"}

def host_platform() -> str:
    """OS and CPU architecture, e.g. ``Linux-x86_64``: serialized engines are not portable across platforms."""
    return f"{platform.system()}-{platform.machine()}"

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

    ``record`` is the engine record (``tensorrt``, ``gpu``, ``compute_capability``, ``platform``,
    ``settings``); ``here`` has the same keys for this machine. TensorRT's rules (support matrix):
    engines are not portable across platforms (OS / CPU architecture); a plain engine needs the
    exact TensorRT release (major.minor.patch) it was built with; a version-compatible one runs on
    the same or a later release of the same major version. A plain engine needs the same compute
    capability; ``ampere_plus`` hardware compatibility needs compute capability 8.0 or newer.

    Example::

        check_compatibility({"tensorrt": "10.3.0", "compute_capability": "8.7"},
                            {"tensorrt": "10.7.0", "compute_capability": "8.7"})
        # ['built with TensorRT 10.3.0, this machine has 10.7.0 (engines need the same release)']
    """
    settings = record.get("settings") or {}
    reasons = []
    built_on, run_on = record.get("platform"), here.get("platform")
    if built_on and run_on and built_on != run_on:
        reasons.append(f"built on {built_on}, this machine is {run_on} (engines are not portable across platforms)")
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
