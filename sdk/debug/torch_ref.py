"""PyTorch as the reference of ``edgesdk debug``: the model runs with a forward hook on every module, and each
module's output is matched to the tensor of the ONNX export that carries it.

The match goes through the *bridge*: the FP32 ONNX export the artifact descends from (the artifact itself when
it is that export, or when no manifest says more). A module's output is the last tensor in graph order made by
a node whose exporter provenance lies in that module (itself or a child), with the module's shape; when a
parent and a child give the same tensor (a Sequential and its last layer) the child names it. The candidate
artifact's tensors are then matched to the bridge's by name as between two ONNX files, so a quantized activation
is compared as its dequantized value, and a ReLU that the quantizer folded into its Conv is compared where the
FP32 graph still has it. Modules that leave no tensor of their own (a Conv whose BatchNorm the exporter folded
into it: the fused node carries the BatchNorm's provenance), that run more than once per forward, or that
return no single float tensor, are listed as unmatched, not guessed.

The model comes from the caller (``model="file.py:factory"`` with ``weights``, or an ``nn.Module``); when the
manifest says the artifact descends from a pruned model saved in the directory (``model.pruned.safetensors``
and its shapes file), those pruned shapes and weights are loaded onto it.

Example::

    ref = TorchReference(net, bridge_proto)
    values = ref(batch)          # {bridge tensor name: module output} for this batch
    ref.modules["relu_2"]        # ("stages.0", "mymodel._Residual")
    ref.unmatched["stem.0"]      # "no tensor of its own in the graph (folded into another op, or renamed)"
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgesdk.errors import InputError

from .layers import provenance


def lineage(directory: Path, manifest: dict[str, Any] | None, name: str) -> tuple[Path | None, Path | None]:
    """(bridge ONNX file, pruned weights stem) for the artifact ``name`` from the manifest's parent chain: the
    root ONNX export it descends from, and the saved pruned model (``format: torch``) above it, if any."""
    entries = {a.get("path"): a for a in (manifest or {}).get("artifacts") or []}
    bridge: Path | None = None
    cur, seen = entries.get(name), set()
    while cur is not None and cur.get("path") not in seen:
        seen.add(cur.get("path"))
        if cur.get("format") == "onnx":
            bridge = directory / cur["path"]
        elif cur.get("format") == "torch":
            return bridge, directory / cur["path"].removesuffix(".safetensors")
        cur = entries.get(cur.get("parent"))
    return bridge, None


def build_reference_model(model: Any, weights: str | None, pruned: Path | None) -> Any:
    """The PyTorch model to hook: built from ``file.py:factory`` (with ``weights``) or a copy of the module
    given, with the pruned shapes and weights of ``pruned`` loaded when the artifact descends from them."""
    import torch

    from edgesdk.intake import build_model, load_weights

    if model is None:
        raise InputError("--against pytorch needs the model", expected="--model FILE.py:factory (and --weights "
                         "W.safetensors when the factory does not load them)",
                         hint="the same --model and --weights given to `edgesdk compress`")
    if isinstance(model, torch.nn.Module):
        net = copy.deepcopy(model)
        if weights:
            load_weights(net, weights)
    elif isinstance(model, str):
        net = build_model(model)
        if weights:
            load_weights(net, weights)
    else:
        raise InputError("model must be a torch.nn.Module or 'file.py:factory'", found=type(model).__name__)
    if pruned is not None:
        from edgesdk.compress.prune import load_pruned

        if not all(Path(f"{pruned}{ext}").is_file() for ext in (".json", ".safetensors")):
            raise InputError(f"the pruned model {pruned.name} the artifact descends from is not in its directory",
                             expected=f"{pruned.name}.safetensors and {pruned.name}.json beside the artifact",
                             hint="copy the whole artifact directory")

        net = load_pruned(net, pruned)
    return net.eval()


def _static_shapes(proto: Any) -> dict[str, list[int | None]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    out: dict[str, list[int | None]] = {}
    for vi in [*g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def _fits(static: list[int | None] | None, shape: tuple[int, ...]) -> bool:
    return static is not None and len(static) == len(shape) and all(s is None or s == d for s, d in zip(static, shape))


def hooked_outputs(net: Any, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Run ``net`` once with a hook on every module: ({module path: output} of the modules that ran once and
    returned one float tensor, {module path: times it ran})."""
    import torch

    from edgesdk.binding import bind_inputs

    outs: dict[str, Any] = {}
    calls: dict[str, int] = {}
    handles = []

    def hook(path: str) -> Any:
        def record(_mod: Any, _args: Any, out: Any) -> None:
            calls[path] = calls.get(path, 0) + 1
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                outs[path] = out.detach().float().cpu().numpy()

        return record

    for path, mod in net.named_modules():
        handles.append(mod.register_forward_hook(hook(path)))
    try:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
        binding = bind_inputs(net, tensors)
        ordered = binding.order(tensors)
        with torch.no_grad():
            net(**ordered) if binding.keyword else net(*ordered.values())
    finally:
        for h in handles:
            h.remove()
    return {p: v for p, v in outs.items() if calls.get(p) == 1}, calls


@dataclass
class ModuleMatch:
    modules: dict[str, tuple[str, str]]  # tensor -> (module path, class)
    unmatched: dict[str, str]  # module path -> why it has no tensor


def match_modules(net: Any, outs: Mapping[str, Any], calls: Mapping[str, int],
                  made: Mapping[str, tuple[int, str]], fits: Callable[[str, tuple[int, ...]], bool]) -> ModuleMatch:
    """Each module's output among a graph's tensors: ``made`` says, per tensor, its producer's position in the
    graph and the module its provenance names; a module's output is the last tensor made inside it (itself or
    a child) that ``fits(tensor, module_output_shape)``; a tensor two modules share goes to the deeper one."""
    classes = {p: f"{type(m).__module__}.{type(m).__qualname__}" for p, m in net.named_modules()}
    best: dict[str, str] = {}  # module -> the last tensor inside it with its shape
    for path, value in outs.items():
        inside = [(order, t) for t, (order, mod) in made.items()
                  if (not path or mod == path or mod.startswith(path + ".")) and fits(t, value.shape)]
        if inside:
            best[path] = max(inside)[1]
    chosen: dict[str, str] = {}  # tensor -> the deepest module that gives it
    for path, t in best.items():
        prev = chosen.get(t)
        if prev is None or _depth(path) > _depth(prev):
            chosen[t] = path
    unmatched: dict[str, str] = {}
    for p in classes:
        if not p or p in best:
            continue
        n = calls.get(p, 0)
        unmatched[p] = ("did not run" if n == 0 else f"ran {n} times per forward" if n > 1 else
                        "returned no single float tensor" if p not in outs else
                        "no tensor of its own in the graph (folded into another op, or renamed)")
    return ModuleMatch(modules={t: (p, classes[p]) for t, p in chosen.items()}, unmatched=unmatched)


def _depth(path: str) -> int:
    return path.count(".") + 1 if path else 0


class TorchReference:
    """Callable: a batch of inputs -> {bridge tensor name: the matched module's output} (see the module doc)."""

    def __init__(self, net: Any, bridge: Any, names: list[str]) -> None:
        self.net = net
        self.shapes = _static_shapes(bridge)
        made: dict[str, tuple[int, str]] = {}  # tensor -> (graph order, provenance module)
        for i, node in enumerate(bridge.graph.node):
            module, _cls = provenance(node)
            if module is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            for t in node.output:
                made[t] = (i, module)
        exposed = set(names)
        self.made = {t: v for t, v in made.items() if t in exposed}
        self.modules: dict[str, tuple[str, str]] = {}  # bridge tensor -> (module path, class)
        self.unmatched: dict[str, str] = {}  # module path -> why it has no tensor
        self._calls: dict[str, int] = {}
        self._by_module: dict[str, str] = {}  # module path -> bridge tensor
        self._matched = False

    def module_outputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        outs, self._calls = hooked_outputs(self.net, batch)
        return outs

    def _match(self, outs: dict[str, Any]) -> None:
        m = match_modules(self.net, outs, self._calls, self.made,
                          lambda t, shape: _fits(self.shapes.get(t), shape))
        self.modules, self.unmatched = m.modules, m.unmatched
        self._by_module = {p: t for t, (p, _c) in m.modules.items()}
        self._matched = True

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        outs = self.module_outputs(batch)
        if not self._matched:
            self._match(outs)
        return {t: outs[p] for p, t in self._by_module.items() if p in outs}
