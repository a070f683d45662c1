"""Charts for the HTML views, drawn with matplotlib (``pip install 'edgesdk[report]'``) on a bare ``Figure``
rendered to inline SVG, so no global backend is switched.

Example::

    section = charts_section(report["results"])   # a note instead without matplotlib
    svg = sweep_chart(sweep_of(report), matplotlib_figure())   # latency vs throughput, Pareto points marked
"""
from __future__ import annotations

import io
import logging
from html import escape
from typing import Any

from .tables import fmt

log = logging.getLogger(__name__)


def esc(v: Any) -> str:
    return escape(str(v), quote=True)

CHARTS_HINT = "pip install 'edgesdk[report]'"

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

def figure_html(caption: str, draw: Any, data: Any, figure_cls: Any) -> str:
    """``draw(data, figure_cls)`` as a <figure> with its caption; "" when it draws nothing, and a note when odd
    data makes it fail (one bad chart must not cost the whole page)."""
    try:
        svg = draw(data, figure_cls)
    except (ValueError, TypeError, KeyError) as e:
        log.warning("chart not drawn (%s): %s", caption, e)
        return f"<p class=\"note\">chart not drawn: {esc(e)}</p>"
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>" if svg else ""

def charts_section(results: list[dict[str, Any]]) -> str:
    """The charts, or a note saying how to get them."""
    figure_cls = matplotlib_figure()
    if figure_cls is None:
        return (f"<h2>Charts</h2><p class=\"note\">Charts need matplotlib: <code>{esc(CHARTS_HINT)}</code></p>")
    figs = [figure_html(caption, draw, results, figure_cls) for caption, draw in (
        ("Latency distribution per artifact and batch (ms).", latency_chart),
        ("Size vs p50 latency; labels give accuracy. Rows without a file (PyTorch eager) are not plotted.",
         size_chart))]
    figs = [f for f in figs if f]
    return "<h2>Charts</h2>" + "".join(figs) if figs else ""

def _series_label(s: dict[str, Any]) -> str:
    return f"{s.get('artifact')} ({s.get('backend')})"

def _point_label(p: dict[str, Any]) -> str:
    """``b8/t2``: the batch and thread count of a sweep point (``b8`` when the backend chose the threads)."""
    return f"b{p.get('batch')}" + ("" if p.get("threads") is None else f"/t{p['threads']}")

def _log_if_wide(set_scale: Any, values: list[float]) -> None:
    """A log axis when the values span more than 20x (batch 1 to 32 often does), as the latency chart does."""
    if values and min(values) > 0 and max(values) / min(values) > 20:
        set_scale("log")

def _frontier(ax: Any, s: dict[str, Any], color: Any) -> None:
    """One series on the latency/throughput axes: hollow dominated points, filled larger Pareto points joined
    by the frontier line (in latency order), every point labelled with its batch and threads."""
    pts = s["points"]
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: (p["p50_ms"], -p["throughput"]))
    rest = [p for p in pts if not p.get("pareto")]
    ax.plot([p["p50_ms"] for p in front], [p["throughput"] for p in front], color=color, lw=1.3, zorder=2)
    ax.scatter([p["p50_ms"] for p in front], [p["throughput"] for p in front], s=70, color=color,
               edgecolor="black", zorder=3, label=_series_label(s))
    if rest:
        ax.scatter([p["p50_ms"] for p in rest], [p["throughput"] for p in rest], s=28, facecolors="none",
                   edgecolors=[color], zorder=3)
    for p in pts:
        ax.annotate(_point_label(p), (p["p50_ms"], p["throughput"]), xytext=(5, 4), textcoords="offset points",
                    fontsize=7, parse_math=False)

def _rss_panel(ax: Any, series: list[dict[str, Any]], colors: dict[str, Any]) -> None:
    """Peak RSS (MB) against batch size: one line per series and thread count (line style by thread count)."""
    styles = ("-", "--", ":", "-.")
    counts = list(dict.fromkeys(p.get("threads") for s in series for p in s["points"]))
    for s in series:
        for t in counts:
            pts = sorted((p for p in s["points"] if p.get("threads") == t and p.get("peak_rss_mb") is not None),
                         key=lambda p: p["batch"])
            if pts:
                ax.plot([p["batch"] for p in pts], [p["peak_rss_mb"] for p in pts], marker="o", ms=4,
                        ls=styles[counts.index(t) % len(styles)], color=colors[_series_label(s)])
    from matplotlib.lines import Line2D

    ax.legend(handles=[Line2D([], [], color="gray", ls=styles[i % len(styles)],
                              label="threads auto" if t is None else f"{t} thread{'s' if t != 1 else ''}")
                       for i, t in enumerate(counts)], fontsize=8, frameon=False)
    batches = sorted({p["batch"] for s in series for p in s["points"] if p.get("peak_rss_mb") is not None})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])  # the batch sizes run, not powers of two
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("peak RSS (MB)")
    ax.grid(alpha=0.3)

def sweep_chart(series: list[dict[str, Any]], figure_cls: Any) -> str | None:
    """Latency (x, p50 ms) vs throughput (y, items/s) per (artifact, backend), Pareto points filled on their
    frontier line, every point labelled ``b<batch>/t<threads>``; beside it peak RSS against batch size when the
    rows have it. None unless some series has more than one point."""
    drawn = [s for s in series if s.get("points")]
    if not any(len(s["points"]) > 1 for s in drawn):
        return None
    colors = _colors([_series_label(s) for s in drawn])
    with_rss = any(p.get("peak_rss_mb") is not None for s in drawn for p in s["points"])
    with _rc():
        fig = figure_cls(figsize=(11.5 if with_rss else 6.5, 4.4))
        ax = fig.add_subplot(1, 2 if with_rss else 1, 1)
        for s in drawn:
            _frontier(ax, s, colors[_series_label(s)])
        points = [p for s in drawn for p in s["points"]]
        _log_if_wide(ax.set_xscale, [p["p50_ms"] for p in points])
        _log_if_wide(ax.set_yscale, [p["throughput"] for p in points])
        ax.set_xlabel("p50 latency per call (ms)")
        ax.set_ylabel("throughput (items/s)")
        ax.grid(alpha=0.3)
        legend = ax.legend(fontsize=8, frameon=False, loc="best")
        for text in legend.get_texts():
            text.set_parse_math(False)  # names such as "m_$x.onnx" print as written
        if with_rss:
            _rss_panel(fig.add_subplot(1, 2, 2), drawn, colors)
        fig.tight_layout()
        return svg_of(fig, "edgesdk-sweep")
