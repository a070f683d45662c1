"""Describe an artifact: format, inputs/outputs, opset, size, sha256, op histogram.

Example::

    info = inspect_artifact("model.onnx"); info["ops"]   # {"Conv": 20, "Relu": 17, ...}
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgesdk.errors import ArtifactError

from .formats import describe_bytes, detect_format, read_head

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 7: "int64", 6: "int32", 5: "int16",
                3: "int8", 2: "uint8", 9: "bool"}


def _sha256(path: Path) -> str:
    from edgesdk.atomic import sha256_file

    return sha256_file(path)


def _value_info(vi: Any) -> dict[str, Any]:
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": vi.name, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), "shape": dims}


def _onnx_info(path: Path) -> dict[str, Any]:
    try:
        import onnx
    except ImportError:
        return {}
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ArtifactError(f"{path} cannot be parsed as ONNX", found=f"{type(e).__name__}: {str(e)[:200]}; "
                            f"the file looks like {describe_bytes(read_head(path))}",
                            hint="the file may be truncated or corrupt; re-export it") from e
    g = model.graph
    inits = {i.name for i in g.initializer}
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}" for n in g.node)
    params = 0
    for init in g.initializer:
        n = 1
        for d in init.dims:
            n *= d
        params += n
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "node_count": len(g.node),
        "parameters": params,
        "inputs": [_value_info(i) for i in g.input if i.name not in inits],
        "outputs": [_value_info(o) for o in g.output],
        "ops": dict(ops.most_common()),
    }


def inspect_artifact(path: str | Path) -> dict[str, Any]:
    """Describe a model file; raises ArtifactError for files that are not models."""
    p = Path(path)
    fmt = detect_format(p)
    info: dict[str, Any] = {"path": str(p), "format": fmt, "size_bytes": p.stat().st_size, "sha256": _sha256(p)}
    if fmt == "onnx":
        info.update(_onnx_info(p))
    return info
