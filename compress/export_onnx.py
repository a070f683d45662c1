"""PyTorch -> ONNX export: dynamo exporter first, legacy TorchScript exporter as a logged fallback.

The result is one self-contained ``.onnx`` file (external data only above 2 GB), with a
dynamic batch named ``batch``, simplified by onnxslim and checked by ``onnx.checker``.

Example::

    info = export_onnx(model, {"x": torch.rand(1, 3, 224, 224)}, "model.onnx", opset=18)
    info.exporter_used, info.opset_written, info.warnings
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgesdk.errors import ExportError

log = logging.getLogger(__name__)
TWO_GB = 2 * 1024**3


@dataclass
class ExportInfo:
    """What the exporter did, for the manifest."""

    path: Path
    exporter_used: str
    opset_requested: int
    opset_written: int
    input_names: list[str]
    output_names: list[str]
    fallback_reason: str | None = None
    simplified: bool = False
    simplify_error: str | None = None
    external_data: bool = False
    export_time_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # what came out symbolic


_NOISY_LOGGERS = ("torch", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "onnxslim",
                  "torchao", "absl", "litert_torch", "ai_edge_quantizer", "root")


@contextlib.contextmanager
def _native_output_captured(buf: io.StringIO) -> Iterator[None]:
    """Send what native code writes to fds 1 and 2 (the legacy exporter prints its whole TorchScript graph
    there on failure) into ``buf`` instead of the user's terminal."""
    import sys

    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable fds (embedded interpreters): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            for stream in (sys.__stdout__, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            buf.write(tmp.read().decode("utf-8", "replace"))


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Keep the exporters' prints, warnings, log lines and native output out of the user's console; return
    what they said."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with _native_output_captured(buf), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


_OP_PATTERNS = (
    r"(aten::[A-Za-z_0-9.]+)",
    r"(aten\.[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?)",
    r"operator ([A-Za-z_:0-9.]+)",
    r"'(torch\.[A-Za-z_0-9.]+)'",
)


def _failing_op(text: str) -> str | None:
    for pat in _OP_PATTERNS:
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY_CLASS = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>: (.*)")


def _first_line(e: BaseException) -> str:
    """``Type: first line`` of an exception; for the dynamo exporter's long ConversionError, the root cause
    from its "Exception summary" instead of its generic first line."""
    text = _ANSI.sub("", str(e)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "## Exception summary" in text:
        for ln in text.split("## Exception summary", 1)[1].splitlines():
            m = _SUMMARY_CLASS.match(ln.strip())
            if m:
                msg = re.sub(r"<OpOverload\(op='([^']+)', overload='[^']*'\)>", r"\1", m.group(2))
                return f"{m.group(1)}: {msg[:300]}"
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _op_base(op: str) -> str:
    """'aten::linalg_eigvals' / 'aten.linalg_eig.default' / 'torch.linalg.eig' -> the bare op name."""
    name = re.split(r"::|\.", op.replace("torch.ops.", ""))
    name = [p for p in name if p not in ("aten", "prims", "torch", "default", "Tensor", "")]
    return name[0] if name else op


def _locate_op(model: Any, args: tuple, op: str) -> str | None:
    """Where in the user's model ``op`` is called: "module `head` (Head), model.py:5: <code>".

    Traces with torch.export (non-strict), which keeps each node's module path and source line; None when
    that trace fails too or the op is not found (decompositions can rename it)."""
    import torch

    base = _op_base(op)
    try:
        with _quiet():
            graph = torch.export.export(model, args, strict=False).graph
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return None
    nodes = [n for n in graph.nodes if n.op == "call_function"]
    names = {n: _op_base(str(n.target)) for n in nodes}
    hit = next((n for n in nodes if names[n] == base), None) or \
        next((n for n in nodes if names[n].startswith(base) or base.startswith(names[n])), None)
    if hit is None:
        return None
    parts = []
    stack = list((hit.meta.get("nn_module_stack") or {}).values())
    if stack and stack[-1][0]:
        path, cls = stack[-1][0], stack[-1][1] if isinstance(stack[-1][1], str) else getattr(stack[-1][1], "__name__", "")
        path = re.sub(r"^L\['self'\]\.?|\._modules\['([^']+)'\]", lambda m: f".{m.group(1)}" if m.group(1) else "",
                      str(path)).lstrip(".")
        parts.append(f"module `{path}` ({str(cls).rsplit('.', 1)[-1]})")
    frames = re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s*(.*)', hit.meta.get("stack_trace") or "")
    if frames:
        file, line, code = frames[-1]
        parts.append(f"{file}:{line}: {code.strip()}")
    return ", ".join(parts) or None


Axes = dict[str, dict[int, str]]  # input -> axis -> symbol


def dynamic_shapes(model: Any, names: list[str], axes: Axes, auto: set[tuple[str, int]] = frozenset()) -> Any:
    """torch.export ``dynamic_shapes`` for positional inputs ``names``: every axis in ``axes`` is
    ``Dim.DYNAMIC`` (the exporter finds which are equal; it raises when the model fixes one), those in
    ``auto`` ``Dim.AUTO`` (kept static when the model needs it, which the caller reads back). The inputs a
    ``*args`` parameter takes (the keyword adapter, the channels-last wrapper) are one tuple, as torch.export
    expects."""
    import inspect

    from torch.export import Dim

    per_input = tuple({a: (Dim.AUTO if (n, a) in auto else Dim.DYNAMIC) for a in axes.get(n, {})} or None
                      for n in names)
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind is not inspect.Parameter.VAR_KEYWORD]
    star = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    if star is not None and star <= len(per_input):  # the named parameters one each, then *args as one tuple
        return (*per_input[:star], tuple(per_input[star:]))
    return per_input


def _export_dynamo(model: Any, args: tuple, names: list[str], out_names: list[str], opset: int,
                   axes: Axes, auto: set[tuple[str, int]]) -> Any:
    import torch

    # positional args in forward()'s order (the inputs were bound by name before): a dict of dynamic shapes
    # keyed by parameter name would not fit a forward(*args) adapter
    shapes = dynamic_shapes(model, names, axes, auto) if any(axes.values()) else None
    prog = torch.onnx.export(model, args, None, dynamo=True, input_names=names, output_names=out_names,
                             opset_version=opset, dynamic_shapes=shapes, verbose=False, optimize=True)
    return prog.model_proto


def _export_legacy(model: Any, args: tuple, names: list[str], out_names: list[str], opset: int,
                   axes: Axes, auto: set[tuple[str, int]]) -> Any:
    import onnx
    import torch

    buf = io.BytesIO()
    dyn: dict[str, dict[int, str]] = {n: dict(a) for n, a in axes.items() if a}
    if any(0 in a for a in axes.values()):
        dyn.update({n: {0: "batch"} for n in out_names})
    torch.onnx.export(model, args, buf, dynamo=False, input_names=names, output_names=out_names,
                      opset_version=opset, dynamic_axes=dyn or None, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _dims_of(vi: Any) -> list[Any]:
    return list(vi.type.tensor_type.shape.dim)


def name_dims(model: Any, axes: Axes) -> Axes:
    """Give the graph's symbolic dims our names, and return which asked-for axes are symbolic.

    Axes the exporter found equal share its dim_param; they all take the symbol of the first of them, and
    axes asked for under one symbol keep it (``input_ids`` and ``attention_mask`` share ``sequence``). Every other occurrence of that dim_param
    (outputs, value_info) is renamed the same way. An axis that came out as a fixed number is left out
    of the result."""
    rename: dict[str, str] = {}
    got: Axes = {}
    inputs = {vi.name: vi for vi in model.graph.input}
    for name, wanted in axes.items():
        vi = inputs.get(name)
        if vi is None:  # the exporter dropped an input the model never reads
            continue
        dims = _dims_of(vi)
        for axis, symbol in sorted(wanted.items()):
            if axis >= len(dims) or dims[axis].HasField("dim_value"):
                continue
            old = dims[axis].dim_param or f"unk__{name}_{axis}"
            # one symbol per exporter dim_param (axes it found equal share the first one's); axes asked for
            # under one symbol keep it even where the exporter did not need them equal
            got.setdefault(name, {})[axis] = rename.setdefault(old, symbol)
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for d in _dims_of(vi):
            if d.HasField("dim_param") and d.dim_param in rename:
                d.dim_param = rename[d.dim_param]
    for name, got_axes in got.items():  # inputs without a dim_param before (unk__) get theirs now
        dims = _dims_of(inputs[name])
        for axis, symbol in got_axes.items():
            dims[axis].dim_param = symbol
    return got


def _param_bytes(model: Any) -> int:

    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())


def _checks(proto: Any) -> str | None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        return _first_line(e)
    return None


def _match_opset(proto: Any, info: ExportInfo, model: Any, args: tuple, names: list[str], out_names: list[str],
                 axes: Axes, auto: set[tuple[str, int]], exporter: str) -> tuple[Any, str]:
    """The dynamo exporter writes opset 18 even when asked for less: convert down, else re-export with legacy."""
    import onnx

    opset, wrote, used = info.opset_requested, info.opset_written, info.exporter_used
    msg = f"asked for opset {opset} but the {used} exporter wrote opset {wrote}"
    if wrote > opset:
        try:
            with _quiet():
                converted = onnx.version_converter.convert_version(proto, opset)
            problem = _checks(converted)
        except Exception as e:  # the converter raises RuntimeError/ValidationError for missing adapters
            problem = _first_line(e)
        if problem is None:
            proto = converted
            msg += f"; converted it down to {opset}"
        elif used == "dynamo" and exporter == "auto":
            try:
                with _quiet():
                    proto = _export_legacy(model, args, names, out_names, opset, axes, auto)
                used = info.exporter_used = "legacy"
                info.fallback_reason = f"dynamo wrote opset {wrote}; converting to {opset} failed ({problem})"
                msg += f"; converting down failed ({problem}), so the legacy exporter wrote opset {opset}"
            except Exception as e:  # keep the valid dynamo model rather than nothing
                msg += (f"; converting down failed ({problem}) and the legacy exporter failed ({_first_line(e)}); "
                        f"kept opset {wrote}")
        else:
            msg += f"; converting down failed ({problem}); kept opset {wrote}"
    info.opset_written = _opset(proto)
    info.warnings.append(msg)
    log.warning(msg)
    return proto, used


def export_onnx(model: Any, example_inputs: dict[str, Any], path: str | Path, *, opset: int = 18,
                dynamic_batch: bool = True, simplify: bool = True, exporter: str = "auto",
                output_names: list[str] | None = None, dynamic_axes: Axes | None = None,
                auto_axes: set[tuple[str, int]] | frozenset = frozenset()) -> ExportInfo:
    """Export ``model`` to ``path``; raise ExportError naming the op when every exporter fails.

    ``example_inputs`` are in forward()'s order (see edgesdk.binding). ``dynamic_axes``: input -> axis ->
    symbol for the axes to keep dynamic (default: the batch, when ``dynamic_batch``); those in ``auto_axes``
    may come out fixed when the model needs it (``info.dynamic_axes`` says what came out symbolic).
    """
    import torch

    path = Path(path)
    names = list(example_inputs)
    axes: Axes = ({n: dict(a) for n, a in dynamic_axes.items()} if dynamic_axes is not None else
                  {n: {0: "batch"} for n in names} if dynamic_batch else {})
    args = tuple(example_inputs[n] for n in names)
    if any(0 in a for a in axes.values()) and all(a.shape[0] == 1 for a in args):
        # torch.export specialises size-1 dims; a batch of 2 keeps the batch symbolic.
        args = tuple(torch.cat([a, a]) for a in args)
    with torch.inference_mode(False), torch.no_grad():
        with _quiet():
            sample = model(*args)
    n_out = 1 if isinstance(sample, torch.Tensor) else len(sample)
    out_names = list(output_names) if output_names else (["output"] if n_out == 1 else
                                                         [f"output_{i}" for i in range(n_out)])
    if len(out_names) != n_out:
        raise ExportError("output names do not match the model's outputs", expected=f"{n_out} names",
                          found=", ".join(out_names))
    t0 = time.perf_counter()
    proto, used, errors = _run_exporters(model, args, names, out_names, opset, axes, set(auto_axes), exporter)
    info = ExportInfo(path=path, exporter_used=used, opset_requested=opset, opset_written=_opset(proto),
                      input_names=names, output_names=out_names)
    first = _ORDER[exporter][0]
    if errors and used != first:
        info.fallback_reason = errors[first]
        info.warnings.append(f"the {first} exporter failed ({errors[first]}); used the {used} exporter")
    if info.opset_written != opset:
        proto, used = _match_opset(proto, info, model, args, names, out_names, axes, set(auto_axes), exporter)
    info.dynamic_axes = name_dims(proto, axes)
    if simplify:
        proto = keep_provenance(proto, _simplify(proto, info))
        info.dynamic_axes = name_dims(proto, info.dynamic_axes)  # onnxslim may fold a dim the model fixes
    _check_fixed(info, axes, set(auto_axes))
    info.external_data = _param_bytes(model) > TWO_GB
    _save(proto, path, info.external_data)
    _check_saved(proto, path, info, used)
    info.export_time_s = time.perf_counter() - t0
    return info


_ORDER = {"auto": ["dynamo", "legacy"], "dynamo": ["dynamo"], "legacy": ["legacy"]}


def _run_exporters(model: Any, args: tuple, names: list[str], out_names: list[str], opset: int, axes: Axes,
                   auto: set[tuple[str, int]], exporter: str) -> tuple[Any, str, dict[str, str]]:
    """Try the exporters in order; the first graph that keeps every asked-for axis dynamic wins."""
    fns = {"dynamo": _export_dynamo, "legacy": _export_legacy}
    order = _ORDER[exporter]
    errors: dict[str, str] = {}
    details: dict[str, str] = {}
    for name in order:
        try:
            with _quiet() as said:
                proto = fns[name](model, args, names, out_names, opset, axes, auto)
            fixed = _fixed_axes(proto, axes, auto)
            if fixed:
                raise ExportError(f"the {name} exporter fixed {', '.join(fixed)}", hint=_FIXED_HINT)
            return proto, name, errors
        except Exception as e:  # exporters raise many unrelated types; each is recorded and reported
            errors[name] = _first_line(e)
            details[name] = f"{e}\n{said.getvalue()}"
            log.warning("the %s exporter failed: %s", name, errors[name])
    op = next((o for o in (_failing_op(_ANSI.sub("", details[n])) for n in order) if o), None)
    where = _locate_op(model, args, op) if op else None
    raise ExportError(
        f"ONNX export failed{f' on {op}' if op else ''} with " + " and ".join(f"the {n} exporter" for n in order),
        found="\n            ".join(([f"called from {where}"] if where else [])
                                   + [f"{n}: {errors[n]}" for n in order]),
        hint=(f"try another opset (--opset {opset + 1 if opset < 20 else 17}), the other exporter "
              "(--exporter dynamo|legacy), or rewrite the op with supported ones" + (f" (the op is {op})" if op else "")
              + ("; if the message is about a constraint or a specialized dimension, a dynamic axis the model "
                 "cannot take: " + _FIXED_HINT if any(a for a in axes.values()) else "")))


_FIXED_HINT = ("export with --static-batch (or drop that axis from --dynamic-dims / the symbol from --input), "
               "or check the model for size-specific code (a view or Linear over that axis)")


def _fixed_axes(proto: Any, axes: Axes, auto: set[tuple[str, int]]) -> list[str]:
    """Asked-for dynamic axes (not in ``auto``) that the graph has as fixed numbers."""
    inputs = {vi.name: _dims_of(vi) for vi in proto.graph.input}
    return [f"{'the batch dimension' if a == 0 else f'dim {a} ({sym})'} of {n}"
            for n, ax in axes.items() if n in inputs for a, sym in sorted(ax.items())
            if (n, a) not in auto and a < len(inputs[n]) and inputs[n][a].HasField("dim_value")]


def _check_fixed(info: ExportInfo, axes: Axes, auto: set[tuple[str, int]]) -> None:
    """Say which optional dynamic axes (token sequences) the model fixed, and why that matters."""
    for n, ax in axes.items():
        for a, sym in ax.items():
            if (n, a) in auto and a not in info.dynamic_axes.get(n, {}) and n in info.input_names:
                info.warnings.append(f"{n}:{a} ({sym}) stays fixed: the model needs that size (a view, a Linear "
                                     "or a position table sized to it)")


# what the torch exporter records per node and ``edgesdk debug`` maps tensors back to modules with (the module
# path and the classes); not its stack trace, which holds this machine's absolute paths
PROVENANCE_KEYS = ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")


def keep_provenance(before: Any, after: Any) -> Any:
    """Put the exporter's provenance back on the nodes of ``after`` (a rewritten graph: onnxslim drops node
    metadata) that produce a tensor of the same name as a node of ``before``; returns ``after``."""
    src = {}
    for n in before.graph.node:
        props = [(p.key, p.value) for p in n.metadata_props if p.key in PROVENANCE_KEYS]
        if props:
            for out in n.output:
                src[out] = props
    for n in after.graph.node:
        have = {p.key for p in n.metadata_props}
        for key, value in next((src[o] for o in n.output if o in src), []):
            if key not in have:
                prop = n.metadata_props.add()
                prop.key, prop.value = key, value
    return after


def _simplify(proto: Any, info: ExportInfo) -> Any:
    try:
        import onnxslim

        with _quiet():
            slim = onnxslim.slim(proto)
        if slim is not None:
            info.simplified = True
            return slim
    except Exception as e:  # onnxslim failures must not lose the export
        info.simplify_error = _first_line(e)
        info.warnings.append(f"onnxslim failed ({info.simplify_error}); kept the unsimplified graph")
        log.warning(info.warnings[-1])
    return proto


def _check_saved(proto: Any, path: Path, info: ExportInfo, used: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path) if info.external_data else proto)
    except onnx.checker.ValidationError as e:
        path.unlink(missing_ok=True)
        raise ExportError(f"the exported graph fails onnx.checker ({used} exporter)", found=_first_line(e),
                          hint="try the other exporter (--exporter) or another --opset") from e


def _save(proto: Any, path: Path, external: bool) -> None:
    """Write atomically: temp name in the same dir, then os.replace (data file first when external)."""
    import onnx

    from edgesdk.atomic import temp_file_beside

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)  # 0666 & ~umask, as every other artifact (mkstemp makes 0600)
    os.close(fd)
    try:
        if external:
            onnx.save_model(proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{path.name}.data", size_threshold=1024)
        else:
            onnx.save_model(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
