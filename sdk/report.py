"""Reports: ``report.json`` is the source of truth; Markdown, HTML and CSV are views of it.

Schema (documented in docs/report-schema.md)::

    {schema_version, edgesdk_version, created, device, recipe, baseline, artifacts, results}

Example::

    report = load_report("out/report.json")
    print(to_markdown(report))
    write_report_views("out", report)      # report.md, report.html, report.csv
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from pathlib import Path
from typing import Any, Callable

from .atomic import json_text
from .errors import InputError

REPORT_SCHEMA_VERSION = 1

# Older schema versions upgraded one step at a time: {version: fn(report at version) -> report at version + 1}.
# Version 1 is the first; a future version 2 adds the 1 -> 2 step here so old reports keep loading.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

# The files write_report_views() puts next to report.json.
REPORT_VIEWS = ("report.md", "report.html", "report.csv")


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


def read_json(path: str | Path, what: str = "report") -> Any:
    """Parse a JSON file; errors name the file and the line/column of the first problem."""
    p = Path(path)
    if p.is_dir() and (p / "report.json").is_file():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}", hint="pass the report.json written by compress or benchmark")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not a JSON {what}", expected="UTF-8 JSON text written by edgesdk",
                         found=f"binary data (byte {e.start} is not UTF-8)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not a JSON {what}", expected="a report.json written by edgesdk",
                         found=f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _not_a_report(data: Any, source: str) -> None:
    found = f"keys: {', '.join(sorted(data)[:10])}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
    raise InputError(f"{source} is not an edgesdk report", expected="a JSON object with schema_version and results",
                     found=found, hint="pass the report.json written by `edgesdk compress` or `benchmark -o`")


def check_report(data: Any, source: str = "report") -> dict[str, Any]:
    """Check a parsed report and upgrade an older schema version; refuse foreign or newer ones."""
    if isinstance(data, dict) and data.get("kind") == "edgesdk-merged-report":
        raise InputError(f"{source} is a merged report, not a single-device report",
                         hint="pass the report.json files that were merged")
    if not isinstance(data, dict) or "schema_version" not in data:
        _not_a_report(data, source)
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{source} has a malformed schema_version", expected="an integer", found=repr(version))
    if version > REPORT_SCHEMA_VERSION:
        raise InputError(f"{source} was written by a newer edgesdk (report schema version {version}, "
                         f"edgesdk {data.get('edgesdk_version', '?')})",
                         expected=f"report schema version {REPORT_SCHEMA_VERSION} or older (what this edgesdk reads)",
                         found=f"schema version {version}", hint="upgrade edgesdk: pip install -U edgesdk")
    while version < REPORT_SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise InputError(f"{source} has report schema version {version}, which this edgesdk cannot upgrade",
                             expected=f"schema version {REPORT_SCHEMA_VERSION}",
                             hint="re-run the benchmark with this edgesdk version")
        data = MIGRATIONS[version](dict(data))
        version += 1
        data["schema_version"] = version
    if "results" not in data:
        _not_a_report(data, source)
    if not isinstance(data["results"], list) or not all(isinstance(r, dict) for r in data["results"]):
        raise InputError(f"{source} has malformed results", expected="a list of result objects",
                         found=type(data["results"]).__name__)
    return data


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and check a report.json (or the directory holding one); clear errors for missing, non-JSON,
    foreign or newer files. Older schema versions are upgraded in memory.

    Example::

        report = load_report("out/report.json")
    """
    p = Path(path)
    if p.is_dir() and (p / "report.json").is_file():
        p = p / "report.json"
    return check_report(read_json(p), str(p))


def fmt_size(n: int | float | None) -> str:
    """Bytes as B/KB/MB/GB; ``-`` for None."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt(v: Any, spec: str = ".3f", suffix: str = "") -> str:
    """A number with a format spec and suffix; ``-`` for None."""
    return "-" if v is None else f"{v:{spec}}{suffix}"


def device_summary(dev: dict[str, Any] | None) -> str:
    """One line: CPU model, cores, GPU, Jetson board, OS."""
    dev = dev or {}
    bits = [dev.get("cpu_model"), f"{dev.get('cores')} cores" if dev.get("cores") else None,
            dev.get("gpu"), _jetson_label(dev.get("jetson")), dev.get("os")]
    return ", ".join(str(b) for b in bits if b) or "unknown device"


def _jetson_label(j: Any) -> str | None:
    if isinstance(j, dict):
        return f"{j.get('model')} (L4T {j.get('l4t') or '?'}, JetPack {j.get('jetpack') or '?'})"
    return j or None


def parity_of(row: dict[str, Any], artifacts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The parity stats behind a result row (per backend when the artifact was checked on several)."""
    art = artifacts.get(row.get("artifact", ""))
    if art is None or not art.get("parity"):
        return None
    other = ((art.get("meta") or {}).get("parity_by_backend") or {}).get(row.get("backend"))
    return other if other is not None else art["parity"]


def _parity_text(mark: str, p: dict[str, Any], where: str = "") -> str:
    """``pass (max abs 1.2e-06, cos 1.000000)``; NaN/Inf mismatches lead and no measure is shown as perfect."""
    bad = p.get("nonfinite_mismatch") or 0
    lead = f"{bad} NaN/Inf mismatches, " if bad else ""
    cos = "n/a" if p.get("cosine") is None else f"{p['cosine']:.6f}"
    err = "n/a" if p.get("max_abs_err") is None else f"{p['max_abs_err']:.1e}"
    return f"{mark}{where} ({lead}max abs {err}, cos {cos})"


def _parity_cell(row: dict[str, Any], artifacts: dict[str, dict[str, Any]], fail: str = "**FAIL**") -> str:
    device = (row.get("device_check") or {}).get("parity")
    if device is not None:  # re-checked on this device against the reference set stored by compress
        return _parity_text("pass" if device.get("passed") else fail, device, " on device")
    p = parity_of(row, artifacts)
    if p is None:
        return "reference" if row.get("format") == "torch" else "-"
    return _parity_text("pass" if p.get("passed") else fail, p)


def _vs_original_cell(row: dict[str, Any], artifacts: dict[str, dict[str, Any]]) -> str:
    """How close the artifact is to the ORIGINAL model (not only to its parent): metric drop with labelled
    data, else cosine and top-1 agreement."""
    art = artifacts.get(row.get("artifact", ""))
    vs = ((art or {}).get("meta") or {}).get("vs_original")
    if not vs:
        return "-"
    parts = []
    if vs.get("accuracy_drop") is not None:
        parts.append(f"{-vs['accuracy_drop']:+.2f} pts")
    if vs.get("cosine") is not None:
        parts.append(f"cos {vs['cosine']:.4f}")
    if vs.get("top1_agreement") is not None:
        parts.append(f"top-1 {vs['top1_agreement']:.1%}")
    return ", ".join(parts) or "-"


def table_rows(report: dict[str, Any], fail: str = "**FAIL**") -> list[dict[str, str]]:
    """The report table as rows of display strings (used by Markdown, HTML and the CLI)."""
    artifacts = {a["name"]: a for a in report.get("artifacts") or [] if "name" in a}
    rows = []
    for r in report.get("results", []):
        lat = r.get("latency_ms") or {}
        rows.append({
            "artifact": str(r.get("artifact", "?")),
            "backend": str(r.get("backend", "?")),
            "format": str(r.get("format", "?")),
            "precision": str(r.get("precision", "?")),
            "batch": str(r.get("batch", "?")),
            "size": fmt_size(r.get("size_bytes")),
            "p50 ms": fmt(lat.get("p50")),
            "p90 ms": fmt(lat.get("p90")),
            "p99 ms": fmt(lat.get("p99")),
            "throughput/s": fmt(r.get("throughput"), ".1f"),
            "speed-up": fmt(r.get("speedup_vs_baseline"), ".2f", "x"),
            "parity": _parity_cell(r, artifacts, fail),
            "vs original": _vs_original_cell(r, artifacts),
            "accuracy": fmt(r.get("accuracy"), ".2f", "%" if _metric_unit(report) == "%" else ""),
        })
    return rows


def _metric_unit(report: dict[str, Any]) -> str:
    """The task metric's unit (all built-ins are percentages; a user metric may have none)."""
    return "%" if ((report.get("baseline") or {}).get("metric") or "top1") in _PERCENT_METRICS else ""


_PERCENT_METRICS = {"top1", "top5", "cer", "miou", "multilabel_f1", "multilabel_precision", "multilabel_recall"}


def _batch1_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per artifact, its batch-1 result row on the default backend of its format (onnxruntime for ONNX, even
    when OpenVINO timed it too); a backend not in that format's list ranks after, then report order."""
    from edgesdk.runtimes.registry import format_backends

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        i, r = item
        order = format_backends(str(r.get("format")))
        return (order.index(r["backend"]) if r.get("backend") in order else len(order), i)

    timed = [(i, r) for i, r in enumerate(report.get("results") or [])
             if r.get("batch") == 1 and (r.get("latency_ms") or {}).get("p50") is not None]
    best: dict[str, dict[str, Any]] = {}
    for _, r in sorted(timed, key=rank):
        best.setdefault(r.get("artifact"), r)
    return best


def steps_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """What each step bought: params, MACs, size, batch-1 p50, cosine vs the original, accuracy, notes, and the
    stage time when the artifacts record ``meta.stage_time_s``.

    The p50 is the artifact's batch-1 row on the default backend of its format (the first of
    ``format_backends``: onnxruntime for ONNX even when OpenVINO timed it too), named in the cell, e.g.
    ``0.212 (onnxruntime)``. Empty when the report has fewer than two artifacts. The ``status`` key is the
    artifact status (``ok`` or why not) so views can highlight it.

    Example::

        steps_rows(load_report("out"))[0]["p50 ms (batch 1)"]   # '0.212 (onnxruntime)'
    """
    arts = [a for a in report.get("artifacts") or [] if "name" in a]
    if len(arts) < 2:
        return []
    timed = _batch1_rows(report)
    with_times = any((a.get("meta") or {}).get("stage_time_s") is not None for a in arts)
    out = []
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
        row = timed.get(a["name"])
        p50 = "-" if row is None else f"{fmt(row['latency_ms']['p50'])} ({row.get('backend', '?')})"
        cells = {"artifact": str(a["name"]), "stage": str(a.get("stage") or ""), "params": fmt(m.get("params"), ","),
                 "MACs": fmt(m.get("macs"), ","), "size": fmt_size(a.get("size_bytes")), "p50 ms (batch 1)": p50,
                 "cosine vs original": fmt(cos, ".5f"), "accuracy": fmt(a.get("accuracy"), ".2f", "%")}
        if with_times:
            cells["stage time s"] = fmt(m.get("stage_time_s"), ".2f")
        out.append({**cells, "notes": "; ".join(notes), "status": str(a.get("status", "ok"))})
    return out


def report_warnings(report: dict[str, Any]) -> list[str]:
    """Every artifact warning, once each, in order."""
    found = [str(w) for w in report.get("warnings") or []]
    found += [str(w) for a in report.get("artifacts") or [] for w in (a.get("meta") or {}).get("warnings") or []]
    return list(dict.fromkeys(found))


def targets_not_delivered(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(target, record) for targets whose status is not ``ok``."""
    return [(t, v) for t, v in (report.get("targets") or {}).items() if isinstance(v, dict) and v.get("status") != "ok"]


SPEEDUP_NOTE = "Speed-up is p50 of PyTorch eager / p50 of the artifact at the same batch size, measured in this run."


def _md_table(rows: list[dict[str, str]]) -> list[str]:
    header = list(rows[0])
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(r[h].replace("|", "\\|") for h in header) + " |" for r in rows])


def to_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown: device line, then one row per (artifact, backend, batch)."""
    dev = report.get("device") or {}
    lines = ["# edgesdk report", "", "Device: " + device_summary(dev)]
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
        lines += _md_table(rows)
    else:
        lines.append("_No benchmark results in this report (compress measures latency unless --no-benchmark)._")
        arts = report.get("artifacts", [])
        if arts:
            lines += ["", "| artifact | format | precision | size | parity | accuracy |", "|---|---|---|---|---|---|"]
            for a in arts:
                p = a.get("parity") or {}
                verdict = "-" if "passed" not in p else ("pass" if p["passed"] else "**FAIL**")
                lines.append(f"| {a.get('name')} | {a.get('format')} | {a.get('precision')} | "
                             f"{fmt_size(a.get('size_bytes'))} | "
                             f"{verdict} | {fmt(a.get('accuracy'), '.2f', '%')} |")
    steps = steps_rows(report)
    if steps:
        for s in steps:
            status = s.pop("status")
            if status != "ok":
                s["notes"] = "; ".join(n for n in (s["notes"], f"**{status}**") if n)
        lines += ["", "## What each step bought", ""] + _md_table(steps)
    bad = targets_not_delivered(report)
    if bad:
        lines += ["", "## Targets not delivered", ""]
        for t, v in bad:
            first = (v.get("reason") or "").splitlines()[0] if v.get("reason") else ""
            lines.append(f"- **{t}: {v.get('status')}** - {first}"
                         + (f" (install: `{v['install']}`)" if v.get("install") else ""))
    skipped = report.get("skipped") or []
    if skipped:
        lines += ["", "## Artifacts not run on this device", ""]
        lines += [f"- **{s.get('artifact')}**" + (f" at batch {s['batch']}" if s.get("batch") else "")
                  + f" - {s.get('reason')}" for s in skipped]
    checked = [r for r in report.get("results") or [] if r.get("device_check")]
    if checked:
        samples = max((r["device_check"].get("eval_samples") or 0) for r in checked)
        lines += ["", f"Parity and accuracy were re-checked on this device on the reference set stored by compress "
                      f"({checked[0]['device_check'].get('batches')} batches"
                      + (f", {samples} labelled samples" if samples else "") + ")."]
    warnings = report_warnings(report)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    base = report.get("baseline") or {}
    if base.get("accuracy") is not None:
        metric = base.get("metric") or "top1"
        label = "accuracy" if metric == "top1" else metric
        lines += ["", f"PyTorch eager {label}: {base['accuracy']:.2f}{_metric_unit(report)}"
                      + ("" if metric == "top1" else " (the accuracy column shows this metric)")]
    if has_speedups(report):
        lines += ["", SPEEDUP_NOTE]
    return "\n".join(lines) + "\n"


def has_speedups(report: dict[str, Any]) -> bool:
    """Whether any result row has a speed-up vs PyTorch eager (device-only benchmarks have none)."""
    return any(r.get("speedup_vs_baseline") is not None for r in report.get("results") or [])


# Flat CSV: one line per result row. Latencies in milliseconds, throughput in samples/s, booleans true/false.
CSV_COLUMNS = ("artifact", "backend", "format", "precision", "batch", "threads", "p50_ms", "p90_ms", "p95_ms",
               "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput", "size_bytes", "accuracy", "parity_passed",
               "speedup_vs_baseline", "cpu_model", "cores", "machine", "gpu", "jetson", "os", "edgesdk_version",
               "created")


def csv_cell(v: Any) -> str:
    """A CSV cell: empty for None, true/false for booleans, repr-exact floats."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The flat rows behind to_csv(), with raw (unformatted) values."""
    dev = report.get("device") or {}
    rows = []
    for r in report.get("results", []):
        lat = r.get("latency_ms") or {}
        row: dict[str, Any] = {k: r.get(k) for k in ("artifact", "backend", "format", "precision", "batch", "threads")}
        row.update({f"{q}_ms": lat.get(q) for q in ("p50", "p90", "p95", "p99", "mean", "min", "max")})
        row.update({k: r.get(k) for k in ("throughput", "size_bytes", "accuracy", "parity_passed",
                                          "speedup_vs_baseline")})
        row.update({k: dev.get(k) for k in ("cpu_model", "cores", "machine", "gpu", "os")})
        row["jetson"] = _jetson_label(dev.get("jetson"))  # "Orin Nano (L4T 36.4.3, JetPack 6.2)", not a dict
        row.update(edgesdk_version=report.get("edgesdk_version"), created=report.get("created"))
        rows.append(row)
    return rows


def write_csv(columns: list[str] | tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """CSV text with a header line (RFC 4180 quoting, LF line ends)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(r.get(k)) for k in columns})
    return buf.getvalue()


def to_csv(report: dict[str, Any]) -> str:
    """One line per result row with flat columns (CSV_COLUMNS); device columns repeat on every line.

    Example::

        Path("out/report.csv").write_text(to_csv(load_report("out/report.json")))
    """
    return write_csv(CSV_COLUMNS, csv_rows(report))


def _to_html(report: dict[str, Any]) -> str:
    from .report_html import to_html

    return to_html(report)


# Views by format name; each takes the report dict and returns text.
RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "md": to_markdown,
    "html": _to_html,
    "csv": to_csv,
    "json": lambda report: json_text(report) + "\n",
}
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".csv": "csv", ".json": "json"}


def format_for(path: str | Path, given: str | None = None) -> str:
    """The view format for an output file: ``given`` if set, else from the suffix; clear error otherwise."""
    if given:
        return given
    fmt_name = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt_name is None:
        raise InputError(f"cannot tell the report format of {path}", expected=f"a name ending in "
                         f"{', '.join(SUFFIX_FORMATS)}", found=repr(Path(path).suffix or "no suffix"),
                         hint="rename the output or pass --format md|html|csv|json")
    return fmt_name


def render(report: dict[str, Any], fmt_name: str = "md") -> str:
    """The report as text in one of RENDERERS' formats (md, html, csv, json)."""
    renderer = RENDERERS.get(fmt_name)
    if renderer is None:
        raise InputError(f"unknown report format {fmt_name!r}", expected=", ".join(RENDERERS))
    return renderer(report)


def write_report_views(out_dir: str | Path, report: dict[str, Any]) -> list[str]:
    """Write report.md, report.html and report.csv next to report.json (atomically); return their names.

    HTML charts need matplotlib (``pip install 'edgesdk[report]'``); without it the page has the tables
    and says how to get the charts.

    Example::

        write_json(stage / "report.json", report)
        names = write_report_views(stage, report)    # ["report.md", "report.html", "report.csv"]
    """
    from .atomic import write_text

    out = Path(out_dir)
    for name in REPORT_VIEWS:
        write_text(out / name, render(report, SUFFIX_FORMATS[Path(name).suffix]))
    return list(REPORT_VIEWS)
