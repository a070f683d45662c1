"""Per-layer divergence of an ONNX artifact from a reference ONNX artifact (by default its parent in the
artifact directory: the FP32 export for an INT8 file), on onnxruntime, with no PyTorch.

Both graphs get every intermediate float tensor as an extra output; the same inputs run through both; the
candidate's tensors are matched to the reference's by name (a QDQ file keeps the names of the tensors it
quantizes, and its dequantized activation ``DQ(Q(t))`` is what the next layer reads, so that is what is
compared for ``t``), with equal shapes. Each matched tensor is mapped to the PyTorch module that made it
through the exporter's provenance (``pkg.torch.onnx.name_scopes`` / ``class_hierarchy`` node metadata, which
edgesdk's export keeps through simplification and onnxruntime's quantizer keeps on compute nodes).

Per layer: cosine, SQNR (dB), max abs and max relative error against the reference, the SQNR its inputs had
(``jump_db`` is what the layer lost) and the noise it added (relative noise power over that of its inputs);
for a quantized activation also its own quantization noise (``local_sqnr_db``: the tensor before its
QuantizeLinear vs after its DequantizeLinear, in the candidate alone).

Example::

    layers = compare_onnx("model.int8.onnx", "model.onnx", batches)   # ranked worst first
    layers[0].module, layers[0].sqnr_db, layers[0].added_noise
"""
from __future__ import annotations

import ast
import contextlib
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from edgesdk.errors import ArtifactError, InputError
from edgesdk.parity import SQNR_CAP_DB, _Moments

_Q_SUFFIX = "_QuantizeLinear_Input"  # onnxruntime's quantizer renames a graph output it quantizes so


@dataclass
class LayerDivergence:
    """One tensor of the reference graph and the candidate's counterpart."""

    tensor: str
    op: str
    node: str
    module: str | None  # the PyTorch module path (None: the graph carries no provenance for it)
    module_class: str | None
    order: int  # position of its producer in the reference graph
    shape: list[int]
    cosine: float
    sqnr_db: float
    max_abs_err: float
    max_rel_err: float
    input_sqnr_db: float  # the lowest SQNR among the layer's inputs (graph inputs are exact)
    jump_db: float  # input_sqnr_db - sqnr_db: what this layer lost
    added_noise: float  # relative noise power added here: 10^(-sqnr/10) - 10^(-input_sqnr/10)
    local_sqnr_db: float | None = None  # a quantized activation's own quantization noise
    candidate_tensor: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # a truncated or foreign file: onnx raises DecodeError and others
        raise ArtifactError(f"{path} is not a readable ONNX model", found=f"{type(e).__name__}: {e}",
                            hint="copy the artifact again, or re-run `edgesdk compress`") from None


def _float_types() -> set[int]:
    import onnx

    return {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def expose(proto: Any) -> tuple[bytes, list[str]]:
    """The model with every intermediate float activation as a graph output, and those tensors' names in graph
    order (weights and their DequantizeLinear outputs are not activations: left out)."""
    import onnx

    proto = onnx.shape_inference.infer_shapes(proto)
    g = proto.graph
    inits = {i.name for i in g.initializer}
    typed = {vi.name: vi for vi in [*g.value_info, *g.output, *g.input]}
    floats = _float_types()
    outputs = {o.name for o in g.output}
    names: list[str] = []
    for n in g.node:
        if n.op_type == "Constant" or (n.op_type == "DequantizeLinear" and n.input[0] in inits):
            continue
        for t in n.output:
            vi = typed.get(t)
            if not t or vi is None or vi.type.tensor_type.elem_type not in floats:
                continue
            names.append(t)
            if t not in outputs:
                g.output.append(vi)
                outputs.add(t)
    return proto.SerializeToString(), names


def provenance(node: Any) -> tuple[str | None, str | None]:
    """(module path, class) of an exported node from its metadata; (None, None) when it has none."""
    md = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(md["pkg.torch.onnx.name_scopes"])
    except (KeyError, ValueError, SyntaxError):
        return None, None
    try:
        classes = ast.literal_eval(md.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):
        classes = []
    modules = [s for s in scopes[:-1] if s]  # the last scope is the op itself
    module = modules[-1] if modules else ""
    cls = classes[-2] if len(classes) >= 2 else None
    return module, cls


def _counterparts(proto: Any, names: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(reference tensor name -> candidate tensor, reference name -> the candidate's tensor before its
    QuantizeLinear) for the candidate graph: a dequantized activation stands for the tensor it quantizes."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    key: dict[str, str] = {}
    before_q: dict[str, str] = {}
    for n in proto.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        ref = src[: -len(_Q_SUFFIX)] if src.endswith(_Q_SUFFIX) else src
        key[ref], before_q[ref] = n.output[0], src
    for t in names:
        key.setdefault(t, t)
    return key, before_q


def _session(model: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class _Stats:
    def __init__(self) -> None:
        self.m, self.max_abs, self.max_ref = _Moments(), 0.0, 0.0

    def add(self, r: np.ndarray, c: np.ndarray) -> None:
        r, c = np.asarray(r, np.float64).ravel(), np.asarray(c, np.float64).ravel()
        ok = np.isfinite(r) & np.isfinite(c)
        r, c = r[ok], c[ok]
        self.m.add(r, c)
        if r.size:
            self.max_abs = max(self.max_abs, float(np.abs(r - c).max()))
            self.max_ref = max(self.max_ref, float(np.abs(r).max()))


def figures(s: _Stats, sqnr: float, input_db: float) -> dict[str, float]:
    """A layer's figures from its statistics, its SQNR and the SQNR its inputs had."""
    return {"cosine": round(s.m.cosine(), 6), "sqnr_db": round(sqnr, 2), "max_abs_err": float(s.max_abs),
            "max_rel_err": float(s.max_abs / s.max_ref) if s.max_ref else 0.0, "input_sqnr_db": round(input_db, 2),
            "jump_db": round(input_db - sqnr, 2),
            "added_noise": max(0.0, 10 ** (-sqnr / 10) - 10 ** (-input_db / 10))}


def compare_onnx(candidate: str | Path, reference: str | Path, batches: list[Mapping[str, np.ndarray]], *,
                 backend: str = "onnxruntime", options: Mapping[str, Any] | None = None) -> list[LayerDivergence]:
    """Every matched layer of ``candidate`` against ``reference`` over ``batches`` (dicts of graph inputs),
    ranked worst first (most added noise)."""
    cand_p, ref_p = _load(Path(candidate)), _load(Path(reference))
    ref_bytes, ref_names = expose(ref_p)
    ref_s = _session(ref_bytes)
    feeds = {i.name for i in ref_s.get_inputs()}
    ref_out = [o.name for o in ref_s.get_outputs()]

    def run_reference(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(ref_out, ref_s.run(ref_out, _feed(batch, feeds))))

    return compare(cand_p, ref_p, ref_names, batches, run_reference, what=Path(reference).name, backend=backend,
                   options=options)


def _feed(batch: Mapping[str, np.ndarray], names: set[str]) -> dict[str, np.ndarray]:
    missing = names - set(batch)
    if missing:
        raise InputError("the input data lacks an input of the model", expected=", ".join(sorted(names)),
                         found=", ".join(sorted(batch)) or "nothing")
    return {k: v for k, v in batch.items() if k in names}


def compare(cand_p: Any, ref_p: Any, ref_names: list[str], batches: list[Mapping[str, np.ndarray]],
            run_reference: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]], *, what: str,
            modules: Mapping[str, tuple[str, str]] | None = None, backend: str = "onnxruntime",
            options: Mapping[str, Any] | None = None) -> list[LayerDivergence]:
    """The candidate graph ``cand_p`` against a reference graph ``ref_p`` whose tensors ``ref_names`` (graph
    order) ``run_reference(batch)`` gives values for (another ONNX file run on onnxruntime, or PyTorch's module
    outputs matched to them); ``modules`` names the module of a reference tensor (else the provenance does).
    The candidate runs on edgesdk's runtime for ``backend`` (with its session ``options``)."""
    if not batches:
        raise InputError("no input batches to run", expected="a reference set or --data with samples")
    cand_bytes, cand_names = expose(cand_p)
    key, before_q = _counterparts(cand_p, ref_names)
    exposed = set(cand_names)
    wanted = {t: key[t] for t in ref_names if key.get(t) in exposed}
    if not wanted:
        raise ArtifactError(f"no tensor of the candidate matches one of {what}",
                            expected="two exports of the same model (e.g. an INT8 file and its FP32 parent)",
                            hint="compare an artifact with the file it was made from (--against)")
    with _runtime_session(cand_bytes, backend, options or {}) as cand_s:
        return _measure(cand_p, ref_p, batches, run_reference, cand_s, wanted, before_q, modules)


@contextlib.contextmanager
def _runtime_session(model: bytes, backend: str, options: Mapping[str, Any]) -> Any:
    """The candidate (with its tensors exposed) loaded by edgesdk's own runtime for ``backend``, as an app
    would run it; the temporary file is removed on exit."""
    from edgesdk.runtimes import load

    with tempfile.TemporaryDirectory(prefix="edgesdk-debug-") as tmp:
        path = Path(tmp) / "exposed.onnx"
        path.write_bytes(model)
        session = load(path, backend=backend, **options)
        try:
            session.load()
            yield session
        finally:
            session.close()


def _measure(cand_p: Any, ref_p: Any, batches: list[Mapping[str, np.ndarray]], run_reference: Callable[..., Any],
             cand_s: Any, wanted: dict[str, str], before_q: dict[str, str],
             modules: Mapping[str, tuple[str, str]] | None) -> list[LayerDivergence]:
    cand_out = [o.name for o in cand_s.outputs]
    cand_feeds = {i.name for i in cand_s.inputs}
    missing = sorted(set(wanted.values()) - set(cand_out))
    if missing:
        raise ArtifactError(f"the {cand_s.backend} backend does not give back every exposed tensor",
                            found=f"{len(missing)} missing, e.g. {', '.join(missing[:3])}",
                            hint="debug on onnxruntime (--backend onnxruntime)")
    stats = {t: _Stats() for t in wanted}
    local = {t: _Stats() for t in wanted if t in before_q and before_q[t] in cand_out}
    shapes: dict[str, list[int]] = {}
    for batch in batches:
        r = run_reference(batch)
        c = cand_s.run(_feed(batch, cand_feeds))
        for t, ct in wanted.items():
            if t not in r or np.shape(r[t]) != c[ct].shape:
                stats.pop(t, None)
                continue
            if t in stats:
                stats[t].add(r[t], c[ct])
                shapes[t] = list(np.shape(r[t]))
            if t in local:
                local[t].add(c[before_q[t]], c[ct])
    producer = {o: (i, n) for i, n in enumerate(ref_p.graph.node) for o in n.output}
    sqnr = {t: s.m.sqnr_db() for t, s in stats.items() if s.m.n}
    input_db = _input_sqnr(sqnr, producer)
    cand_node = {o: n for n in cand_p.graph.node for o in n.output}
    out: list[LayerDivergence] = []
    for t in sorted(sqnr, key=lambda t: producer[t][0]):
        order, node = producer[t]
        in_db = input_db(node)
        s = stats[t]
        if modules is not None:
            module, cls = modules[t]
        else:
            # the node that computes the tensor in the candidate names the module best (a Relu the quantizer
            # folded into its Conv leaves the Conv's provenance); the reference's producer otherwise
            module, cls = provenance(cand_node[before_q[t]]) if before_q.get(t) in cand_node else (None, None)
            if module is None:
                module, cls = provenance(node)
        # the tensor before QuantizeLinear is the same quantity as the reference's only when the same op made it
        # (onnxruntime's quantizer drops a Relu after a Conv: the Conv's output is pre-activation, Q clips it)
        made_by = cand_node.get(before_q.get(t, ""))
        loc = local.get(t) if made_by is not None and made_by.op_type == node.op_type else None
        out.append(LayerDivergence(
            tensor=t, op=node.op_type, node=node.name, module=module, module_class=cls, order=order,
            shape=shapes[t], **figures(s, sqnr[t], in_db),
            local_sqnr_db=round(loc.m.sqnr_db(), 2) if loc is not None and loc.m.n else None,
            candidate_tensor=wanted[t]))
    return sorted(out, key=lambda d: -d.added_noise)


def _input_sqnr(sqnr: dict[str, float], producer: dict[str, tuple[int, Any]]) -> Any:
    """A function: node -> the lowest SQNR among the nearest matched tensors it depends on (through unmatched
    ones; graph inputs and weights are exact)."""
    memo: dict[str, float] = {}

    def of_tensor(t: str, depth: int = 0) -> float:
        if t in sqnr:
            return sqnr[t]
        if t not in producer or depth > 64:
            return SQNR_CAP_DB  # a graph input or a weight
        if t not in memo:
            memo[t] = of_node(producer[t][1], depth + 1)
        return memo[t]

    def of_node(node: Any, depth: int = 0) -> float:
        return min((of_tensor(i, depth) for i in node.input if i), default=SQNR_CAP_DB)

    return of_node

