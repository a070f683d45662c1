"""The debug report as one self-contained HTML page: a per-layer chart in graph order (SQNR against the
reference and each quantized activation's own quantization noise above, the share of the noise each layer adds
below, coloured by top-level module, the first jump marked), the noise summed over the PyTorch module tree, and
every layer worst first. Without matplotlib the page keeps its tables and says how to get the chart.

Example::

    Path("debug.html").write_text(to_html(edgesdk.debug("out/model.int8.onnx")))
"""
from __future__ import annotations

import math
from typing import Any

from edgesdk.parity import SQNR_CAP_DB
from edgesdk.report.charts import CHARTS_HINT, esc, figure_html, matplotlib_figure, svg_of
from edgesdk.report.html_view import html_table, page

from .report import DebugReport, agreement, layer_cells, loss, module_of, unmatched_by_reason, where

_MAX_TICKS = 80  # x labels beyond this many layers are thinned to every k-th


def _top(d: Any) -> str:
    return module_of(d).split(".")[0]


def layer_chart(report: DebugReport, figure_cls: Any) -> str | None:
    """SQNR per layer (graph order) with own quantization SQNR, and each layer's share of the added noise."""
    import matplotlib
    from matplotlib.patches import Patch

    layers = report.in_graph_order
    if not layers or figure_cls is None:
        return None
    n = len(layers)
    tops = list(dict.fromkeys(_top(d) for d in layers))
    cmap = matplotlib.colormaps["tab10"]
    color = {t: cmap(i % 10) for i, t in enumerate(tops)}
    xs = list(range(n))
    total = sum(d.added_noise for d in layers) or 1.0
    with matplotlib.rc_context({"font.size": 8}):
        fig = figure_cls(figsize=(min(16.0, max(7.5, 2.0 + 0.2 * n)), 6.2))
        ax, bx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        sq = [min(d.sqnr_db, SQNR_CAP_DB) for d in layers]
        ax.plot(xs, sq, color="#8a93a6", lw=1, zorder=1)
        ax.scatter(xs, sq, c=[color[_top(d)] for d in layers], s=28, edgecolor="black", lw=0.4, zorder=2,
                   label="SQNR vs reference")
        own = [(i, d.local_sqnr_db) for i, d in enumerate(layers) if d.local_sqnr_db is not None]
        if own:
            ax.scatter([i for i, _ in own], [v for _, v in own], marker="_", s=90, color="black", zorder=3,
                       label="own quantization SQNR")
        ax.set_ylabel("SQNR (dB)")
        ax.grid(alpha=0.3)
        bx.bar(xs, [100 * d.added_noise / total for d in layers], color=[color[_top(d)] for d in layers],
               edgecolor="black", lw=0.3)
        bx.set_ylabel("share of added noise (%)")
        bx.grid(alpha=0.3, axis="y")
        jump = report.first_jump
        if jump is not None:
            j = next(i for i, d in enumerate(layers) if d is jump)
            for a in (ax, bx):
                a.axvline(j, color="#d62728", ls="--", lw=1.2, zorder=0)
            ax.annotate(f"first jump: {where(jump, quote='')}", (j, sq[j]), xytext=(6, 10),
                        textcoords="offset points", color="#d62728", fontsize=8, parse_math=False)
        step = max(1, math.ceil(n / _MAX_TICKS))
        bx.set_xticks(xs[::step])
        bx.set_xticklabels([f"{module_of(d)} {d.op}" for d in layers][::step], rotation=90, fontsize=6)
        handles = [Patch(color=color[t], label=t) for t in tops]
        ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="lower left",
                  bbox_to_anchor=(0, 1.01), ncol=min(6, len(handles) + 2), frameon=False)  # above: hides no point
        fig.align_ylabels()
        return svg_of(fig, "edgesdk-debug-layers")


def _module_rows(report: DebugReport) -> list[dict[str, str]]:
    return [{"module": "\u2003" * m.depth + m.module, "layers": str(m.layers),
             "share of added noise": f"{100 * m.noise_share:.1f}%", "worst SQNR dB": f"{m.worst_sqnr_db:.1f}",
             "worst tensor": m.worst_tensor} for m in report.modules]


def _layer_rows(report: DebugReport) -> list[dict[str, str]]:
    return [{"rank": str(i), "module": where(d, quote=""), "op": d.op, "tensor": d.tensor, **layer_cells(d)}
            for i, d in enumerate(report.layers, 1)]


def to_html(report: DebugReport) -> str:
    jump = report.first_jump
    summary = (f"<p class=\"sub\">{esc(report.artifact)} on {esc(report.runtime)}, against {esc(report.reference)} "
               f"({esc(report.reference_choice)}), on {esc(report.inputs)}; {len(report.layers)} layers matched.</p>")
    if jump is not None:
        summary += (f"<p><b>First jump: {esc(where(jump, quote=''))}</b>, {esc(jump.op)} &rarr; "
                    f"<code>{esc(jump.tensor)}</code>: {esc(loss(jump))} (cosine {jump.cosine:.5f}).</p>")
    else:
        summary += f"<p>{esc(agreement(report))}</p>"
    if report.unmatched:
        summary += (f"<p>{len(report.unmatched)} PyTorch modules not matched:</p><ul>" + "".join(
            f"<li>{esc(why)}: {esc(', '.join(paths))}</li>" for why, paths in unmatched_by_reason(report).items())
            + "</ul>")
    figure_cls = matplotlib_figure()
    if figure_cls is None:
        chart = f"<p class=\"note\">The per-layer chart needs matplotlib: <code>{esc(CHARTS_HINT)}</code></p>"
    else:
        chart = figure_html("Layers in graph order, coloured by top-level module. Above: SQNR against the "
                            "reference (dots) and a quantized activation's own quantization SQNR (dashes). Below: "
                            "the share of the added noise each layer adds. Dashed red: the first jump.",
                            layer_chart, report, figure_cls)
    jump_rank = next((i for i, d in enumerate(report.layers) if d is jump), None)

    def mark(row: int, _header: str, _value: str) -> str:
        return "bad" if row == jump_rank else ""

    return page(f"edgesdk debug: {report.artifact}", [
        "<h1>edgesdk debug</h1>", summary, chart,
        "<h2>Noise by module</h2>", html_table(_module_rows(report), numeric=frozenset(
            {"layers", "share of added noise", "worst SQNR dB"})),
        "<h2>Layers, worst first</h2>", html_table(_layer_rows(report), mark, numeric=frozenset(
            {"rank", "cosine", "SQNR dB", "lost dB", "own quant. SQNR dB", "max abs err"}))])
