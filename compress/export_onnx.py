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


def _export_dynamo(model: Any, args: tuple, names: list[str], out_names: list[str], opset: int,
                   dynamic_batch: bool) -> Any:
    import torch

    dyn = {n: {0: torch.export.Dim("batch")} for n in names} if dynamic_batch else None
    # Positional args: dynamic_shapes keyed by forward's parameter names would break for
    # models whose arg names differ from our input names, so pass a tuple in order.
    shapes = tuple(dyn[n] for n in names) if dyn else None
    prog = torch.onnx.export(model, args, None, dynamo=True, input_names=names, output_names=out_names,
                             opset_version=opset, dynamic_shapes=shapes, verbose=False, optimize=True)
    return prog.model_proto


def _export_legacy(model: Any, args: tuple, names: list[str], out_names: list[str], opset: int,
                   dynamic_batch: bool) -> Any:
    import onnx
    import torch

    buf = io.BytesIO()
    axes = {n: {0: "batch"} for n in [*names, *out_names]} if dynamic_batch else None
    torch.onnx.export(model, args, buf, dynamo=False, input_names=names, output_names=out_names,
                      opset_version=opset, dynamic_axes=axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _batch_is_fixed(vi: Any) -> bool:
    dims = vi.type.tensor_type.shape.dim
    return bool(dims) and dims[0].HasField("dim_value")


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _name_batch_dim(model: Any, names: list[str]) -> None:
    """Call the first dim of every graph input/output 'batch' when it is symbolic."""
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _param_bytes(model: Any) -> int:
    import torch

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
                 dynamic_batch: bool, exporter: str) -> tuple[Any, str]:
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
                    proto = _export_legacy(model, args, names, out_names, opset, dynamic_batch)
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
                output_names: list[str] | None = None) -> ExportInfo:
    """Export ``model`` to ``path``; raise ExportError naming the op when every exporter fails."""
    import onnx
    import torch

    path = Path(path)
    names = list(example_inputs)
    args = tuple(example_inputs[n] for n in names)
    if dynamic_batch and all(a.shape[0] == 1 for a in args):
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
    order = {"auto": ["dynamo", "legacy"], "dynamo": ["dynamo"], "legacy": ["legacy"]}[exporter]
    fns = {"dynamo": _export_dynamo, "legacy": _export_legacy}
    t0 = time.perf_counter()
    errors: dict[str, str] = {}
    details: dict[str, str] = {}
    proto, used = None, None
    for name in order:
        try:
            with _quiet() as said:
                proto = fns[name](model, args, names, out_names, opset, dynamic_batch)
            fixed = [vi.name for vi in proto.graph.input if dynamic_batch and _batch_is_fixed(vi)]
            if fixed:
                raise ExportError(f"the {name} exporter fixed the batch dimension of {', '.join(fixed)}",
                                  hint="export with --static-batch, or check the model for batch-size-specific code")
            used = name
            break
        except Exception as e:  # exporters raise many unrelated types; each is recorded and reported
            errors[name] = _first_line(e)
            details[name] = f"{e}\n{said.getvalue()}"
            log.warning("the %s exporter failed: %s", name, errors[name])
    if proto is None:
        op = next((o for o in (_failing_op(_ANSI.sub("", details[n])) for n in order) if o), None)
        where = _locate_op(model, args, op) if op else None
        raise ExportError(
            f"ONNX export failed{f' on {op}' if op else ''} with " + " and ".join(f"the {n} exporter" for n in order),
            found="\n            ".join(([f"called from {where}"] if where else [])
                                       + [f"{n}: {errors[n]}" for n in order]),
            hint=(f"try another opset (--opset {opset + 1 if opset < 20 else 17}), the other exporter "
                  "(--exporter dynamo|legacy), or rewrite the op with supported ones"
                  + (f" (the op is {op})" if op else "")))
    info = ExportInfo(path=path, exporter_used=used, opset_requested=opset, opset_written=_opset(proto),
                      input_names=names, output_names=out_names)
    if len(errors) and used != order[0]:
        info.fallback_reason = errors[order[0]]
        info.warnings.append(f"the {order[0]} exporter failed ({errors[order[0]]}); used the {used} exporter")
    if info.opset_written != opset:
        proto, used = _match_opset(proto, info, model, args, names, out_names, dynamic_batch, exporter)
    if dynamic_batch:
        _name_batch_dim(proto, names)
    if simplify:
        try:
            import onnxslim

            with _quiet():
                slim = onnxslim.slim(proto)
            if slim is not None:
                proto = slim
                info.simplified = True
        except Exception as e:  # onnxslim failures must not lose the export
            info.simplify_error = _first_line(e)
            info.warnings.append(f"onnxslim failed ({info.simplify_error}); kept the unsimplified graph")
            log.warning(info.warnings[-1])
        if dynamic_batch:
            _name_batch_dim(proto, names)
    info.external_data = _param_bytes(model) > TWO_GB
    _save(proto, path, info.external_data)
    try:
        onnx.checker.check_model(str(path) if info.external_data else proto)
    except onnx.checker.ValidationError as e:
        path.unlink(missing_ok=True)
        raise ExportError(f"the exported graph fails onnx.checker ({used} exporter)", found=_first_line(e),
                          hint="try the other exporter (--exporter) or another --opset") from e
    info.export_time_s = time.perf_counter() - t0
    return info


def _save(proto: Any, path: Path, external: bool) -> None:
    """Write atomically: temp name in the same dir, then os.replace (data file first when external)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
