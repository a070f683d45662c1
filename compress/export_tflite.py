"""PyTorch -> TFLite (LiteRT) with litert-torch: float32, float16, dynamic-range int8, full-integer int8.

* float32: ``litert_torch.convert`` with a dynamic batch;
* float16 / dynamic-range int8: ai-edge-quantizer on the float32 flatbuffer (fp16 weights;
  int8 per-channel weights with activations quantized on the fly);
* full-integer int8: PT2E static quantization (per-channel symmetric weights) calibrated on
  the same data as the ONNX path; its inputs and outputs are int8 with a scale and zero
  point, which the LiteRT backend applies so callers keep feeding float.

Inputs and outputs are renamed to the ONNX artifact's names so either file runs behind the same
feeds. PT2E *dynamic* quantization is not offered: in a trial it produced wrong outputs
(cosine ~0.3 against PyTorch).

Example::

    info = export_tflite(model, {"x": x}, "model.tflite", precision="fp32", output_names=["output"])
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgesdk.errors import BackendUnavailableError, ExportError, InputError

from .export_onnx import _first_line, _quiet

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")
INSTALL = "pip install 'edgesdk[tflite-export]'  (litert-torch; no TensorFlow needed)"


@dataclass
class TFLiteInfo:
    path: Path
    precision: str
    dynamic_batch: bool
    quantization: dict[str, Any] = field(default_factory=dict)
    export_time_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    input_layout: dict[str, str] = field(default_factory=dict)  # input -> "channels_last" where transposed


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("litert_torch") is not None


def _failing_op(text: str) -> str | None:
    for pat in (r"(aten\.[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?)", r"'([a-z_]+\.[A-Za-z_0-9.]+)' op",
                r"Lowering not found: (\S+)", r"(tfl\.[A-Za-z_0-9]+)"):
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


def _rename_io(path: Path, inputs: list[str], outputs: list[str]) -> None:
    """Give the flatbuffer's subgraph tensors and signature the ONNX artifact's input/output names."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    sg = model.subgraphs[0]
    if len(sg.inputs) != len(inputs) or len(sg.outputs) != len(outputs):
        raise ExportError("the TFLite graph's inputs/outputs do not match the model's",
                          expected=f"{len(inputs)} inputs, {len(outputs)} outputs",
                          found=f"{len(sg.inputs)} inputs, {len(sg.outputs)} outputs")
    for idx, name in [*zip(sg.inputs, inputs), *zip(sg.outputs, outputs)]:
        sg.tensors[idx].name = name.encode()
    # litert-torch leaves outputs with the traced batch (e.g. [2, 10]) when the inputs' batch is dynamic (-1);
    # declare it dynamic too, so apps that size buffers from the file see the batch, not the tracing size
    batch_in = {int(sg.tensors[i].shapeSignature[0]) for i in sg.inputs
                if sg.tensors[i].shapeSignature is not None and len(sg.tensors[i].shapeSignature)}
    if batch_in == {-1}:
        for i in sg.outputs:
            sig = sg.tensors[i].shapeSignature
            if sig is None or not len(sig):
                sig = np.array(sg.tensors[i].shape, dtype=np.int32)
            if len(sig) and sig[0] > 0:
                sig = np.array(sig, dtype=np.int32)
                sig[0] = -1
                sg.tensors[i].shapeSignature = sig
    # signature entries are sorted by their generated names (args_0, args_1, args_10, ...), not by position:
    # map each through the tensor it points at
    by_tensor = {idx: name for idx, name in [*zip(sg.inputs, inputs), *zip(sg.outputs, outputs)]}
    for sig in model.signatureDefs or []:
        for t in [*(sig.inputs or []), *(sig.outputs or [])]:
            if t.tensorIndex in by_tensor:
                t.name = by_tensor[t.tensorIndex].encode()
    builder = flatbuffers.Builder(max(1024, path.stat().st_size))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def export_tflite(model: Any, example_inputs: Mapping[str, Any], path: str | Path, *, precision: str = "fp32",
                  calib: Mapping[str, np.ndarray] | None = None, output_names: list[str] | None = None,
                  dynamic_batch: bool = True, channels_last: bool = False) -> TFLiteInfo:
    """Convert ``model`` to ``path``; raise ExportError naming the op that failed to lower.

    ``channels_last``: inputs of rank 3 or more are taken channels-last (N,H,W,C for images), the layout
    mobile camera pipelines and XNNPACK use, so no transpose is left for the app to write; outputs keep
    the model's layout. ``info.input_layout`` names the inputs that changed.
    """

    if precision not in PRECISIONS:
        raise InputError(f"unknown TFLite precision {precision!r}", expected=" | ".join(PRECISIONS), found=precision)
    if not available():
        raise BackendUnavailableError("litert-torch is not installed", hint=INSTALL)
    if precision == "int8" and calib is None:
        raise InputError("full-integer TFLite needs calibration data", expected="--calib FILE.npz | DIR | random")
    path = Path(path)
    # the converter's native logs (absl/glog) and torchao's import warnings are not for our users' consoles
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    with _quiet():
        import litert_torch

    litert_torch.config.show_progress = False  # its rich progress lines would bypass our console
    layout: dict[str, str] = {}
    if channels_last:
        model, example_inputs, calib, layout = _to_channels_last(model, example_inputs, calib)
    try:
        info = _export(model, example_inputs, path, precision, calib, output_names, dynamic_batch)
        info.input_layout = layout
        return info
    except ExportError as e:
        if not dynamic_batch:
            raise
        # litert-torch cannot lower some reshapes with a symbolic batch (e.g. torch.flatten(x, 1));
        # a fixed batch of 1 still serves the usual on-device case
        info = _export(model, {k: v[:1] for k, v in example_inputs.items()}, path, precision, calib, output_names,
                       False)
        info.input_layout = layout
        info.warnings.append(f"litert-torch could not keep the batch dynamic ({e.found or e.what}); exported with "
                             "a fixed batch of 1 (the runtime runs larger batches one sample at a time)")
        log.warning(info.warnings[-1])
        return info


def _to_channels_last(model: Any, example_inputs: Mapping[str, Any], calib: Mapping[str, np.ndarray] | None
                      ) -> tuple[Any, dict[str, Any], dict[str, np.ndarray] | None, dict[str, str]]:
    """Wrap ``model`` so its rank>=3 inputs arrive channels-last (litert-torch's to_channel_last_io), and
    move the example and calibration data to that layout."""
    import litert_torch

    names = list(example_inputs)
    moved = [i for i, n in enumerate(names) if example_inputs[n].dim() >= 3]
    if not moved:
        return model, dict(example_inputs), calib, {}
    wrapped = litert_torch.to_channel_last_io(model.eval(), args=moved).eval()
    keys = {names[i] for i in moved}
    examples = {n: (v.movedim(1, -1).contiguous() if n in keys else v) for n, v in example_inputs.items()}
    if calib is not None:
        calib = {n: (np.ascontiguousarray(np.moveaxis(v, 1, -1)) if n in keys else v) for n, v in calib.items()}
    return wrapped, examples, calib, {n: "channels_last" for n in names if n in keys}


def _batch_shapes(model: Any, n: int) -> tuple:
    """torch.export dynamic_shapes with a symbolic batch for each of ``n`` inputs, shaped like forward()'s
    parameters (a ``forward(*args)`` wrapper, such as the channels-last one, takes them as one tuple)."""
    import inspect

    import torch

    batch = torch.export.Dim("batch")
    per_input = tuple({0: batch} for _ in range(n))
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (per_input,)
    return per_input


def _export(model: Any, example_inputs: Mapping[str, Any], path: Path, precision: str,
            calib: Mapping[str, np.ndarray] | None, output_names: list[str] | None, dynamic_batch: bool) -> TFLiteInfo:
    import litert_torch
    import torch

    names = list(example_inputs)
    args = tuple(example_inputs[n] for n in names)
    if dynamic_batch and all(a.shape[0] == 1 for a in args):
        args = tuple(torch.cat([a, a]) for a in args)  # torch.export specialises size-1 dims
    shapes = _batch_shapes(model, len(args)) if dynamic_batch else None
    t0 = time.perf_counter()
    info = TFLiteInfo(path=path, precision=precision, dynamic_batch=dynamic_batch)
    with tempfile.TemporaryDirectory(prefix=".tflite-", dir=path.parent) as tmp:
        float_path = Path(tmp) / "float.tflite"
        out_path = Path(tmp) / path.name
        try:
            with _quiet():
                if precision == "int8":
                    edge = _pt2e_static(model, args, shapes, calib, names)
                    info.quantization = {"method": "pt2e static", "weights": "int8 per-channel symmetric",
                                         "activations": "int8", "io": "int8 (scale/zero point applied by the runtime)",
                                         "calib_samples": len(next(iter(calib.values())))}
                else:
                    edge = litert_torch.convert(model.eval(), args, dynamic_shapes=shapes)
                edge.export(str(float_path if precision in ("fp16", "int8-dynamic") else out_path))
                if precision in ("fp16", "int8-dynamic"):
                    info.quantization = _ai_edge_quantize(float_path, out_path, precision)
        except (ExportError, InputError):
            raise
        except Exception as e:  # litert-torch raises many types (lowering, MLIR, export)
            op = _failing_op(f"{type(e).__name__}: {e}")
            raise ExportError(f"TFLite conversion failed{f' on {op}' if op else ''} (litert-torch)",
                              found=_first_line(e),
                              hint="the other targets are unaffected; rewrite the op with supported ones, or "
                                   "ship the ONNX artifact for this model") from e
        outs = output_names or ["output"]
        _rename_io(out_path, names, outs)
        os.replace(out_path, path)
    info.export_time_s = time.perf_counter() - t0
    return info


def _calib_batches(calib: Mapping[str, np.ndarray], names: list[str], fixed: int | None,
                   step: int = 32) -> list[dict[str, np.ndarray]]:
    """Every calibration sample in batches: of exactly ``fixed`` for a fixed-batch export (samples repeated to
    fill the last one), else of up to ``step`` with at least 2 (a symbolic batch is not traced at size 1)."""
    n = len(calib[names[0]])
    if fixed is not None:
        idx = np.resize(np.arange(n), -(-n // fixed) * fixed)  # wrap around to fill the last batch
        bounds = [(i, i + fixed) for i in range(0, len(idx), fixed)]
    else:
        idx = np.arange(n) if n >= 2 else np.zeros(2, dtype=np.int64)
        cuts = list(range(0, len(idx), step)) + [len(idx)]
        if len(cuts) > 2 and cuts[-1] - cuts[-2] < 2:  # a last batch of 1 joins the one before
            cuts.pop(-2)
        bounds = list(zip(cuts[:-1], cuts[1:]))
    return [{k: np.ascontiguousarray(calib[k][idx[a:b]]) for k in names} for a, b in bounds]


def _pt2e_static(model: Any, args: tuple, shapes: Any, calib: Mapping[str, np.ndarray], names: list[str]) -> Any:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:  # older stacks ship it in torch.ao
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    # the exported GraphModule takes its tensors as flat arguments even when the model is a forward(*args)
    # wrapper (channels-last), whose own spec nests them: convert it with the flat form
    flat = shapes[0] if shapes is not None and len(shapes) == 1 and isinstance(shapes[0], tuple) else shapes
    prepared = prepare_pt2e(torch.export.export(model.eval(), args, dynamic_shapes=shapes).module(), quantizer)
    with torch.no_grad():
        for batch in _calib_batches(calib, names, fixed=None if shapes is not None else int(args[0].shape[0])):
            prepared(*[torch.from_numpy(batch[k]) for k in names])
    converted = convert_pt2e(prepared, fold_quantize=False)
    try:  # exported GraphModules refuse .eval(); this is the supported way to switch BN/dropout to eval
        from torchao.quantization.pt2e import move_exported_model_to_eval
    except ImportError:
        from torch.ao.quantization import move_exported_model_to_eval
    converted = move_exported_model_to_eval(converted)
    return litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=quantizer),
                                dynamic_shapes=flat)


def _ai_edge_quantize(src: Path, dst: Path, precision: str) -> dict[str, Any]:
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = quantizer.Quantizer(str(src))
    if precision == "int8-dynamic":
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        desc = {"method": "dynamic range", "weights": "int8 per-channel", "activations": "float32 (int8 on the fly)"}
    else:
        qt.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                  algorithm_key=AlgorithmName.FLOAT_CASTING)
        desc = {"method": "float16 weights", "weights": "float16", "activations": "float32"}
    qt.quantize().export_model(str(dst), overwrite=True)
    return desc
