"""The records ``edgesdk check`` returns: one TargetResult per target, gathered in a CheckReport keyed by module
path, as JSON (``to_dict``) and Markdown (``to_markdown``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .where import UNMAPPED, where_text

SCHEMA = "edgesdk.check/1"


@dataclass
class Blocker:
    """One op (or node) a target cannot take, and where in the PyTorch model it comes from."""

    op: str
    problem: str
    node: str | None = None
    module: str | None = None  # module path in the model ("(model)": the root module's own forward)
    cls: str | None = None
    file: str | None = None
    line: int | None = None
    code: str | None = None

    @classmethod
    def at(cls_, op: str, problem: str, loc: dict[str, Any] | None, node: str | None = None) -> "Blocker":
        loc = loc or {}
        return cls_(op=op, problem=problem, node=node, module=loc.get("module"), cls=loc.get("class"),
                    file=loc.get("file"), line=loc.get("line"), code=loc.get("code"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class"] = d.pop("cls")
        return d

    def where(self) -> str:
        if not self.module:
            return "(location unknown)"
        return where_text({"module": self.module, "class": self.cls, "file": self.file, "line": self.line,
                           "code": self.code})


@dataclass
class TargetResult:
    """What one target made of the model: whether it converts, what blocks it, how much of it runs accelerated."""

    target: str
    runtime: str | None = None  # "onnxruntime 1.32.0", "openvino 2026.4.1", ...
    converts: bool = False
    error: str | None = None
    blocked_by: list[Blocker] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)
    fully_covered: bool = False
    hints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.converts and self.fully_covered

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocked_by"] = [b.to_dict() for b in self.blocked_by]
        d["hints"] = list(dict.fromkeys(self.hints))
        d["seconds"] = round(self.seconds, 2)
        return d


@dataclass
class CheckReport:
    """Every asked target's TargetResult, and the same problems keyed by module path (``modules``)."""

    model: str
    inputs: dict[str, dict[str, Any]]
    targets: dict[str, TargetResult]
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def fully_covered(self) -> bool:
        """Every asked target converts and runs wholly on its accelerated path."""
        return all(t.ok for t in self.targets.values())

    @property
    def exit_code(self) -> int:
        """0: every asked target fully covered; 1: something falls back or fails to convert."""
        return 0 if self.fully_covered else 1

    def modules(self) -> dict[str, dict[str, Any]]:
        """module path -> its class, source line and the problems each target has with it."""
        out: dict[str, dict[str, Any]] = {}
        for name, t in self.targets.items():
            for b in t.blocked_by:
                key = b.module or UNMAPPED
                entry = out.setdefault(key, {"class": b.cls, "file": b.file, "line": b.line, "code": b.code,
                                             "issues": []})
                for k, v in (("class", b.cls), ("file", b.file), ("line", b.line), ("code", b.code)):
                    if entry[k] is None:
                        entry[k] = v
                issue = {"target": name, "op": b.op, "problem": b.problem}
                if b.node:
                    issue["node"] = b.node
                if issue not in entry["issues"]:
                    entry["issues"].append(issue)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "inputs": self.inputs, "fully_covered": self.fully_covered,
                "exit_code": self.exit_code, "targets": {k: v.to_dict() for k, v in self.targets.items()},
                "modules": self.modules(), "versions": self.versions, "notes": self.notes}

    def to_markdown(self) -> str:
        return to_markdown(self.to_dict())


def _coverage_text(name: str, t: dict[str, Any]) -> str:
    c = t.get("coverage") or {}
    if not c:
        return "-"
    if name == "onnx" and "nodes_per_provider" in c:
        per = ", ".join(f"{n} on {ep}" for ep, n in c["nodes_per_provider"].items())
        return f"{per} (of {c.get('total', 0)} nodes)"
    if name == "tflite" and "delegated" in c:
        return f"{c['delegated']}/{c['total']} nodes delegated to {c.get('delegate') or 'no delegate'}"
    if name == "openvino" and "devices" in c:
        return "; ".join(f"{dev}: {d['supported']}/{d['total']} ops" for dev, d in c["devices"].items())
    if name == "tensorrt" and "total" in c:
        return f"{c['supported']}/{c['total']} nodes ({c.get('source', '')})"
    return "-"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a table of the targets, then the blocking modules, then the hints."""
    lines = [f"# edgesdk check: {report['model']}", ""]
    shapes = ", ".join(f"{k}: {v.get('dtype')}[{'x'.join(map(str, v.get('shape', [])))}]"
                       for k, v in report["inputs"].items())
    lines += [f"Inputs: {shapes}", "",
              f"**{'Every target is fully covered.' if report['fully_covered'] else 'Not every target is fully covered.'}**",
              "", "| target | runtime | converts | coverage | fully covered |", "|---|---|---|---|---|"]
    for name, t in report["targets"].items():
        lines.append(f"| {name} | {_cell(t.get('runtime') or '-')} | {'yes' if t['converts'] else 'no'} | "
                     f"{_cell(_coverage_text(name, t))} | {'yes' if t['fully_covered'] else 'no'} |")
    errors = [(n, t["error"]) for n, t in report["targets"].items() if t.get("error")]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- **{n}**: {_cell(e)}" for n, e in errors]
    if report["modules"]:
        lines += ["", "## By module", "", "| module | class | where | target | op | problem |",
                  "|---|---|---|---|---|---|"]
        for path, m in report["modules"].items():
            where = f"{m['file']}:{m['line']}: `{m.get('code') or ''}`" if m.get("file") else "-"
            for i in m["issues"]:
                lines.append(f"| `{_cell(path)}` | {_cell(m.get('class') or '-')} | {_cell(where)} | {i['target']} | "
                             f"{_cell(i['op'])} | {_cell(i['problem'])} |")
    hints = [(n, h) for n, t in report["targets"].items() for h in t.get("hints", [])]
    if hints:
        lines += ["", "## Hints", ""]
        lines += [f"- **{n}**: {_cell(h)}" for n, h in hints]
    notes = [(n, h) for n, t in report["targets"].items() for h in t.get("notes", [])] + \
        [("check", n) for n in report.get("notes", [])]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{n}**: {_cell(h)}" for n, h in notes]
    return "\n".join(lines) + "\n"
