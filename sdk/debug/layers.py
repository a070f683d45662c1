"""Per-layer divergence of an ONNX artifact from a reference ONNX artifact (by default its parent in the
artifact directory: the FP32 export for an INT8 file), on onnxruntime, with no PyTorch.

Both graphs get every intermediate float tensor as an extra output; the same inputs run through both; the
candidate's tensors are matched to the reference's by name (a QDQ file keeps the names of the tensors it
quantizes, and its dequantized activation ``DQ(Q(t))`` is what the next layer reads, so that is what is
compared for ``t``), with equal shapes. Each matched tensor is mapped to the PyTorch module that made it
through the exporter's provenance (``pkg.torch.onnx.name_scopes`` / ``class_hierarchy`` node metadata, which
edgesdk's export keeps through simplification and onnxruntime's quantizer keeps on compute nodes).

Per layer: cosine, SQNR (dB), max abs and max relative error against the reference, the SQNR its inputs had
(``jump_db`` is what the layer lost), the same per channel (``channel_sqnr_db``: each channel against its
own power, so an outlier channel that per-tensor INT8 makes round its neighbours away shows where it is) and
the noise it added, counted per channel (the ranking key);
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
    added_noise: float  # relative noise power added here, per channel: 10^(-channel/10) - 10^(-input_channel/10)
    channel_sqnr_db: float = SQNR_CAP_DB  # SQNR of the average channel (each against its own power)
    input_channel_sqnr_db: float = SQNR_CAP_DB  # the lowest channel SQNR among its inputs
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


DEAD_CHANNEL = 1e-6  # a channel with under this share of the average channel's signal power carries nothing


def channel_axis(shape: tuple[int, ...]) -> int | None:
    """The channel axis of an activation: 1 for NCHW-like tensors (rank 4+), the last for (batch, [sequence,]
    features); None for a scalar or a vector."""
    return 1 if len(shape) >= 4 else len(shape) - 1 if len(shape) >= 2 else None


class _Stats:
    """A tensor's comparison figures over batches: moments of the whole tensor, and signal and noise power per
    channel (see :func:`channel_axis`)."""

    def __init__(self) -> None:
        self.m, self.max_abs, self.max_ref = _Moments(), 0.0, 0.0
        self.signal: np.ndarray | None = None  # per channel: sum of ref^2
        self.noise: np.ndarray | None = None  # per channel: sum of (ref - cand)^2
        self.per_channel = True

    def add(self, r: np.ndarray, c: np.ndarray) -> None:
        r, c = np.asarray(r, np.float64), np.asarray(c, np.float64)
        self._add_channels(r, c)
        r, c = r.ravel(), c.ravel()
        ok = np.isfinite(r) & np.isfinite(c)
        r, c = r[ok], c[ok]
        self.m.add(r, c)
        if r.size:
            self.max_abs = max(self.max_abs, float(np.abs(r - c).max()))
            self.max_ref = max(self.max_ref, float(np.abs(r).max()))

    def _add_channels(self, r: np.ndarray, c: np.ndarray) -> None:
        axis = channel_axis(r.shape)
        if axis is None or r.shape != c.shape or not self.per_channel:
            self.per_channel = False
            return
        rr, cc = (np.moveaxis(a, axis, 0).reshape(r.shape[axis], -1) for a in (r, c))
        ok = np.isfinite(rr) & np.isfinite(cc)
        signal = np.where(ok, rr * rr, 0.0).sum(axis=1)
        noise = np.where(ok, (rr - cc) ** 2, 0.0).sum(axis=1)
        if self.signal is None:
            self.signal, self.noise = signal, noise
        elif self.signal.shape == signal.shape:
            self.signal, self.noise = self.signal + signal, self.noise + noise
        else:  # the channel count changed between batches: the whole-tensor figure stands in
            self.per_channel = False

    def channel_sqnr_db(self, whole_db: float) -> float:
        """SQNR of the average channel: the noise of each live channel relative to that channel's own power
        (at most all of it), averaged. A channel a downstream weight scales up shows here even when one huge
        channel dominates the tensor's power; ``whole_db`` (the tensor's SQNR) when there are no channels."""
        if not self.per_channel or self.signal is None or self.noise is None or not self.signal.any():
            return whole_db
        live = self.signal > DEAD_CHANNEL * self.signal.mean()
        nsr = float(np.minimum(1.0, self.noise[live] / self.signal[live]).mean())
        return SQNR_CAP_DB if nsr <= 10 ** (-SQNR_CAP_DB / 10) else -10.0 * float(np.log10(nsr))


def figures(s: _Stats, sqnr: float, input_db: float, channel_db: float, input_channel_db: float) -> dict[str, float]:
    """A layer's figures from its statistics, its SQNR and the SQNR its inputs had, whole and per channel;
    the noise it added is counted per channel."""
    return {"cosine": round(s.m.cosine(), 6), "sqnr_db": round(sqnr, 2), "max_abs_err": float(s.max_abs),
            "max_rel_err": float(s.max_abs / s.max_ref) if s.max_ref else 0.0, "input_sqnr_db": round(input_db, 2),
            "jump_db": round(input_db - sqnr, 2), "channel_sqnr_db": round(channel_db, 2),
            "input_channel_sqnr_db": round(input_channel_db, 2),
            "added_noise": max(0.0, 10 ** (-channel_db / 10) - 10 ** (-input_channel_db / 10))}


def scores(stats: Mapping[str, _Stats], producer: Mapping[str, tuple[int, Any]]) -> dict[str, dict[str, float]]:
    """{tensor: its figures} for every tensor with statistics; ``producer``: tensor -> (order, node), the
    node's ``input`` naming the tensors it reads (matched ones give its inputs' SQNR; others are traced
    through, graph inputs and weights are exact)."""
    sqnr = {t: s.m.sqnr_db() for t, s in stats.items() if s.m.n}
    channel = {t: stats[t].channel_sqnr_db(db) for t, db in sqnr.items()}
    input_db, input_channel = _input_sqnr(sqnr, producer), _input_sqnr(channel, producer)
    return {t: figures(stats[t], sqnr[t], input_db(producer[t][1]), channel[t], input_channel(producer[t][1]))
            for t in sqnr}


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
    figs = scores(stats, producer)
    cand_node = {o: n for n in cand_p.graph.node for o in n.output}
    out: list[LayerDivergence] = []
    for t in sorted(figs, key=lambda t: producer[t][0]):
        order, node = producer[t]
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
            shape=shapes[t], **figs[t],
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

