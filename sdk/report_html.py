"""HTML view of a report: one self-contained page (inline CSS, inline SVG charts; no scripts, fonts or links out).

Charts are drawn with matplotlib (``pip install 'edgesdk[report]'``) on a bare ``Figure`` rendered to SVG, so
no global backend is switched; without matplotlib the page keeps its tables and says how to get the charts.

Example::

    Path("out/report.html").write_text(to_html(load_report("out/report.json")))
"""
from __future__ import annotations

import html
import io
import json
import logging
from typing import Any, Callable

from .report import (SPEEDUP_NOTE, device_summary, fmt, fmt_size, has_speedups, report_warnings, steps_rows,
                     table_rows, targets_not_delivered)

log = logging.getLogger(__name__)

CHARTS_HINT = "pip install 'edgesdk[report]'"

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
            "p50 ms (batch 1)", "cosine vs original", "stage time s"}


def esc(v: Any) -> str:
    """HTML-escape any value (quotes included, so it is safe in attributes too)."""
    return html.escape(str(v), quote=True)


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


def matplotlib_figure() -> Any:
    """matplotlib's Figure class, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def svg_of(fig: Any, salt: str) -> str:
    """A figure as an inline <svg> element (no XML prologue; ids salted per chart so they never clash)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _colors(names: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(dict.fromkeys(names))}


def latency_chart(results: list[dict[str, Any]], figure_cls: Any) -> str | None:
    """Per (artifact, backend, batch): min..max whisker, p50..p90 box, p50 tick and p99 diamond."""
    rows = [r for r in results if (r.get("latency_ms") or {}).get("p50") is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: (r.get("batch") or 0))
    colors = _colors([str(r.get("artifact")) for r in rows])
    with _rc():
        fig = figure_cls(figsize=(8.5, 1.2 + 0.38 * len(rows)))
        ax = fig.add_subplot()
        lo_all, hi_all = [], []
        for i, r in enumerate(rows):
            lat, y, c = r["latency_ms"], len(rows) - 1 - i, colors[str(r.get("artifact"))]
            p50, p90, p99 = lat["p50"], lat.get("p90", lat["p50"]), lat.get("p99", lat["p50"])
            lo, hi = lat.get("min", p50), lat.get("max", p99)
            lo_all.append(lo)
            hi_all.append(hi)
            ax.hlines(y, lo, hi, color=c, lw=1.2)
            ax.barh(y, max(p90 - p50, 1e-9), left=p50, height=0.5, color=c, alpha=0.7, edgecolor=c)
            ax.vlines(p50, y - 0.25, y + 0.25, color="black", lw=1.6)
            ax.plot([p99], [y], marker="D", ms=5, color=c, markeredgecolor="black", lw=0)
        ax.set_yticks(range(len(rows)))
        labels = [f"{r.get('artifact')} | {r.get('backend')} | batch {r.get('batch')}" for r in reversed(rows)]
        ax.set_yticklabels(labels, parse_math=False)  # names such as "m_$x.onnx" print as written, not as mathtext
        if min(lo_all) > 0 and max(hi_all) / min(lo_all) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("latency per call (ms)")
        ax.grid(axis="x", alpha=0.3)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        ax.legend(handles=[Line2D([], [], color="gray", lw=1.2, label="min..max"),
                           Patch(color="gray", alpha=0.7, label="p50..p90"),
                           Line2D([], [], color="black", lw=1.6, label="p50"),
                           Line2D([], [], color="gray", marker="D", lw=0, markeredgecolor="black", label="p99")],
                  loc="upper center", bbox_to_anchor=(0.5, -0.14 - 0.5 / len(rows)), ncol=4, fontsize=8,
                  frameon=False)
        return svg_of(fig, "edgesdk-latency")


def size_chart(results: list[dict[str, Any]], figure_cls: Any) -> str | None:
    """Size (x) vs p50 (y) per (artifact, backend) at the smallest batch, each point labelled with accuracy."""
    sized = [r for r in results if r.get("size_bytes") and (r.get("latency_ms") or {}).get("p50") is not None]
    if not sized:
        return None
    batch = min(r.get("batch") or 1 for r in sized)
    pts = [r for r in sized if (r.get("batch") or 1) == batch]
    unit, div = ("MB", 1024 ** 2) if max(r["size_bytes"] for r in pts) >= 1024 ** 2 else ("KB", 1024)
    colors = _colors([str(r.get("artifact")) for r in pts])
    with _rc():
        fig = figure_cls(figsize=(6.5, 4.2))
        ax = fig.add_subplot()
        for r in pts:
            x, y = r["size_bytes"] / div, r["latency_ms"]["p50"]
            ax.scatter([x], [y], s=90, color=colors[str(r.get("artifact"))], edgecolor="black", zorder=3)
            acc = fmt(r.get("accuracy"), ".2f", "%") if r.get("accuracy") is not None else "accuracy n/a"
            ax.annotate(f"{r.get('artifact')} ({r.get('backend')})\n{acc}", (x, y), xytext=(7, 5),
                        textcoords="offset points", fontsize=8, parse_math=False)
        ax.set_xlabel(f"file size ({unit})")
        ax.set_ylabel(f"p50 latency at batch {batch} (ms)")
        ax.set_xlim(left=0, right=max(r["size_bytes"] / div for r in pts) * 1.45)
        ax.set_ylim(bottom=0, top=max(r["latency_ms"]["p50"] for r in pts) * 1.3)
        ax.grid(alpha=0.3)
        return svg_of(fig, "edgesdk-size")


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context({"font.size": 9})


def charts_section(results: list[dict[str, Any]]) -> str:
    """The charts, or a note saying how to get them."""
    figure_cls = matplotlib_figure()
    if figure_cls is None:
        return (f"<h2>Charts</h2><p class=\"note\">Charts need matplotlib: <code>{esc(CHARTS_HINT)}</code></p>")
    figs = []
    for caption, draw in (("Latency distribution per artifact and batch (ms).", latency_chart),
                          ("Size vs p50 latency; labels give accuracy. Rows without a file (PyTorch eager) are "
                           "not plotted.", size_chart)):
        try:
            svg = draw(results, figure_cls)
        except (ValueError, TypeError, KeyError) as e:  # odd data must not cost the whole page; said on the page
            log.warning("chart not drawn (%s): %s", caption, e)
            figs.append(f"<p class=\"note\">chart not drawn: {esc(e)}</p>")
            continue
        if svg:
            figs.append(f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>")
    return "<h2>Charts</h2>" + "".join(figs) if figs else ""


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


def to_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page: device, recipe, results, charts, steps, warnings.

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
    if rows:
        parts.append("<h2>Results</h2>" + html_table(rows, _status_class))
        parts.append(charts_section(report.get("results") or []))
    else:
        parts.append("<h2>Results</h2><p class=\"note\">No benchmark results (run without --no-benchmark to "
                     "measure latency).</p>" + html_table(_artifact_rows(report), _status_class))
    steps = steps_rows(report)
    if steps:
        parts.append("<h2>What each step bought</h2>" + html_table(steps, _status_class))
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

