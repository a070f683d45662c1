"""Cross-device merge: several report.json files side by side.

Rows are (artifact, backend, precision, batch); columns are devices, labelled from the fingerprint
(Jetson board, else GPU, else CPU model; ``@hostname`` when the fingerprint has one; the file path when two
labels would be equal). Cells hold p50, speed-up vs PyTorch eager on that device, and accuracy. The merged
dict is data first (``kind: edgesdk-merged-report``); Markdown, HTML and CSV are views of it.

Example::

    merged = merge_reports(["jetson/report.json", "laptop/report.json"])
    print(render_merged(merged, "md"))
"""
from __future__ import annotations

import datetime as _dt
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from edgesdk.atomic import json_text
from edgesdk.errors import InputError

from .csv_view import write_csv
from .model import load_report
from .tables import device_summary, fmt

MERGED_KIND = "edgesdk-merged-report"
MERGED_SCHEMA_VERSION = 1
ROW_KEY = ("artifact", "backend", "precision", "batch")

_CPU_NOISE = re.compile(r"\((R|TM|C)\)|\bCPU\b|\bProcessor\b|@\s*[\d.]+\s*GHz|\bwith .*$", re.IGNORECASE)


def device_label(dev: dict[str, Any] | None) -> str:
    """A short column name for a device: Jetson board, else GPU, else CPU model; plus @hostname when known.

    Example::

        device_label({"cpu_model": "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz"})   # 'Intel Core i7-1185G7'
    """
    dev = dev or {}
    jetson = dev.get("jetson")
    if isinstance(jetson, dict):  # the fingerprint's {model, l4t, jetpack}
        jetson = jetson.get("model")
    name = jetson or dev.get("gpu") or dev.get("cpu_model")
    name = " ".join(_CPU_NOISE.sub(" ", str(name)).split()) if name else ""
    name = name or str(dev.get("machine") or "unknown device")
    host = dev.get("hostname") or dev.get("host")
    return f"{name} @{host}" if host else name


def _labels(paths: list[Path], devices: list[dict[str, Any]]) -> list[str]:
    """Device labels, made unique with the shortest distinguishing tail of the file path (then #n)."""
    labels = [device_label(d) for d in devices]
    counts = Counter(labels)
    out = list(labels)
    for label in (lab for lab, n in counts.items() if n > 1):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        parts = [paths[i].parts for i in idx]
        for k in range(1, max(len(p) for p in parts) + 1):
            tails = ["/".join(p[-k:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        for i, tail in zip(idx, tails):
            out[i] = f"{label} [{tail}]"
    for label in (lab for lab, n in Counter(out).items() if n > 1):  # the same file given twice
        for n, i in enumerate((i for i, lab in enumerate(out) if lab == label), 1):
            out[i] = f"{label} #{n}"
    return out


def _cell(r: dict[str, Any]) -> dict[str, Any]:
    return {"p50_ms": (r.get("latency_ms") or {}).get("p50"), "speedup_vs_baseline": r.get("speedup_vs_baseline"),
            "accuracy": r.get("accuracy"), "throughput": r.get("throughput"), "size_bytes": r.get("size_bytes")}


def merge_reports(paths: list[str | Path]) -> dict[str, Any]:
    """Load each report (checked, older schemas upgraded) and lay their results side by side per device.

    One report is allowed (a one-column table); none is an error.
    """
    from edgesdk.version import __version__

    if not paths:
        raise InputError("no reports to merge", expected="one or more report.json files")
    files = [Path(p) / "report.json" if Path(p).is_dir() else Path(p) for p in paths]
    reports = [load_report(p) for p in files]
    labels = _labels(files, [r.get("device") or {} for r in reports])
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    notes = []
    for label, path, rep in zip(labels, files, reports):
        seen: set[tuple[Any, ...]] = set()
        dupes = 0
        for r in rep["results"]:
            key = tuple(r.get(k) for k in ROW_KEY)
            if key in seen:
                dupes += 1
                continue
            seen.add(key)
            row = rows.setdefault(key, {**dict(zip(ROW_KEY, key)), "cells": {}})
            row["cells"][label] = _cell(r)
        if dupes:
            notes.append(f"{path}: {dupes} duplicate row(s) with the same {', '.join(ROW_KEY)} ignored")
    devices = [{"label": label, "source": str(path), "summary": device_summary(rep.get("device")),
                "device": rep.get("device"), "edgesdk_version": rep.get("edgesdk_version"),
                "created": rep.get("created")} for label, path, rep in zip(labels, files, reports)]
    for row in rows.values():
        row["cells"] = {d["label"]: row["cells"].get(d["label"]) for d in devices}
    return {"kind": MERGED_KIND, "schema_version": MERGED_SCHEMA_VERSION, "edgesdk_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": devices, "rows": list(rows.values()), "notes": notes}


def _cell_text(cell: dict[str, Any] | None, sep: str = ", ") -> str:
    if cell is None:
        return "-"
    return sep.join((fmt(cell.get("p50_ms"), ".3f", " ms"), fmt(cell.get("speedup_vs_baseline"), ".2f", "x"),
                     fmt(cell.get("accuracy"), ".2f", "%")))


def _fastest(row: dict[str, Any]) -> str | None:
    timed = {k: c["p50_ms"] for k, c in row["cells"].items() if c and c.get("p50_ms") is not None}
    return min(timed, key=timed.get) if len(timed) > 1 else None


def _display_rows(merged: dict[str, Any], sep: str) -> list[dict[str, str]]:
    out = []
    for row in merged["rows"]:
        d = {k: str(row.get(k, "")) for k in ROW_KEY}
        d.update({label: _cell_text(cell, sep) for label, cell in row["cells"].items()})
        out.append(d)
    return out


def merged_to_markdown(merged: dict[str, Any]) -> str:
    """Markdown: a device legend, then one table; each cell is p50, speed-up, accuracy; fastest p50 in bold."""
    lines = ["# edgesdk report: devices side by side", ""]
    lines += [f"- **{d['label']}**: {d['summary']} (`{d['source']}`)" for d in merged["devices"]]
    lines += ["", "Cells: p50 latency per call, speed-up vs PyTorch eager on that device, accuracy. "
              "Fastest p50 per row in bold.", ""]
    rows = _display_rows(merged, ", ")
    if not rows:
        return "\n".join(lines + ["_No benchmark results in these reports._", ""])
    header = list(rows[0])
    lines += ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
              "|" + "|".join("---" for _ in header) + "|"]
    for row, disp in zip(merged["rows"], rows):
        best = _fastest(row)
        cells = [f"**{v}**" if h == best else v for h, v in disp.items()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [""] + [f"Note: {n}" for n in merged.get("notes") or []]
    return "\n".join(lines).rstrip("\n") + "\n"


def merged_latency_chart(merged: dict[str, Any], figure_cls: Any) -> str | None:
    """Grouped bars: p50 per row (artifact | backend | precision | batch), one bar per device; log scale when
    the values span more than 20x. None when no cell has a p50."""
    from .charts import _colors, _rc, svg_of

    rows = [r for r in merged["rows"] if any(c and c.get("p50_ms") is not None for c in r["cells"].values())]
    if not rows:
        return None
    labels = [d["label"] for d in merged["devices"]]
    colors = _colors(labels)
    n, height = len(labels), 0.8 / len(labels)
    values = [c["p50_ms"] for r in rows for c in r["cells"].values() if c and c.get("p50_ms") is not None]
    with _rc():
        fig = figure_cls(figsize=(8.5, 1.4 + 0.22 * n * len(rows) + 0.15 * len(rows)))
        ax = fig.add_subplot()
        for j, label in enumerate(labels):
            ys, xs = [], []
            for i, r in enumerate(rows):
                cell = r["cells"].get(label)
                if cell and cell.get("p50_ms") is not None:
                    ys.append(len(rows) - 1 - i + 0.4 - (j + 0.5) * height)
                    xs.append(cell["p50_ms"])
            ax.barh(ys, xs, height=height * 0.9, color=colors[label], label=label)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([" | ".join(str(r.get(k)) for k in ROW_KEY[:3]) + f" | batch {r.get('batch')}"
                            for r in reversed(rows)], parse_math=False)
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("p50 latency per call (ms); shorter is faster")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / len(rows)), ncol=min(n, 3), fontsize=8,
                  frameon=False)
        return svg_of(fig, "edgesdk-merged-latency")


def merged_to_html(merged: dict[str, Any]) -> str:
    """A self-contained HTML page with the device legend, a p50 chart per device and the side-by-side table."""
    from .charts import CHARTS_HINT, matplotlib_figure
    from .html_view import esc, html_table, page

    legend = "".join(f"<li><b>{esc(d['label'])}</b>: {esc(d['summary'])} (<code>{esc(d['source'])}</code>)</li>"
                     for d in merged["devices"])
    rows = _display_rows(merged, " | ")
    best = [_fastest(r) for r in merged["rows"]]
    table = (html_table(rows, lambda i, h, _v: "best" if h == best[i] else "", numeric=frozenset({"batch"}))
             if rows else "<p class=\"note\">No benchmark results in these reports.</p>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in merged.get("notes") or [])
    figure_cls = matplotlib_figure()
    if figure_cls is None:
        chart = f"<h2>Chart</h2><p class=\"note\">Charts need matplotlib: <code>{esc(CHARTS_HINT)}</code></p>"
    else:
        svg = merged_latency_chart(merged, figure_cls)
        chart = (f"<h2>Chart</h2><figure>{svg}<figcaption>p50 latency per artifact, one bar per device."
                 "</figcaption></figure>") if svg else ""
    return page("edgesdk report: devices side by side", [
        "<h1>edgesdk report: devices side by side</h1>", f"<h2>Devices</h2><ul>{legend}</ul>", chart,
        "<h2>Results</h2><p class=\"note\">Cells: p50 latency per call | speed-up vs PyTorch eager on that device | "
        "accuracy. Fastest p50 per row in bold.</p>" + table,
        f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""])


def merged_to_csv(merged: dict[str, Any]) -> str:
    """Wide CSV: the row key, then ``LABEL p50_ms``, ``LABEL speedup``, ``LABEL accuracy`` per device."""
    metrics = (("p50_ms", "p50_ms"), ("speedup", "speedup_vs_baseline"), ("accuracy", "accuracy"),
               ("size_bytes", "size_bytes"))
    cols = list(ROW_KEY) + [f"{d['label']} {m}" for d in merged["devices"] for m, _ in metrics]
    flat = []
    for row in merged["rows"]:
        f = {k: row.get(k) for k in ROW_KEY}
        for label, cell in row["cells"].items():
            f.update({f"{label} {m}": (cell or {}).get(key) for m, key in metrics})
        flat.append(f)
    return write_csv(cols, flat)


MERGED_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "md": merged_to_markdown, "html": merged_to_html, "csv": merged_to_csv,
    "json": lambda m: json_text(m) + "\n",
}


def render_merged(merged: dict[str, Any], fmt_name: str = "md") -> str:
    """The merged report as md, html, csv or json text."""
    renderer = MERGED_RENDERERS.get(fmt_name)
    if renderer is None:
        raise InputError(f"unknown report format {fmt_name!r}", expected=", ".join(MERGED_RENDERERS))
    return renderer(merged)

