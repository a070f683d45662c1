"""``edgesdk debug``: which layer made an artifact diverge. An artifact runs beside a reference on the same
inputs with its intermediate tensors exposed; each tensor is matched to the reference's and to the PyTorch
module that made it; per layer: cosine, SQNR, max abs/rel error, what it lost against its inputs, and (for a
quantized activation) its own quantization noise. The report ranks the layers worst first and names the first
layer where the divergence jumps.

What runs today: ONNX artifacts on onnxruntime against another ONNX file (by default the artifact's parent in
its directory, as the manifest records it: the FP32 export for an INT8 file; no PyTorch needed), or against
PyTorch (``against="pytorch"`` with ``model``: every module's output through forward hooks, see
:mod:`edgesdk.debug.torch_ref`), on the directory's reference inputs or ``data``. The artifact runs on onnxruntime or
OpenVINO (``backend``), through edgesdk's own runtime. A TFLite file runs on LiteRT against PyTorch
(:mod:`edgesdk.debug.tflite`). ``compress``'s parity gate runs the same comparison when an artifact fails, to
name the module where it starts (:mod:`edgesdk.debug.culprit`).

Example::

    report = edgesdk.debug("out/model.int8.onnx")          # against out/model.onnx, the manifest's parent
    report.first_jump.module, [l.module for l in report.layers[:3]]
    report = edgesdk.debug("out/model.onnx", against="pytorch", model="model.py:build", weights="w.safetensors")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgesdk.errors import ArtifactError, InputError
from edgesdk.verb import make_callable

from .layers import LayerDivergence, compare_onnx
from .report import DebugReport, to_markdown

__all__ = ["debug", "compare_with_module", "ONNX_BACKENDS", "DebugReport", "LayerDivergence", "to_markdown",
           "JUMP_SHARE"]

JUMP_SHARE = 0.1  # the first jump: the first layer (graph order) adding >= this share of the worst layer's noise
_BATCHES = 8  # reference batches run by default (each a forward pass of both graphs)
ONNX_BACKENDS = ("onnxruntime", "openvino")  # the runtimes an ONNX candidate can be debugged on


def _manifest(directory: Path) -> dict[str, Any] | None:
    p = directory / "manifest.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _candidate(artifact: str | Path) -> Path:
    path = Path(artifact)
    if path.is_dir():
        raise InputError(f"{path} is a directory: name the artifact in it to debug",
                         expected="an artifact file, e.g. DIR/model.int8.onnx",
                         found=", ".join(sorted(p.name for p in path.glob("*.onnx"))) or "no .onnx file")
    if not path.is_file():
        raise InputError(f"artifact not found: {path}", expected="an existing artifact file")
    if path.suffix.lower() not in (".onnx", ".tflite"):
        raise InputError(f"edgesdk debug compares ONNX and TFLite artifacts: {path.name} is neither",
                         expected="a .onnx or .tflite artifact", found=path.suffix or "no suffix",
                         hint="debug the ONNX artifact of the same stage (a TensorRT engine keeps no layer names)")
    return path


def _resolve(path: Path, against: str | Path | None) -> tuple[Path, str]:
    """(reference file, how it was chosen) for an ONNX reference."""
    if against is not None:
        ref = Path(against)
        if not ref.is_file() or ref.suffix.lower() != ".onnx":
            raise InputError(f"--against {ref}: not an ONNX file", expected="an existing .onnx file, or pytorch")
        return ref, "given"
    manifest = _manifest(path.parent)
    entry = _entry(manifest, path.name)
    parent = (entry or {}).get("parent")
    if not parent or not parent.endswith(".onnx") or not (path.parent / parent).is_file():
        found = ("no manifest.json beside it" if manifest is None else "no entry for it in manifest.json"
                 if entry is None else f"its parent is {parent or 'none (it is the first export)'}")
        raise InputError(f"{path.name} has no ONNX parent in its directory to compare with", found=found,
                         hint="pass the file to compare with: --against OTHER.onnx, or --against pytorch "
                              "--model FILE.py:factory")
    return path.parent / parent, "parent in manifest.json"


def _pytorch_label(model: Any) -> str:
    return f"pytorch ({model if isinstance(model, str) else type(model).__name__})"


def _hooked(pruned: Path | None, matched: str) -> str:
    """How PyTorch was made the reference, for the report."""
    return f"forward hooks{', pruned as ' + pruned.name if pruned else ''}; {matched}"


def _entry(manifest: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The manifest's entry for the artifact file ``name``."""
    return next((a for a in (manifest or {}).get("artifacts") or [] if a.get("path") == name), None)


def compare_with_module(cand: Path, net: Any, batches: list[Mapping[str, np.ndarray]], *,
                        bridge: Path | None = None, backend: str = "onnxruntime",
                        options: Mapping[str, Any] | None = None, layout: Mapping[str, str] | None = None) -> tuple[list[LayerDivergence], dict[str, str], str]:
    """(layers, unmatched modules, how they were matched): the artifact ``cand`` layer by layer against the
    outputs of ``net``'s modules (forward hooks). An ONNX file's tensors are matched through ``bridge``, the FP32
    ONNX export it descends from (the file itself when None); a TFLite file's by the module paths in its tensor
    names (``layout``: the inputs it takes channels-last). ``net`` is not changed: the hooks are removed."""
    from .layers import _load, compare, expose
    from .torch_ref import TorchReference

    if cand.suffix.lower() == ".tflite":
        from .tflite import compare_tflite

        layers, unmatched = compare_tflite(cand, net, batches, layout)
        return layers, unmatched, "tensors matched by module path"
    bridge = bridge if bridge is not None and bridge.is_file() else cand
    bridge_p = _load(bridge)
    _bytes, names = expose(bridge_p)
    ref = TorchReference(net, bridge_p, names)
    ref(batches[0])  # matches the modules to the bridge's tensors
    matched = [t for t in names if t in ref.modules]
    layers = compare(_load(cand), bridge_p, matched, batches, ref, what="PyTorch's module outputs",
                     modules=ref.modules, backend=backend, options=dict(options or {}))
    return layers, ref.unmatched, f"modules matched through {bridge.name}"


def _against_pytorch(cand: Path, batches: list[dict[str, np.ndarray]], model: Any, weights: str | None,
                     runtime: dict[str, Any]) -> tuple[list[LayerDivergence], str, str, dict[str, str]]:
    """(layers, reference, how it was chosen, unmatched modules) with PyTorch's module outputs as reference."""
    from .torch_ref import build_reference_model, lineage

    bridge, pruned = lineage(cand.parent, _manifest(cand.parent), cand.name)
    net = build_reference_model(model, weights, pruned)
    layers, unmatched, how = compare_with_module(cand, net, batches, bridge=bridge, **runtime)
    return layers, _pytorch_label(model), _hooked(pruned, how), unmatched


def _batches(path: Path, data: str | Path | None, max_batches: int) -> tuple[list[dict[str, np.ndarray]], str]:
    from edgesdk.intake import load_npz
    from edgesdk.reference import load_reference_set

    if data is not None:
        arrays = load_npz(data, what="debug data")
        n = min(len(v) for v in arrays.values()) if arrays else 0
        if not n:
            raise InputError(f"{data} holds no samples", expected="arrays named like the model's inputs")
        step = 16
        out = [{k: v[i:i + step] for k, v in arrays.items()} for i in range(0, n, step)]
        return out[:max_batches], f"{data} ({min(n, step * max_batches)} samples)"
    ref = path.parent / "reference.npz"
    if not ref.is_file():
        raise InputError(f"no reference set beside {path.name}", expected=f"{ref}, or --data FILE.npz",
                         hint="give inputs with --data FILE.npz (arrays named like the inputs)")
    rs = load_reference_set(ref)
    return rs.inputs[:max_batches], f"reference.npz ({min(len(rs.inputs), max_batches)} batches)"


def _tflite(cand: Path, against: Any, data: Any, max_batches: int, model: Any, weights: str | None,
            backend: str) -> DebugReport:
    """A TFLite file on LiteRT against PyTorch (its tensors are named by module path, not like an ONNX file's)."""
    from .torch_ref import build_reference_model, lineage

    if backend != "onnxruntime":
        raise InputError(f"a TFLite artifact runs on LiteRT, not {backend}", hint="leave out --backend")
    manifest = _manifest(cand.parent)
    if against is None or str(against).lower() != "pytorch":
        return _tflite_pair(cand, against, data, max_batches, manifest)
    _bridge, pruned = lineage(cand.parent, manifest, cand.name)
    entry = _entry(manifest, cand.name) or {}
    net = build_reference_model(model, weights, pruned)
    batches, inputs = _batches(cand, data, max_batches)
    layout = (entry.get("meta") or {}).get("input_layout")
    layers, unmatched, how = compare_with_module(cand, net, batches, layout=layout)
    if not layers:
        raise ArtifactError(f"no tensor of {cand.name} matches a PyTorch module",
                            expected="a TFLite file litert-torch made from this model (its tensors named by "
                                     "module path)", hint="pass the --model the artifact was made from")
    return DebugReport(artifact=str(cand), reference=_pytorch_label(model),
                       reference_choice=_hooked(pruned, how), inputs=inputs,
                       layers=layers, jump_share=JUMP_SHARE, unmatched=unmatched, backend="litert",
                       options={"kernels": "builtin"})  # XNNPACK keeps no intermediate tensors


def _tflite_pair(cand: Path, against: Any, data: Any, max_batches: int, manifest: dict[str, Any] | None
                 ) -> DebugReport:
    """A quantized TFLite file on LiteRT against another TFLite file (by default the float file it was quantized
    from, named in the manifest), tensor by tensor by name; no PyTorch is needed."""
    from .tflite import compare_tflite_files

    entry = _entry(manifest, cand.name) or {}
    meta = entry.get("meta") or {}
    if against is not None:
        ref, how = Path(against), "given"
        if not ref.is_file() or ref.suffix.lower() != ".tflite":
            raise InputError(f"--against {ref}: not a TFLite file", expected="an existing .tflite file, or pytorch")
    else:
        made_from = (meta.get("quantization") or {}).get("float_file")
        ref, how = cand.parent / str(made_from), "float file it was quantized from (manifest.json)"
        if not made_from or not ref.is_file():
            found = ("no manifest.json beside it" if manifest is None else "no entry for it in manifest.json"
                     if not entry else "it was not quantized from a float file there")
            raise InputError(f"{cand.name} has no float TFLite parent in its directory to compare with",
                             found=found, hint="pass --against OTHER.tflite, or --against pytorch --model "
                                               "FILE.py:factory")
    batches, inputs = _batches(cand, data, max_batches)
    layers = compare_tflite_files(cand, ref, batches, meta.get("input_layout"))
    return DebugReport(artifact=str(cand), reference=str(ref), reference_choice=how, inputs=inputs, layers=layers,
                       jump_share=JUMP_SHARE, backend="litert", options={"kernels": "builtin"})


def debug(artifact: str | Path, *, against: str | Path | None = None, data: str | Path | None = None,
          max_batches: int = _BATCHES, model: Any = None, weights: str | None = None,
          backend: str = "onnxruntime", options: dict[str, Any] | None = None) -> DebugReport:
    """Compare ``artifact`` layer by layer with ``against``: another ONNX file, ``"pytorch"`` (with ``model``:
    an ``nn.Module`` or ``"file.py:factory"``, and ``weights``), or by default its parent in the directory.
    The artifact runs on edgesdk's runtime for ``backend`` (``onnxruntime`` or ``openvino``) with the session
    ``options`` (e.g. ``{"precision": "bf16"}`` on OpenVINO); the reference on onnxruntime's CPU provider."""
    if max_batches < 1:
        raise InputError("--max-batches must be at least 1", found=str(max_batches))
    if backend not in ONNX_BACKENDS:
        raise InputError(f"edgesdk debug cannot run ONNX on the {backend!r} backend", expected=" | ".join(ONNX_BACKENDS),
                         hint="a TFLite file runs on LiteRT by itself; TensorRT engines are not debugged")
    runtime = {"backend": backend, "options": dict(options or {})}
    cand = _candidate(artifact)
    if cand.suffix.lower() == ".tflite":
        return _tflite(cand, against, data, max_batches, model, weights, backend)
    if against is not None and str(against).lower() == "pytorch":
        batches, inputs = _batches(cand, data, max_batches)
        layers, ref, how, unmatched = _against_pytorch(cand, batches, model, weights, runtime)
        return DebugReport(artifact=str(cand), reference=ref, reference_choice=how, inputs=inputs, layers=layers,
                           jump_share=JUMP_SHARE, unmatched=unmatched, **runtime)
    if model is not None or weights is not None:
        raise InputError("--model/--weights are for --against pytorch", found=f"--against {against or '(parent)'}",
                         hint="add --against pytorch, or leave out --model and --weights")
    ref, how = _resolve(cand, against)
    batches, inputs = _batches(cand, data, max_batches)
    layers = compare_onnx(cand, ref, batches, **runtime)
    return DebugReport(artifact=str(cand), reference=str(ref), reference_choice=how, inputs=inputs,
                       layers=layers, jump_share=JUMP_SHARE, **runtime)


make_callable(__name__, debug)  # edgesdk.debug(...) is the verb, as edgesdk.compress(...) is
