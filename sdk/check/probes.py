"""One trial conversion per target, each into a TargetResult: ONNX (run by onnxruntime, with its per-EP node
assignment), TFLite (litert-torch, then the LiteRT interpreter's XNNPACK DELEGATE nodes), OpenVINO (the ONNX
graph read by OpenVINO's frontend, ``Core.query_model`` per device) and TensorRT (its ONNX parser's
``supports_model`` when tensorrt is installed, else the static ONNX operator table in ``tensorrt_ops.json``).

A probe never raises for what the target does with the model: a failure is the record's ``error``."""
from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgesdk.errors import EdgeSDKError

from .report import Blocker, TargetResult
from .where import locate_op, node_location, parse_located

log = logging.getLogger(__name__)

_TABLE = Path(__file__).with_name("tensorrt_ops.json")
_OV_SKIP = ("Parameter", "Result", "Constant")


@dataclass
class Graph:
    """The ONNX export every ONNX-fed target shares: the simplified file, and where each node came from (read
    from the exporter's metadata before onnxslim dropped it), by node name and by output name."""

    path: Path | None
    error: str | None = None
    blocked_by: list[Blocker] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exporter: str | None = None
    opset: int | None = None
    by_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_output: dict[str, dict[str, Any]] = field(default_factory=dict)

    def where(self, node: Any) -> dict[str, Any] | None:
        loc = self.by_node.get(node.name)
        if loc is None:
            loc = next((self.by_output[o] for o in node.output if o in self.by_output), None)
        if loc is None and self.exporter == "legacy" and node.name.startswith("/"):
            # the TorchScript exporter names nodes by their module scope: /head/lin/Gemm is in module head.lin
            scope = [p for p in node.name.strip("/").split("/")[:-1] if p]
            loc = {"module": ".".join(scope) or "(model)", "class": None}
        return loc

    def proto(self) -> Any:
        import onnx

        return onnx.load(str(self.path))


def _why(e: BaseException) -> str:
    if isinstance(e, EdgeSDKError):
        return e.one_line()
    return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"


def export_graph(model: Any, examples: dict[str, Any], work: Path, *, opset: int, exporter: str,
                 dynamic_batch: bool, output_names: list[str]) -> Graph:
    """Export with compress's ONNX exporter (unsimplified, to read the node metadata), then simplify as compress
    does. An ExportError is kept in the Graph with the module it names."""
    import onnx

    from edgesdk.compress.export_onnx import _save, _simplify, name_dims
    from edgesdk.errors import ExportError

    from .where import where_text

    try:
        from edgesdk.compress.export_onnx import export_onnx

        info = export_onnx(model, examples, work / "raw.onnx", opset=opset, exporter=exporter,
                           dynamic_batch=dynamic_batch, simplify=False, output_names=output_names)
    except ExportError as e:
        loc = parse_located(e.found)
        op = re.search(r"ONNX export failed on (\S+)", e.what)
        g = Graph(None, error=e.one_line(), hints=[e.hint] if e.hint else [])
        g.blocked_by.append(Blocker.at(op.group(1) if op else "(export)", f"ONNX export fails: {e.what}", loc))
        if loc:
            g.hints.insert(0, f"the failing call is {where_text(loc)}")
        return g
    except Exception as e:  # noqa: BLE001 - an exporter crash outside ExportError still leaves the other targets
        g = Graph(None, error=f"ONNX export crashed: {_why(e)}",
                  hints=["try the other exporter (--exporter dynamo|legacy) or another opset (--opset)"])
        g.blocked_by.append(Blocker.at("(export)", "ONNX export crashes", None))
        return g
    proto = onnx.load(str(info.path))
    g = Graph(work / "model.onnx", exporter=info.exporter_used, opset=info.opset_written, warnings=list(info.warnings))
    for node in proto.graph.node:
        loc = node_location(node)
        if loc:
            g.by_node[node.name] = loc
            for out in node.output:
                g.by_output[out] = loc
    slim = _simplify(proto, info)
    name_dims(slim, info.dynamic_axes)
    _save(slim, g.path, info.external_data)
    (work / "raw.onnx").unlink(missing_ok=True)
    if not g.by_node:
        g.warnings.append(f"the {info.exporter_used} exporter wrote no node metadata: module paths come from "
                          "the node names (the legacy exporter's /module/path/Op), without classes or source lines")
    return g


def _onnx_blocked(g: Graph, target: str) -> TargetResult:
    """A target fed by the ONNX graph when the export itself failed."""
    from dataclasses import replace

    return TargetResult(target, converts=False, error=f"needs the ONNX export, which failed: {g.error}",
                        blocked_by=[replace(b, problem=f"{target} reads the ONNX graph, whose export fails here")
                                    for b in g.blocked_by], hints=list(g.hints))


def _feeds(examples: dict[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    return {n: examples[n].detach().cpu().numpy() for n in names if n in examples}


# ---- ONNX / onnxruntime -----------------------------------------------------------------------------------

def _default_providers(ort: Any) -> list[str]:
    """The execution providers installed here, preferred first; the TensorRT EP is left to the tensorrt target
    (it builds an engine per session) and the Azure EP runs nothing locally."""
    skip = {"TensorrtExecutionProvider", "AzureExecutionProvider"}
    got = [p for p in ort.get_available_providers() if p not in skip]
    return [p for p in got if p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]


def _ep_assignment(ort: Any, path: Path, providers: list[str], feeds: dict[str, np.ndarray],
                   work: Path) -> tuple[list[tuple[str, str, str]], str, Any]:
    """[(node name, op type, EP)] of the session's final (optimized) graph, the source of that list, and the
    session. onnxruntime >= 1.23 records it on request (``session.record_ep_graph_assignment_info``); older
    releases: the EP of each node in a one-run profile."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    sess = ort.InferenceSession(str(path), so, providers=providers)
    sess.run(None, feeds)
    if hasattr(sess, "get_provider_graph_assignment_info"):
        nodes = [(n.name, n.op_type if not n.domain else f"{n.domain}:{n.op_type}", sg.ep_name)
                 for sg in sess.get_provider_graph_assignment_info() for n in sg.get_nodes()]
        if nodes:  # an empty record: the option was not honoured; the profile answers instead
            return nodes, "onnxruntime InferenceSession.get_provider_graph_assignment_info()", sess
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(work / "ort-profile")
    prof = ort.InferenceSession(str(path), so, providers=providers)
    prof.run(None, feeds)
    events = json.loads(Path(prof.end_profiling()).read_text())
    seen: dict[str, tuple[str, str, str]] = {}
    for ev in events:
        args = ev.get("args") or {}
        if ev.get("cat") == "Node" and "provider" in args:
            name = str(ev.get("name", "")).rsplit("_kernel_time", 1)[0]
            seen.setdefault(name, (name, args.get("op_name", "?"), args["provider"]))
    return list(seen.values()), "onnxruntime profiling (the provider of each node run once)", sess


def _missing(target: str, backend: str) -> TargetResult | None:
    """A record saying the runtime is not installed (with the install command), or None when it is."""
    from edgesdk.runtimes.registry import backend_installed, install_hint

    if backend_installed(backend):
        return None
    return TargetResult(target, error=f"{backend} is not installed here, so {target} cannot be checked",
                        hints=[install_hint(backend)])


def probe_onnx(g: Graph, examples: dict[str, Any], providers: list[str] | None, work: Path) -> TargetResult:
    missing = _missing("onnx", "onnxruntime")
    if missing:
        return missing
    import onnxruntime as ort

    from edgesdk.runtimes.inspect import inspect_artifact

    r = TargetResult("onnx", runtime=f"onnxruntime {ort.__version__}")
    if g.path is None:
        r.error, r.blocked_by, r.hints = g.error, list(g.blocked_by), list(g.hints)
        return r
    r.notes += [f"exported by the {g.exporter} exporter, opset {g.opset}"] + g.warnings
    r.ops = inspect_artifact(g.path).get("ops", {})
    providers = providers or _default_providers(ort)
    proto = g.proto()
    inputs = [i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}]
    try:
        nodes, source, _ = _ep_assignment(ort, g.path, providers, _feeds(examples, inputs), work)
    except Exception as e:  # noqa: BLE001 - onnxruntime refusing the graph is the finding
        r.error = f"onnxruntime cannot load or run the exported graph: {_why(e)}"
        op = re.search(r"(?:op_type|type)[=: ]+'?([A-Za-z]+)'?", str(e))
        if op:
            r.blocked_by += [Blocker.at(n.op_type, "onnxruntime has no kernel for it", g.where(n), n.name)
                             for n in proto.graph.node if n.op_type == op.group(1)]
        r.hints.append("try another opset (--opset 17 or 19) or the other exporter (--exporter legacy|dynamo)")
        return r
    r.converts = True
    per = Counter(ep for _, _, ep in nodes)
    preferred = providers[0]
    off = [(n, op, ep) for n, op, ep in nodes if ep != preferred]
    by_name = {n.name: n for n in proto.graph.node}
    r.coverage = {"source": source, "providers": providers, "preferred": preferred, "total": len(nodes),
                  "nodes_per_provider": dict(per.most_common()),
                  "not_on_preferred": [{"node": n, "op": op, "provider": ep} for n, op, ep in off]}
    for n, op, ep in off:
        node = by_name.get(n)
        r.blocked_by.append(Blocker.at(op, f"runs on {ep}, not {preferred}", g.where(node) if node else None, n))
    r.fully_covered = not off
    if off:
        r.hints.append(f"{len(off)} nodes fall back from {preferred}: "
                       + ", ".join(f"{k} x{v}" for k, v in Counter(op for _, op, _ in off).most_common()))
    if providers == ["CPUExecutionProvider"]:
        r.notes.append("only the CPU execution provider is installed here: every node runs on it")
    return r


# ---- TFLite / LiteRT ---------------------------------------------------------------------------------------

def probe_tflite(model: Any, examples: dict[str, Any], work: Path, *, dynamic_batch: bool,
                 output_names: list[str]) -> TargetResult:
    from edgesdk.compress.export_tflite import INSTALL, _failing_op, available, export_tflite
    from edgesdk.errors import ExportError

    r = TargetResult("tflite")
    if not available():
        r.error = "litert-torch is not installed, so the TFLite conversion cannot be tried"
        r.hints.append(INSTALL)
        return r
    import importlib.metadata

    r.runtime = f"litert-torch {importlib.metadata.version('litert-torch')}"
    path = work / "model.tflite"
    try:
        info = export_tflite(model, examples, path, precision="fp32", dynamic_batch=dynamic_batch,
                             output_names=output_names)
    except ExportError as e:
        r.error = e.one_line()
        op = _failing_op(f"{e.what} {e.found or ''}")
        args = tuple(examples.values())
        loc = locate_op(model, args, op)
        r.blocked_by.append(Blocker.at(op or "(conversion)", "litert-torch has no lowering for it" if op and
                                       "Lowering not found" in (e.found or "") else f"TFLite conversion fails: "
                                       f"{e.found or e.what}", loc))
        r.hints.append(f"rewrite {op} in terms of ops litert-torch lowers, or ship the ONNX artifact for this model"
                       if op else (e.hint or "ship the ONNX artifact for this model"))
        return r
    r.converts = True
    r.notes += info.warnings
    if any("could not keep" in w for w in info.warnings):
        r.hints.append("litert-torch kept only static shapes here: export with a static batch (--static-batch) "
                       "to ship exactly what was checked")
    from edgesdk.runtimes import inspect_artifact, load

    r.ops = inspect_artifact(path).get("ops", {})
    try:
        with load(path, backend="litert") as sess:
            d = sess.delegation
    except EdgeSDKError as e:
        from edgesdk.errors import BackendUnavailableError

        if isinstance(e, BackendUnavailableError):  # converted, but no interpreter here to count delegation
            r.notes.append(f"XNNPACK delegation not measured: {e.one_line()}")
            return r
        r.converts = False
        r.error = f"the LiteRT runtime cannot load the converted file: {e.one_line()}"
        return r
    import ai_edge_litert

    r.runtime += f", ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}"
    if d is None:
        r.notes.append("XNNPACK delegation could not be read from the interpreter")
        return r
    r.coverage = {"source": "LiteRT interpreter (DELEGATE nodes of the XNNPACK delegate)", **d}
    r.fully_covered = d["delegate"] is not None and d["delegated"] == d["total"]
    args = tuple(examples.values())
    for op, n in d["not_delegated"].items():
        # a TFLite file keeps no source locations: the module is guessed by the aten op of the same name
        # (CUMSUM -> aten.cumsum), traced with torch.export; ops without a namesake (PADV2) stay unmapped
        loc = locate_op(model, args, f"aten.{op.lower()}") if len(d["not_delegated"]) <= 8 else None
        r.blocked_by.append(Blocker.at(op, f"{n} node(s) not delegated to XNNPACK (LiteRT's own kernels)"
                                       + ("; module guessed from the op's name" if loc else ""), loc))
    if d["not_delegated"]:
        r.hints.append("the ops left to LiteRT's own kernels split the XNNPACK graph (a hand-over each); rewrite "
                       f"them ({', '.join(d['not_delegated'])}) with ops XNNPACK takes")
    return r


# ---- OpenVINO --------------------------------------------------------------------------------------------

def probe_openvino(g: Graph, devices: list[str] | None) -> TargetResult:
    missing = _missing("openvino", "openvino")
    if missing:
        return missing
    import openvino as ov

    r = TargetResult("openvino", runtime=f"openvino {ov.get_version().split('-')[0]}")
    if g.path is None:
        blocked = _onnx_blocked(g, "openvino")
        blocked.runtime = r.runtime
        return blocked
    core = ov.Core()
    try:
        m = core.read_model(str(g.path))
    except Exception as e:  # noqa: BLE001 - the frontend's refusal is the finding
        text = str(e)
        r.error = "OpenVINO's ONNX frontend cannot convert the graph: " + \
            (" ".join(ln.strip() for ln in text.splitlines() if "conversion rule" in ln or "not supported" in ln)
             or _why(e))
        ops = re.search(r"(?:No conversion rule found for operations|not supported[^:]*):\s*(.+)", text)
        names = {re.sub(r"-\d+$", "", o.strip()) for o in ops.group(1).split(",")} if ops else set()
        for node in g.proto().graph.node:
            if node.op_type in names:
                r.blocked_by.append(Blocker.at(node.op_type, "OpenVINO has no conversion rule for it", g.where(node),
                                               node.name))
        if names:
            r.hints.append(f"rewrite {', '.join(sorted(names))} with ops OpenVINO converts; where the op is only "
                           f"missing at this opset, another one may convert (--opset "
                           f"{17 if (g.opset or 18) >= 18 else 18}); OpenVINO can also convert the PyTorch model "
                           "itself (openvino.convert_model(model, example_input=...))")
        return r
    r.converts = True
    ops = [op for op in m.get_ordered_ops() if op.get_type_name() not in _OV_SKIP]
    r.ops = dict(Counter(op.get_type_name() for op in ops).most_common())
    devices = devices or list(core.available_devices)
    per: dict[str, Any] = {}
    onnx_nodes = {n.name: n for n in g.proto().graph.node}
    for dev in devices:
        try:
            supported = core.query_model(m, dev)
        except Exception as e:  # noqa: BLE001 - a device plugin that cannot answer
            per[dev] = {"error": _why(e), "supported": 0, "total": len(ops), "unsupported": {}}
            continue
        left = [op for op in ops if op.get_friendly_name() not in supported]
        per[dev] = {"supported": len(ops) - len(left), "total": len(ops),
                    "unsupported": dict(Counter(op.get_type_name() for op in left).most_common())}
        if dev == devices[0]:
            for op in left:
                node = onnx_nodes.get(op.get_friendly_name().split("/")[0])
                r.blocked_by.append(Blocker.at(op.get_type_name(), f"not supported on {dev} (query_model)",
                                               g.where(node) if node else None, op.get_friendly_name()))
    r.coverage = {"source": "openvino Core.query_model", "devices": per}
    first = per.get(devices[0], {})
    r.fully_covered = not first.get("error") and first.get("supported") == first.get("total")
    if devices[0] == "CPU" and r.fully_covered:
        try:
            core.compile_model(m, "CPU")
        except Exception as e:  # noqa: BLE001
            r.fully_covered = r.converts = False
            r.error = f"OpenVINO's CPU plugin cannot compile the graph: {_why(e)}"
    return r


# ---- TensorRT --------------------------------------------------------------------------------------------

def tensorrt_table() -> dict[str, Any]:
    """TensorRT 10's documented ONNX operator support, shipped with edgesdk (static: see its ``note``)."""
    return json.loads(_TABLE.read_text())


def _dynamic_inputs(proto: Any) -> list[str]:
    inits = {i.name for i in proto.graph.initializer}
    return [f"{i.name}:{k}" for i in proto.graph.input if i.name not in inits
            for k, d in enumerate(i.type.tensor_type.shape.dim) if not d.HasField("dim_value")]


def _tensorrt_parser(g: Graph, proto: Any) -> TargetResult | None:
    """The real check, with TensorRT's ONNX parser; None when tensorrt cannot build a network here (no GPU)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        from edgesdk.runtimes.tensorrt_build import _network_flags, _parser_error
        from edgesdk.runtimes.tensorrt_env import import_tensorrt

        trt = import_tensorrt()
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, logger)
    except Exception as e:  # noqa: BLE001 - no CUDA device: the static table answers instead
        log.info("TensorRT's parser is not usable here (%s); using the static table", _why(e))
        return None
    r = TargetResult("tensorrt", runtime=f"tensorrt {trt.__version__}")
    data = g.path.read_bytes()
    if hasattr(parser, "supports_model_v2"):
        parser.supports_model_v2(data, str(g.path))
        subgraphs = [(list(parser.get_subgraph_nodes(i)), bool(parser.is_subgraph_supported(i)))
                     for i in range(parser.num_subgraphs)]
    else:
        _, subgraphs = parser.supports_model(data, str(g.path))
    bad = sorted({int(i) for nodes, ok in subgraphs if not ok for i in nodes})
    nodes = list(proto.graph.node)
    ok = parser.parse(data, str(g.path))
    errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    r.converts = bool(ok)
    r.error = "; ".join(errors)[:1000] or None
    for i in bad:
        if i < len(nodes):
            r.blocked_by.append(Blocker.at(nodes[i].op_type, "TensorRT's parser does not support it (supports_model)",
                                           g.where(nodes[i]), nodes[i].name))
    r.coverage = {"source": f"TensorRT {trt.__version__} OnnxParser.supports_model", "static": False,
                  "total": len(nodes), "supported": len(nodes) - len(bad), "subgraphs": len(subgraphs),
                  "unsupported": dict(Counter(nodes[i].op_type for i in bad if i < len(nodes)).most_common())}
    r.fully_covered = r.converts and not bad
    return r


def probe_tensorrt(g: Graph) -> TargetResult:
    if g.path is None:
        return _onnx_blocked(g, "tensorrt")
    proto = g.proto()
    r = _tensorrt_parser(g, proto)
    table = tensorrt_table()
    if r is None:
        r = TargetResult("tensorrt", runtime=f"not installed; {table['source']}")
        supported = set(table["supported"])
        known_bad: dict[str, str | None] = table["unsupported"]
        bad = []
        for node in proto.graph.node:
            custom = node.domain not in ("", "ai.onnx")
            if custom or node.op_type not in supported:
                op = f"{node.domain}:{node.op_type}" if custom else node.op_type
                why = (f"custom-domain op ({node.domain}): not in TensorRT's ONNX operator table" if custom else
                       f"not supported by TensorRT {table['tensorrt_major']}.x's ONNX parser (static table)"
                       if node.op_type in known_bad else
                       f"not in TensorRT {table['tensorrt_major']}.x's ONNX operator table (static)")
                bad.append(node)
                r.blocked_by.append(Blocker.at(op, why, g.where(node), node.name))
                if not custom and known_bad.get(node.op_type):
                    r.hints.append(f"{node.op_type}: {known_bad[node.op_type]}")
        total = len(proto.graph.node)
        r.coverage = {"source": table["source"], "static": True, "table": table["from"], "total": total,
                      "supported": total - len(bad),
                      "unsupported": dict(Counter(b.op for b in r.blocked_by).most_common())}
        r.converts = not bad
        r.fully_covered = not bad
        if bad:
            r.error = (f"{len(bad)} node(s) TensorRT {table['tensorrt_major']}.x's ONNX parser does not support "
                       f"(static table): {', '.join(sorted({b.op for b in r.blocked_by}))}")
            r.hints.append("rewrite those ops with supported ones, or give them a TensorRT plugin; other targets "
                           "are unaffected")
        lo, hi = table.get("opsets", [9, 20])
        if g.opset and not lo <= g.opset <= hi:
            r.converts = r.fully_covered = False
            r.error = (r.error + "; " if r.error else "") + f"the graph is opset {g.opset}, and TensorRT " \
                f"{table['tensorrt_major']}.x's parser reads opsets {lo} to {hi}"
            r.hints.append(f"export another opset for TensorRT: --opset {min(max(g.opset, lo), hi)}")
        try:
            import importlib.metadata

            installed = importlib.metadata.version("tensorrt")
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed and not installed.startswith(f"{table['tensorrt_major']}."):
            r.notes.append(f"tensorrt {installed} is installed but its parser could not run here; the shipped table "
                           f"is for TensorRT {table['tensorrt_major']}.x")
        r.notes.append(f"tensorrt is not installed (or cannot build a network) here: this is a static check "
                       f"against TensorRT {table['tensorrt_major']}.x's documented ONNX operator list "
                       f"(source: {table['source']}), not TensorRT's parser; {table['note']}")
    from edgesdk.runtimes.inspect import inspect_artifact

    r.ops = inspect_artifact(g.path).get("ops", {})
    dyn = _dynamic_inputs(proto)
    if dyn:
        r.notes.append(f"dynamic axes ({', '.join(dyn)}) need an optimization profile (min/opt/max) when the engine "
                       "is built (compress makes one from --trt-batch); static shapes (--static-batch) need none")
    return r


def timed(fn: Callable[..., TargetResult], *args: Any, **kwargs: Any) -> TargetResult:
    """``fn(...)`` with its wall time in the record; an unexpected failure becomes the record's error."""
    t0 = time.perf_counter()
    try:
        r = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - one target's crash must not hide the others' results
        log.debug("check probe %s failed", getattr(fn, "__name__", fn), exc_info=True)
        r = TargetResult(getattr(fn, "__name__", "?").replace("probe_", ""), converts=False,
                         error=f"the check itself failed: {_why(e)}")
    r.seconds = time.perf_counter() - t0
    return r
