"""HTML view of a report: one self-contained page (inline CSS, inline SVG charts; no scripts, fonts or links
out). Without matplotlib the page keeps its tables and says how to get the charts.

Example::

    Path("out/report.html").write_text(to_html(load_report("out/report.json")))
"""
from __future__ import annotations

import json
from typing import Any, Callable

from .charts import CHARTS_HINT, charts_section, esc, figure_html, matplotlib_figure, sweep_chart
from .tables import (SPEEDUP_NOTE, generation_rows, backend_choice_lines, device_summary, fmt, fmt_size, has_speedups, report_warnings, steps_rows,
                     sweep_note, sweep_rows, table_rows, targets_not_delivered)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1200px;padding:0 16px;color:#1d2330;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f9;font-weight:600}tr:nth-child(even) td{background:#fafbfd}
td.num{text-align:right;white-space:nowrap}.bad{color:#b42318;font-weight:600}.ok{color:#067647}
.best{font-weight:700;color:#067647}
.warn{background:#fff6e5;border:1px solid #f5c26b;padding:8px 12px;border-radius:4px}
.note{color:#5b6475;font-style:italic}
figure{margin:12px 0;display:inline-block;vertical-align:top;max-width:100%}
figcaption{color:#5b6475;font-size:13px}figure svg{max-width:100%;height:auto}
pre{background:#f3f5f9;padding:8px;overflow:auto;font-size:12px}
"""

_NUMERIC = {"batch", "size", "p50 ms", "p90 ms", "p99 ms", "throughput/s", "speed-up", "accuracy", "params", "MACs",
            "p50 ms (batch 1)", "cosine vs original", "stage time s", "threads", "peak RSS MB"}


def html_table(rows: list[dict[str, str]], cell_class: Callable[[int, str, str], str] | None = None,
               numeric: set[str] | frozenset[str] = frozenset(_NUMERIC)) -> str:
    """A table from rows of display strings; the first row's keys are the header.

    ``cell_class(row_index, header, value)`` returns extra CSS classes for a cell (e.g. ``bad``).
    """
    if not rows:
        return ""
    header = list(rows[0])
    out = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cells = []
        for h in header:
            cls = " ".join(c for c in ("num" if h in numeric else "", cell_class(i, h, r[h]) if cell_class else "")
                           if c)
            cells.append(f"<td class=\"{cls}\">{esc(r[h])}</td>" if cls else f"<td>{esc(r[h])}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"

def page(title: str, sections: list[str]) -> str:
    """A whole HTML document around already-escaped sections."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(s for s in sections if s)
            + "\n</body></html>\n")

def _device_section(dev: dict[str, Any]) -> str:
    rows = []
    for k, v in dev.items():
        if v in (None, "", [], {}):
            continue
        if k == "versions" and isinstance(v, dict):
            v = ", ".join(f"{name} {ver}" for name, ver in v.items())
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        rows.append({"key": str(k), "value": str(v)})
    body = html_table(rows, numeric=frozenset()).replace("<thead><tr><th>key</th><th>value</th></tr></thead>", "")
    return f"<h2>Device</h2>{body}"

def _recipe_section(recipe: dict[str, Any] | None) -> str:
    if not recipe:
        return ""
    bits = [f"stages: {', '.join(map(str, recipe.get('stages') or [])) or '-'}",
            f"targets: {', '.join(map(str, recipe.get('targets') or [])) or '-'}"]
    q = recipe.get("quantize") or {}
    if q.get("mode") not in (None, "none"):
        bits.append(f"quantize: {q['mode']}")
    pr = recipe.get("prune") or {}
    if pr.get("ratio") is not None:
        bits.append(f"prune: {pr.get('method')} {pr['ratio']}")
    return (f"<h2>Recipe</h2><p>{esc('; '.join(bits))}</p><details><summary>full recipe</summary>"
            f"<pre>{esc(json.dumps(recipe, indent=2, default=str))}</pre></details>")

def _artifact_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Artifacts without benchmark rows (compress --no-benchmark): format, precision, size, parity, accuracy."""
    return [{"artifact": str(a.get("name")), "format": str(a.get("format")), "precision": str(a.get("precision")),
             "size": fmt_size(a.get("size_bytes")),
             "parity": "pass" if (a.get("parity") or {}).get("passed") else "FAIL",
             "accuracy": fmt(a.get("accuracy"), ".2f", "%")} for a in report.get("artifacts") or []]

def _status_class(_row: int, header: str, value: str) -> str:
    if header == "parity":
        return "bad" if value.startswith("FAIL") else ("ok" if value.startswith("pass") else "")
    return "bad" if header == "status" and value != "ok" else ""

def _pareto_class(_row: int, header: str, value: str) -> str:
    return "best" if header == "pareto" and value == "yes" else ""

def _sweep_section(report: dict[str, Any]) -> str:
    """The batch/thread sweep: latency vs throughput chart with the Pareto points marked, and the table of
    points with peak RSS; "" unless an artifact and backend was timed in more than one configuration."""
    from .sweep import sweep_of

    rows = sweep_rows(report)
    if not rows:
        return ""
    figure_cls = matplotlib_figure()
    chart = (figure_html("p50 latency vs throughput per artifact and backend (b = batch, t = threads); filled "
                         "points on the line are the Pareto frontier. Right: peak RSS per batch size.",
                         sweep_chart, sweep_of(report), figure_cls) if figure_cls is not None
             else f"<p class=\"note\">The sweep chart needs matplotlib: <code>{esc(CHARTS_HINT)}</code></p>")
    return (f"<h2 id=\"sweep\">Batch and thread sweep</h2>{chart}{html_table(rows, _pareto_class)}"
            f"<p class=\"note\">{esc(sweep_note(report))}</p>")

def to_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page: device, recipe, results, charts, the batch/thread sweep,
    steps, warnings.

    Example::

        write_text("out/report.html", to_html(report))
    """
    dev = report.get("device") or {}
    parts = [f"<h1>edgesdk report</h1><p class=\"sub\">{esc(device_summary(dev))} &middot; created "
             f"{esc(report.get('created', '?'))} &middot; edgesdk {esc(report.get('edgesdk_version', '?'))}</p>"]
    calib = report.get("calibration")
    if calib and str(calib).startswith("RANDOM"):
        parts.append(f"<p class=\"warn\">Calibration used {esc(calib)}: INT8 accuracy here says little about "
                     "real inputs.</p>")
    parts.append(_device_section(dev))
    parts.append(_recipe_section(report.get("recipe")))
    rows = table_rows(report, fail="FAIL")
    llm = generation_rows(report)
    if llm:
        parts.append("<h2>Language models (timed by generating)</h2>" + html_table(llm, _status_class))
    if rows:
        parts.append("<h2>Results</h2>" + html_table(rows, _status_class))
        parts.append(charts_section(report.get("results") or []))
        parts.append(_sweep_section(report))
    elif not llm:
        parts.append("<h2>Results</h2><p class=\"note\">No benchmark results (run without --no-benchmark to "
                     "measure latency).</p>" + html_table(_artifact_rows(report), _status_class))
    steps = steps_rows(report)
    if steps:
        parts.append("<h2>What each step bought</h2>" + html_table(steps, _status_class))
    choices = backend_choice_lines(report)
    if choices:
        parts.append("<h2>Fastest backend per artifact</h2><p>Measured on this machine; runtimes.load(DIR) "
                     "follows it here.</p><ul>" + "".join(f"<li>{esc(c)}</li>" for c in choices) + "</ul>")
    bad = targets_not_delivered(report)
    if bad:
        items = []
        for t, v in bad:
            reason = (v.get("reason") or "").splitlines()[0] if v.get("reason") else ""
            install = f" (install: <code>{esc(v['install'])}</code>)" if v.get("install") else ""
            items.append(f"<li><b>{esc(t)}: {esc(v.get('status'))}</b> - {esc(reason)}{install}</li>")
        items = "".join(items)
        parts.append(f"<h2>Targets not delivered</h2><ul>{items}</ul>")
    warnings = report_warnings(report)
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")
    base = report.get("baseline") or {}
    foot = [SPEEDUP_NOTE] if has_speedups(report) else []
    if base.get("accuracy") is not None:
        foot.insert(0, f"PyTorch eager accuracy: {base['accuracy']:.2f}%.")
    if calib and not str(calib).startswith("RANDOM"):
        foot.append(f"Calibration: {calib}.")
    parts.append("<p class=\"note\">" + " ".join(esc(f) for f in foot) + "</p>")
    return page(f"edgesdk report - {device_summary(dev)}", parts)
