"""Where in the user's PyTorch model a graph node or a failing op comes from: module path, class, file:line and
the code line.

Two sources: the torch dynamo ONNX exporter's node metadata (``pkg.torch.onnx.name_scopes``,
``pkg.torch.onnx.class_hierarchy``, ``pkg.torch.onnx.stack_trace``), and, for an exporter failure, the
location ``edgesdk.compress.export_onnx`` finds by tracing with torch.export (the text "module `head` (Head),
model.py:5: code", parsed back here).

Example::

    node_location(onnx_node)   # {"module": "head.det", "class": "DetHead", "file": "m.py", "line": 12, "code": ...}
"""
from __future__ import annotations

import ast
import re
from typing import Any

UNMAPPED = "(unmapped)"  # the key of nodes no module path could be found for

_LOCATED = re.compile(r"module `(?P<module>[^`]*)` \((?P<cls>[^)]*)\)(?:, (?P<file>.+?):(?P<line>\d+): (?P<code>.*))?")
_FILE_ONLY = re.compile(r"^(?P<file>[^\s,][^,]*?):(?P<line>\d+): (?P<code>.*)$")
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')


def _listish(text: str | None) -> list[str]:
    """A metadata value written as a Python/JSON list of strings, or a plain string, as a list."""
    if not text:
        return []
    text = text.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        except (ValueError, SyntaxError):
            pass
    return [text]


def _user_frame(stack: str) -> tuple[str, int, str] | None:
    """The innermost frame of a stack trace that is not in torch itself (the user's code line)."""
    frames = [(f, int(n), c.strip()) for f, n, c in _FRAME.findall(stack or "")]
    user = [fr for fr in frames if "/torch/" not in fr[0].replace("\\", "/")]
    return (user or frames or [None])[-1]


def node_location(node: Any) -> dict[str, Any] | None:
    """The module path, class and source line of an ONNX node from the dynamo exporter's metadata; None when the
    node carries none (the legacy exporter; onnxslim drops it, so read it before simplifying)."""
    meta = {p.key: p.value for p in getattr(node, "metadata_props", [])}
    scopes = _listish(meta.get("pkg.torch.onnx.name_scopes"))
    classes = _listish(meta.get("pkg.torch.onnx.class_hierarchy"))
    stack = meta.get("pkg.torch.onnx.stack_trace", "")
    if not scopes and not stack:
        return None
    # torch 2.13 writes one entry per nesting level, each the full module path, the node's own op last:
    # name_scopes ['', 'a', 'a.1', 'relu_1'], class_hierarchy ['pkg.Net', '...Sequential', '...ReLU', 'aten.relu.default']
    module = scopes[-2] if len(scopes) >= 3 else ""
    cls = classes[-2] if len(classes) >= 2 else (classes[0] if classes else None)
    out: dict[str, Any] = {"module": module or "(model)", "class": cls.rsplit(".", 1)[-1] if cls else None}
    frame = _user_frame(stack)
    if frame:
        out.update(file=frame[0], line=frame[1], code=frame[2])
    return out


def parse_located(text: str | None) -> dict[str, Any] | None:
    """A location as edgesdk's exporters write it ("module `head` (Head), /x/model.py:5: return ..."), as a dict."""
    if not text:
        return None
    m = _LOCATED.search(text)
    if m:
        out: dict[str, Any] = {"module": m.group("module") or "(model)", "class": m.group("cls") or None}
        if m.group("file"):
            out.update(file=m.group("file"), line=int(m.group("line")), code=m.group("code").strip())
        return out
    m = _FILE_ONLY.search(text.strip())
    if m:
        return {"module": "(model)", "class": None, "file": m.group("file"), "line": int(m.group("line")),
                "code": m.group("code").strip()}
    return None


def locate_op(model: Any, args: tuple, op: str | None) -> dict[str, Any] | None:
    """Where ``op`` (an aten name from an exporter's message) is called in ``model``, traced with torch.export
    by the ONNX exporter's own locator; None when it cannot be found."""
    if not op:
        return None
    from edgesdk.compress.export_onnx import _locate_op

    # litert-torch names the decomposed overload (aten._linalg_det.default) where the traced graph holds the
    # public op (aten.linalg_det): try the name without its leading underscore too
    for name in dict.fromkeys((op, re.sub(r"(^|[.:])_+", r"\1", op))):
        found = parse_located(_locate_op(model, args, name))
        if found:
            if found["module"] == "(model)" and not found.get("class"):  # the root module's own forward
                from edgesdk.binding import unwrap

                found["class"] = type(unwrap(model)).__name__
            return found
    return None


def where_text(loc: dict[str, Any] | None) -> str:
    """One line: "module `head` (Head), model.py:5: return torch.linalg.det(m)"."""
    if not loc:
        return "(location unknown)"
    parts = [f"module `{loc['module']}`" + (f" ({loc['class']})" if loc.get("class") else "")]
    if loc.get("file"):
        parts.append(f"{loc['file']}:{loc['line']}: {loc.get('code', '')}".rstrip(": "))
    return ", ".join(parts)
