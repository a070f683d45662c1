"""Pre-flight coverage per target: before any compress, a trial export/lowering for each target, saying whether
it converts, which modules block it (module path, class, file:line and the code line) and how much of the graph
each runtime accelerates.

* ``onnx``: compress's ONNX exporter, then onnxruntime's per-execution-provider node assignment;
* ``tflite``: litert-torch, then the LiteRT interpreter's XNNPACK DELEGATE nodes (delegated vs total);
* ``openvino``: the ONNX graph through OpenVINO's frontend, ``Core.query_model`` per device;
* ``tensorrt``: TensorRT's ONNX parser (``supports_model``) when tensorrt is installed and usable, else its
  documented ONNX operator table for TensorRT 10 (static data shipped in ``tensorrt_ops.json``).

Example::

    report = edgesdk.check.check(model, {"x": torch.rand(1, 3, 224, 224)}, targets=("onnx", "tflite"))
    report.exit_code            # 0: every asked target converts and is fully covered; 1 otherwise
    report.to_dict()["modules"] # {"head.det": {"class": ..., "issues": [{"target": "tensorrt", ...}]}}
"""
from __future__ import annotations

import importlib.metadata
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from edgesdk.errors import InputError
from edgesdk.verb import make_callable

from .report import Blocker, CheckReport, TargetResult, to_markdown

log = logging.getLogger(__name__)

TARGETS = ("onnx", "tflite", "openvino", "tensorrt")
_ALIASES = {"onnxruntime": "onnx", "ort": "onnx", "litert": "tflite", "trt": "tensorrt", "ov": "openvino"}

__all__ = ["check", "parse_targets", "CheckReport", "TargetResult", "Blocker", "TARGETS", "to_markdown"]


def parse_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    """``"onnx,tflite"`` or a list -> the target names, in order, without duplicates; an unknown name is an
    InputError listing the known ones."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    names = [_ALIASES.get(str(t).strip().lower(), str(t).strip().lower()) for t in items if str(t).strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise InputError(f"unknown check target{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                         if unknown else "no check target given", expected=f"a comma list of {', '.join(TARGETS)}",
                         found=", ".join(map(str, items)) or "nothing", hint="e.g. --targets onnx,tflite")
    return tuple(dict.fromkeys(names))


def _check_providers(providers: list[str]) -> None:
    """Every asked onnxruntime execution provider must be installed here: onnxruntime would otherwise fall
    back to the CPU quietly and the report would measure another provider than the one asked for."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return  # the onnx record says onnxruntime is missing
    import onnxruntime as ort

    available = ort.get_available_providers()
    unknown = [p for p in providers if p not in available]
    if unknown:
        raise InputError(f"execution provider{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"{'are' if len(unknown) > 1 else 'is'} not available in this onnxruntime",
                         expected=", ".join(available), found=", ".join(providers),
                         hint="leave --providers out to use those installed here")


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("edgesdk", "torch", "onnx", "onnxruntime", "onnxslim", "openvino", "litert-torch", "ai-edge-litert",
                 "tensorrt"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _model_and_examples(model: Any, example_inputs: Any, input_specs: Iterable[Any], dims: Iterable[str],
                        weights: str | None) -> tuple[Any, dict[str, Any], str]:
    """(the module to export, its example tensors in forward()'s order, a name for the report)."""
    from edgesdk.intake import ModelSource, build_model, load_weights, parse_dim_sizes, parse_input_spec

    specs = list(input_specs or ())
    if isinstance(model, ModelSource):
        name, net = model.ref, model.build()
        examples = model.examples(net) if example_inputs is None else example_inputs
    else:
        name = model if isinstance(model, str) else type(model).__name__
        net = build_model(model) if isinstance(model, str) else model
        if weights:
            load_weights(net, weights)
        if example_inputs is not None and specs:
            raise InputError("give either example inputs or input specs, not both")
        if example_inputs is None:
            if not specs:
                raise InputError("no model inputs given", expected="--input NAME:1x3x224x224[:dtype] or "
                                 "--example-inputs FILE.npz", hint="e.g. --input x:1x1x8x8")
            from edgesdk.synthetic import example_inputs as make

            sizes = parse_dim_sizes(tuple(dims or ()))
            examples = make(net, [parse_input_spec(s, sizes) if isinstance(s, str) else s for s in specs])
        else:
            examples = example_inputs
    import torch

    if not isinstance(net, torch.nn.Module):
        raise InputError("check needs a torch.nn.Module", expected="an nn.Module or 'path/to/file.py:factory'",
                         found=type(net).__name__)
    from edgesdk.binding import bind_inputs, keyword_adapter
    from edgesdk.inputs import check_model_runs, normalize_inputs

    examples, named = normalize_inputs(examples)
    binding = bind_inputs(net, examples, named=named)
    if not named:
        examples = dict(zip(binding.names, examples.values()))
    examples = binding.order(examples)
    net = net.eval()
    call = keyword_adapter(net, binding.names) if binding.keyword else net
    check_model_runs(call, examples)
    return call, examples, name


def _strip_adapter(results: dict[str, TargetResult]) -> None:
    """Module paths as the user's model names them: the keyword adapter (forward() called with keywords) adds
    a ``model.`` prefix to every path inside it."""
    for t in results.values():
        for b in t.blocked_by:
            if b.module == "model":
                b.module = "(model)"
            elif b.module and b.module.startswith("model."):
                b.module = b.module[len("model."):]


def _output_names(model: Any, examples: dict[str, Any]) -> list[str]:
    import torch

    with torch.no_grad():
        out = model(*examples.values())
    n = 1 if isinstance(out, torch.Tensor) else len(out)
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def check(model: Any, example_inputs: Any = None, *, input_specs: Iterable[Any] = (), dims: Iterable[str] = (),
          weights: str | None = None, targets: str | Iterable[str] = TARGETS, opset: int = 18,
          exporter: str = "auto", dynamic_batch: bool = True, providers: list[str] | None = None,
          openvino_devices: list[str] | None = None,
          progress: Callable[[str], None] | None = None) -> CheckReport:
    """Try every asked target on ``model`` and report its coverage (see the module docstring).

    ``model``: an ``nn.Module``, ``"path/to/file.py:factory"`` (with ``weights``) or an
    ``edgesdk.intake.ModelSource``. Inputs: ``example_inputs`` (a tensor, tuple or dict name -> tensor), or
    ``input_specs`` (``"x:1x3x224x224"`` strings, with ``dims`` ``"H=160"`` for symbolic axes).
    ``providers``: onnxruntime execution providers, preferred first (default: those installed here);
    ``openvino_devices``: the devices ``query_model`` is asked about (default: every device OpenVINO sees; the
    first decides ``fully_covered``). Nothing is written outside a temporary directory, removed at the end.
    Raises InputError for bad inputs; every target's own failure is in its TargetResult.
    """
    from . import probes

    if exporter not in ("auto", "dynamo", "legacy"):
        raise InputError(f"unknown exporter {exporter!r}", expected="auto | dynamo | legacy", found=str(exporter))
    asked = parse_targets(targets)
    if providers and "onnx" in asked:
        _check_providers(providers)
    say = progress or (lambda _msg: None)
    net, examples, name = _model_and_examples(model, example_inputs, input_specs, dims, weights)
    outs = _output_names(net, examples)
    inputs = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in examples.items()}
    results: dict[str, TargetResult] = {}
    with tempfile.TemporaryDirectory(prefix="edgesdk-check-") as tmp:
        work = Path(tmp)
        graph = None
        if any(t in asked for t in ("onnx", "openvino", "tensorrt")):
            say("exporting to ONNX")
            graph = probes.export_graph(net, examples, work, opset=opset, exporter=exporter,
                                        dynamic_batch=dynamic_batch, output_names=outs)
        # tflite last: litert-torch imports JAX (multithreaded), and OpenVINO's ONNX frontend forks a telemetry
        # process (openvino_telemetry), which must not happen after JAX started its threads
        for target in sorted(asked, key=lambda t: t == "tflite"):
            say(f"checking {target}")
            if target == "onnx":
                results[target] = probes.timed(probes.probe_onnx, graph, examples, providers, work)
            elif target == "tflite":
                results[target] = probes.timed(probes.probe_tflite, net, examples, work,
                                               dynamic_batch=dynamic_batch, output_names=outs)
            elif target == "openvino":
                results[target] = probes.timed(probes.probe_openvino, graph, openvino_devices)
            elif target == "tensorrt":
                results[target] = probes.timed(probes.probe_tensorrt, graph)
            results[target].target = target
    if getattr(net, "edgesdk_keyword_call", False):
        _strip_adapter(results)
    return CheckReport(model=name, inputs=inputs, targets={t: results[t] for t in asked}, versions=_versions())


make_callable(__name__, check)  # edgesdk.check(model, inputs, targets=...) is the verb
