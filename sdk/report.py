"""Reports: ``report.json`` is the source of truth; Markdown is a view of it.

Schema (documented in docs/report-schema.md)::

    {schema_version, edgesdk_version, created, device, recipe, baseline, artifacts, results}

Example::

    report = load_report("out/report.json")
    print(to_markdown(report))
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from .errors import InputError

REPORT_SCHEMA_VERSION = 1


def build_report(*, device: dict[str, Any], results: list[dict[str, Any]], recipe: dict[str, Any] | None = None,
                 artifacts: list[dict[str, Any]] | None = None,
                 baseline: dict[str, Any] | None = None, calibration: str | None = None) -> dict[str, Any]:
    """Assemble a report dict (see module docstring for the schema)."""
    from . import __version__

    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "edgesdk_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "recipe": recipe,
        "baseline": baseline,
        "calibration": calibration,
        "artifacts": artifacts or [],
        "results": results,
    }


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and check a report.json; clear errors for missing, non-JSON or foreign files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"report file not found: {p}", hint="pass the report.json written by compress or benchmark")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p} is not a JSON report", expected="a report.json written by edgesdk",
                         found=f"{type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or "results" not in data or "schema_version" not in data:
        raise InputError(f"{p} is not an edgesdk report", expected="a JSON object with schema_version and results",
                         found=f"keys: {', '.join(sorted(data)[:10]) if isinstance(data, dict) else type(data).__name__}")
    if data["schema_version"] != REPORT_SCHEMA_VERSION:
        raise InputError(f"{p} has report schema version {data['schema_version']}",
                         expected=f"schema version {REPORT_SCHEMA_VERSION}",
                         hint="re-run the benchmark with this edgesdk version")
    return data


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(v: Any, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _parity_cell(row: dict[str, Any], artifacts: dict[str, dict[str, Any]]) -> str:
    art = artifacts.get(row.get("artifact", ""))
    if art is None or not art.get("parity"):
        return "reference" if row.get("format") == "torch" else "-"
    p = art["parity"]
    other = ((art.get("meta") or {}).get("parity_by_backend") or {}).get(row.get("backend"))
    if other is not None:
        p = other
    mark = "pass" if p.get("passed") else "**FAIL**"
    return f"{mark} (max abs {p.get('max_abs_err', 0):.1e}, cos {p.get('cosine', 0):.6f})"


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The report table as rows of display strings (used by Markdown and the CLI)."""
    artifacts = {a["name"]: a for a in report.get("artifacts", [])}
    rows = []
    for r in report.get("results", []):
        lat = r.get("latency_ms", {})
        rows.append({
            "artifact": r.get("artifact", "?"),
            "backend": r.get("backend", "?"),
            "format": r.get("format", "?"),
            "precision": r.get("precision", "?"),
            "batch": str(r.get("batch", "?")),
            "size": _fmt_size(r.get("size_bytes")),
            "p50 ms": _fmt(lat.get("p50")),
            "p90 ms": _fmt(lat.get("p90")),
            "p99 ms": _fmt(lat.get("p99")),
            "throughput/s": _fmt(r.get("throughput"), ".1f"),
            "speed-up": _fmt(r.get("speedup_vs_baseline"), ".2f", "x"),
            "parity": _parity_cell(r, artifacts),
            "accuracy": _fmt(r.get("accuracy"), ".2f", "%"),
        })
    return rows


def _steps_table(report: dict[str, Any]) -> list[str]:
    """What each step bought: params, MACs, size, batch-1 p50, cosine vs the original model, accuracy."""
    arts = report.get("artifacts") or []
    if len(arts) < 2:
        return []
    p50 = {r["artifact"]: r["latency_ms"]["p50"] for r in report.get("results", []) if r.get("batch") == 1}
    out = ["", "## What each step bought", "",
           "| artifact | stage | params | MACs | size | p50 ms (batch 1) | cosine vs original | accuracy | notes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for a in arts:
        m = a.get("meta") or {}
        vs = m.get("vs_original") or {}
        cos = vs.get("cosine", (a.get("parity") or {}).get("cosine"))
        notes = []
        if m.get("accuracy_before_recovery") is not None:
            notes.append(f"{m['accuracy_before_recovery']:.2f}% before recovery")
        q = m.get("quantization") or {}
        if q.get("activation_type"):
            notes.append(f"{q['activation_type']} activations / {q.get('weight_type')} weights")
        if (m.get("budget") or {}).get("float_nodes"):
            notes.append(f"{len(m['budget']['float_nodes'])} nodes kept in float")
        if a.get("status", "ok") != "ok":
            notes.append(f"**{a['status']}**")
        out.append(f"| {a['name']} | {a.get('stage', '')} | {_fmt(m.get('params'), ',')} | {_fmt(m.get('macs'), ',')} | "
                   f"{_fmt_size(a.get('size_bytes'))} | {_fmt(p50.get(a['name']))} | {_fmt(cos, '.5f')} | "
                   f"{_fmt(a.get('accuracy'), '.2f', '%')} | {'; '.join(notes)} |")
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown: device line, then one row per (artifact, backend, batch)."""
    dev = report.get("device") or {}
    lines = ["# edgesdk report", ""]
    dev_bits = [dev.get("cpu_model"), f"{dev.get('cores')} cores" if dev.get("cores") else None,
                dev.get("gpu"), dev.get("os")]
    lines.append("Device: " + ", ".join(str(b) for b in dev_bits if b))
    if dev.get("isa"):
        lines.append(f"ISA: {', '.join(dev['isa'])}")
    lines.append("")
    calib = report.get("calibration")
    if calib and calib.startswith("RANDOM"):
        lines += [f"**Calibration used {calib}: INT8 accuracy here says little about real inputs.**", ""]
    elif calib:
        lines += [f"Calibration: {calib}", ""]
    rows = table_rows(report)
    if rows:
        header = list(rows[0])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    else:
        lines.append("_No benchmark results (run without --no-benchmark to measure latency)._")
        arts = report.get("artifacts", [])
        if arts:
            lines += ["", "| artifact | format | precision | size | parity | accuracy |", "|---|---|---|---|---|---|"]
            for a in arts:
                p = a.get("parity") or {}
                lines.append(f"| {a['name']} | {a['format']} | {a['precision']} | {_fmt_size(a.get('size_bytes'))} | "
                             f"{'pass' if p.get('passed') else '**FAIL**'} | {_fmt(a.get('accuracy'), '.2f', '%')} |")
    lines += _steps_table(report)
    bad = {t: v for t, v in (report.get("targets") or {}).items() if v.get("status") != "ok"}
    if bad:
        lines += ["", "## Targets not delivered", ""]
        for t, v in bad.items():
            first = (v.get("reason") or "").splitlines()[0] if v.get("reason") else ""
            lines.append(f"- **{t}: {v['status']}** - {first}" + (f" (install: `{v['install']}`)" if v.get("install")
                                                                     else ""))
    warnings = [w for a in report.get("artifacts") or [] for w in (a.get("meta") or {}).get("warnings", [])]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(warnings)]
    base = report.get("baseline") or {}
    if base.get("accuracy") is not None:
        lines += ["", f"PyTorch eager accuracy: {base['accuracy']:.2f}%"]
    lines.append("")
    lines.append("Speed-up is p50 of PyTorch eager / p50 of the artifact at the same batch size, measured in this run.")
    return "\n".join(lines) + "\n"
