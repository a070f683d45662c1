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
    elif fmt == "tflite":
        info.update(_tflite_info(p))
    return info


_TFLITE_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
                  10: "float64", 15: "uint32", 16: "uint16"}


def _tflite_info(path: Path) -> dict[str, Any]:
    """Signature, tensor types (with quantization), op histogram and parameter count of a TFLite flatbuffer,
    read with the LiteRT package's own schema (no interpreter)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return {}
    try:
        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
        sg = model.subgraphs[0]
    except Exception as e:  # a damaged flatbuffer raises from deep inside the generated code
        raise ArtifactError(f"{path} cannot be parsed as TFLite", found=f"{type(e).__name__}: {str(e)[:200]}",
                            hint="the file may be truncated or corrupt; re-export it") from e
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def op_name(code: Any) -> str:
        if code.customCode:
            return f"custom:{code.customCode.decode(errors='replace')}"
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))

    def tensor(i: int) -> dict[str, Any]:
        t = sg.tensors[i]
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        out = {"name": (t.name or b"").decode(errors="replace"), "dtype": _TFLITE_DTYPES.get(t.type, str(t.type)),
               "shape": ["batch" if j == 0 and d < 0 else (int(d) if d >= 0 else "?") for j, d in enumerate(sig)]}
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) == 1:
            out["quantization"] = {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}
        return out

    consts = {op_input for op in sg.operators for op_input in (op.inputs if op.inputs is not None else [])
              if op_input >= 0 and sg.tensors[op_input].buffer and model.buffers[sg.tensors[op_input].buffer].data
              is not None}
    params = 0
    for i in consts:
        n = 1
        for d in sg.tensors[i].shape:
            n *= int(d)
        params += n
    ops = Counter(op_name(model.operatorCodes[op.opcodeIndex]) for op in sg.operators)
    return {
        "schema_version": model.version,
        "producer": (model.description or b"").decode(errors="replace"),
        "node_count": len(sg.operators),
        "parameters": params,
        "inputs": [tensor(i) for i in sg.inputs],
        "outputs": [tensor(i) for i in sg.outputs],
        "ops": dict(ops.most_common()),
    }
