"""Per-layer divergence of a TFLite artifact from PyTorch, on LiteRT.

The file runs on LiteRT's builtin kernels with every intermediate tensor preserved
(``experimental_preserve_all_tensors``; the XNNPACK delegate is left out, as it keeps no intermediate
tensors), sample by sample when its batch is fixed; an int8 tensor is dequantized with its own scale and zero
point. litert-torch names each tensor by the module path it came from, as the chain of ``Class_attribute``
segments below the model (``.../torch.nn.modules.container.Sequential_stem/torch.nn.modules.conv.Conv2d_0``);
a fused op lists every location it fused, outermost first (``ReLU_2;;BatchNorm2d_1;;Conv2d_0``), so its
output is the outermost module's. Those paths are matched to the PyTorch model's modules (forward hooks, as
for ``--against pytorch`` on ONNX: a module's output is the last tensor made inside it with its shape, the
deeper module naming a shared tensor), with a channels-last tensor compared as its NCHW transpose.

Example::

    layers, unmatched = compare_tflite("out/model.int8.tflite", net, batches)
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from edgesdk.errors import ArtifactError, InputError

from .layers import LayerDivergence, _Stats, scores
from .torch_ref import hooked_outputs, match_modules


def _locations(net: Any) -> dict[str, str]:
    """``"Class_attr/Class_attr"`` below the model, as litert-torch writes it -> the module's dotted path."""
    mods = dict(net.named_modules())
    out: dict[str, str] = {}
    for path in mods:
        if not path:
            continue
        parts = path.split(".")
        segs = []
        for i, part in enumerate(parts):
            m = mods[".".join(parts[:i + 1])]
            segs.append(f"{type(m).__module__}.{type(m).__qualname__}_{part}")
        out["/".join(segs)] = path
    return out


def module_of_name(name: str, locations: Mapping[str, str]) -> str | None:
    """The module a TFLite tensor name places it in (its first, outermost location); "" for the model itself,
    None when the name carries no location (a graph input or output, a constant)."""
    first = name.split(";;")[0].split(";")[0]
    located = name != first  # an op's location ends in ";" or ";N"; a bare name is an input, output or constant
    segs = first.split("/")
    for k in range(1, len(segs)):  # below the model, and below a wrapper litert-torch put around it
        module = locations.get("/".join(segs[k:]))
        if module is not None:
            return module
    return "" if located else None  # "Model;1", "Wrapper/Model_wrapped;1": made in the model's own forward


def _interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path} is not a TFLite model LiteRT can load", found=f"{type(e).__name__}: {e}",
                            hint="copy the artifact again, or re-run `edgesdk compress`") from None
    return it


def _dequantized(it: Any, detail: Mapping[str, Any]) -> np.ndarray:
    value = it.get_tensor(detail["index"])
    scale, zero = detail.get("quantization") or (0.0, 0)
    if scale and np.issubdtype(value.dtype, np.integer):
        return (value.astype(np.float32) - np.float32(zero)) * np.float32(scale)
    return value.astype(np.float32, copy=False)


class _Runner:
    """Runs a batch through the interpreter (sample by sample for a fixed batch of 1): {tensor index: value}."""

    def __init__(self, path: Path, layout: Mapping[str, str] | None = None) -> None:
        self.layout = dict(layout or {})  # input -> "channels_last": the file takes N,H,W,C (--tflite-nhwc)
        self.it = _interpreter(path)
        self.inputs = self.it.get_input_details()
        self.ops = [op for op in self.it._get_ops_details() if op["op_name"] != "DELEGATE"]
        self.details = {d["index"]: d for d in self.it.get_tensor_details()}
        self.produced = [int(t) for op in self.ops for t in op["outputs"]]

    def _feeds(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = list(batch)
        out = []
        for i, d in enumerate(self.inputs):
            key = d["name"] if d["name"] in batch else (names[i] if i < len(names) else None)
            if key is None:
                raise InputError("the input data lacks an input of the TFLite model", expected=d["name"],
                                 found=", ".join(names) or "nothing")
            a = np.asarray(batch[key])
            if self.layout.get(key) == "channels_last" and a.ndim == 4:
                a = a.transpose(0, 2, 3, 1)  # the reference data is in PyTorch's N,C,H,W
            scale, zero = d.get("quantization") or (0.0, 0)
            if np.issubdtype(d["dtype"], np.integer) and scale and np.issubdtype(a.dtype, np.floating):
                info = np.iinfo(d["dtype"])
                a = np.clip(np.round(a / scale) + zero, info.min, info.max)
            out.append(a.astype(d["dtype"]))
        return out

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        feeds = self._feeds(batch)
        n = len(feeds[0]) if feeds and feeds[0].ndim else 1
        fixed = all(int(d["shape"][0]) == 1 for d in self.inputs if len(d["shape"]))
        chunks = [[f[i:i + 1] for f in feeds] for i in range(n)] if fixed and n > 1 else [feeds]
        got: dict[int, list[np.ndarray]] = {}
        for chunk in chunks:
            for d, a in zip(self.inputs, chunk):
                if tuple(d["shape"]) != a.shape:
                    self.it.resize_tensor_input(d["index"], list(a.shape))
                    self.it.allocate_tensors()
                self.it.set_tensor(d["index"], np.ascontiguousarray(a))
            self.it.invoke()
            for t in self.produced:
                got.setdefault(t, []).append(_dequantized(self.it, self.details[t]))
        return {t: np.concatenate(v) if len(v) > 1 else v[0] for t, v in got.items()}


def _as_nchw(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``value`` in the layout of a PyTorch tensor of ``shape``: as it is, or a channels-last 4-D tensor
    transposed back; None when neither fits."""
    if value.shape == shape:
        return value
    if value.ndim == 4 and value.transpose(0, 3, 1, 2).shape == shape:
        return value.transpose(0, 3, 1, 2)
    return None


def _fits(static: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """A tensor's static shape (batch 1 when fixed) against a module output's (any batch)."""
    if len(static) != len(shape) or not shape:
        return False
    rest, want = tuple(static[1:]), tuple(shape[1:])
    if rest == want:
        return True
    return len(shape) == 4 and (static[3], static[1], static[2]) == want


def compare_tflite(candidate: str | Path, net: Any, batches: list[Mapping[str, np.ndarray]],
                   layout: Mapping[str, str] | None = None) -> tuple[list[LayerDivergence], dict[str, str]]:
    """Every matched module of ``net`` against the TFLite file's tensor for it, over ``batches`` (PyTorch's
    layout; ``layout`` names the inputs the file takes channels-last); ranked worst first (most added noise);
    and the modules left unmatched, with why."""
    if not batches:
        raise InputError("no input batches to run", expected="a reference set or --data with samples")
    run = _Runner(Path(candidate), layout)
    locations = _locations(net)
    made: dict[str, tuple[int, str]] = {}
    outputs = {d["name"] for d in run.it.get_output_details()}
    for order, op in enumerate(run.ops):
        for t in op["outputs"]:
            name = run.details[int(t)]["name"]
            # a graph output (and its int8 twin before the final DEQUANTIZE) is the model's own output
            module = "" if name in outputs or name.split("/")[0] in outputs else module_of_name(name, locations)
            if module is not None:
                made[str(int(t))] = (order, module)
    outs, calls = hooked_outputs(net, batches[0])
    match = match_modules(net, outs, calls, made,
                          lambda t, shape: _fits(tuple(int(v) for v in run.details[int(t)]["shape"]), shape))
    by_module = {p: t for t, (p, _c) in match.modules.items()}
    stats = {t: _Stats() for t in match.modules}
    shapes: dict[str, list[int]] = {}
    for i, batch in enumerate(batches):
        ref = outs if i == 0 else hooked_outputs(net, batch)[0]
        got = run(batch)
        for path, t in by_module.items():
            if path not in ref:
                continue
            value = _as_nchw(got[int(t)], ref[path].shape)
            if value is None:
                stats.pop(t, None)
                continue
            if t in stats:
                stats[t].add(ref[path], value)
                shapes[t] = list(ref[path].shape)
    nodes = {str(int(o)): (k, SimpleNamespace(input=[str(int(x)) for x in op["inputs"] if int(x) >= 0],
                                              op_type=op["op_name"], name=f"{op['op_name']}:{op['index']}"))
             for k, op in enumerate(run.ops) for o in op["outputs"]}
    figs = scores(stats, nodes)
    layers = []
    for t in sorted(figs, key=lambda t: nodes[t][0]):
        order, node = nodes[t]
        module, cls = match.modules[t]
        layers.append(LayerDivergence(
            tensor=f"t{t}", op=node.op_type, node=node.name, module=module, module_class=cls, order=order,
            shape=shapes[t], **figs[t], candidate_tensor=run.details[int(t)]["name"]))
    return sorted(layers, key=lambda d: -d.added_noise), match.unmatched


def location_module(name: str) -> tuple[str | None, str | None]:
    """(module path, class name) read from a litert-torch tensor name alone, with no PyTorch model at hand:
    the segments below the model (``pkg.Class_attr``) give the attributes, a wrapper litert-torch put around
    the model (``.../Model_wrapped``) is skipped; ("", None) for an op of the model's own forward, (None, None)
    for a name that carries no location (an input, an output, a constant)."""
    first = name.split(";;")[0].split(";")[0]
    if first == name:
        return None, None
    segs = first.split("/")[1:]  # the first segment is the model (or a wrapper around it)
    if segs and segs[0].endswith("_wrapped"):
        segs = segs[1:]
    attrs, cls = [], None
    for seg in segs:
        cls, sep, attr = seg.rsplit(".", 1)[-1].partition("_")
        if not sep:
            return None, None  # not a litert-torch location
        attrs.append(attr)
    return ".".join(attrs), cls


def compare_tflite_files(candidate: str | Path, reference: str | Path, batches: list[Mapping[str, np.ndarray]],
                         layout: Mapping[str, str] | None = None) -> list[LayerDivergence]:
    """Every tensor an op of the ``reference`` TFLite file writes against the tensor of the same name in
    ``candidate`` (a quantized file ai-edge-quantizer made from it keeps the names), over ``batches`` (PyTorch's
    layout; ``layout`` names the inputs both take channels-last), ranked worst first (most added noise). No
    PyTorch is needed: the module is read from the tensor name (:func:`location_module`)."""
    if not batches:
        raise InputError("no input batches to run", expected="a reference set or --data with samples")
    ref, cand = _Runner(Path(reference), layout), _Runner(Path(candidate), layout)
    by_name = {d["name"]: i for i, d in cand.details.items() if i in set(cand.produced)}
    wanted = {t: by_name[ref.details[t]["name"]] for t in ref.produced if ref.details[t]["name"] in by_name}
    if not wanted:
        raise ArtifactError(f"no tensor of {Path(candidate).name} matches one of {Path(reference).name}",
                            expected="a quantized TFLite file and the float file it was made from")
    stats = {str(t): _Stats() for t in wanted}
    shapes: dict[str, list[int]] = {}
    for batch in batches:
        r, c = ref(batch), cand(batch)
        for t, ct in wanted.items():
            if r[t].shape != c[ct].shape:
                stats.pop(str(t), None)
            elif str(t) in stats:
                stats[str(t)].add(r[t], c[ct])
                shapes[str(t)] = list(r[t].shape)
    nodes = {str(int(o)): (k, SimpleNamespace(input=[str(int(x)) for x in op["inputs"] if int(x) >= 0],
                                              op_type=op["op_name"], name=ref.details[int(o)]["name"]))
             for k, op in enumerate(ref.ops) for o in op["outputs"]}
    figs = scores(stats, nodes)
    produced = {str(t) for t in ref.produced}
    layers = []
    for t in sorted(figs, key=lambda t: nodes[t][0]):
        order, node = nodes[t]
        module, cls = location_module(node.name)
        if module is None:  # a graph output, renamed: its op's weights still carry the module's location
            module, cls = next((loc for x in node.input if x not in produced
                                if (loc := location_module(ref.details[int(x)]["name"]))[0]), (None, None))
        layers.append(LayerDivergence(
            tensor=node.name, op=node.op_type, node=node.name, module=module, module_class=cls, order=order,
            shape=shapes[t], **figs[t], candidate_tensor=cand.details[wanted[int(t)]]["name"]))
    return sorted(layers, key=lambda d: -d.added_noise)
