"""Views of ``search.json``: search.md and search.html (the Pareto chart: latency against accuracy or
cosine, marker area by size, the front drawn, the knee starred; then the candidate and trial tables).

Example::

    write_views(Path("search-out"), state)   # search.md, search.html
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgesdk.report.charts import esc, figure_html, matplotlib_figure, svg_of
from edgesdk.report.html_view import html_table, page
from edgesdk.report.tables import fmt


def _quality_key(cands: list[dict[str, Any]]) -> str:
    return "accuracy" if any(c.get("accuracy") is not None for c in cands) else "cosine"


def candidate_rows(state: dict[str, Any]) -> list[dict[str, str]]:
    """One row per candidate: front first (knee at the top), then the feasible, then the rest with reasons."""
    lat = (state.get("space") or {}).get("latency", "p50")
    quality = _quality_key(state.get("candidates") or [])
    order = sorted(state.get("candidates") or [], key=lambda c: (not c["knee"], not c["on_front"],
                                                                  not c["feasible"], c[lat]))
    rows = []
    for c in order:
        mark = "knee" if c["knee"] else ("front" if c["on_front"] else ("~knee" if c["near_knee"] else ""))
        lo, hi = c.get("latency_ci") or (None, None)
        kept = f" ({c['float_nodes']} nodes in float)" if c.get("float_nodes") else ""
        rows.append({"": mark, "candidate": c["label"] + kept, "backend": c["backend"],
                     "threads": str(c["threads"] or "auto"), "batch": str(c["batch"]),
                     f"{lat} ms": fmt(c[lat]), "95% interval": f"{fmt(lo)}-{fmt(hi)}",
                     quality: fmt(c.get(quality), ".2f" if quality == "accuracy" else ".5f"),
                     "drop": fmt(c.get("accuracy_drop"), ".2f"), "size MB": fmt(c["size_mb"], ".3f"),
                     "peak RSS MB": fmt(c.get("peak_rss_mb"), ".1f"),
                     "meets budgets": "yes" if c["feasible"] else "no: " + "; ".join(c["reasons"]), "id": c["id"]})
    return rows


def trial_rows(state: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for p in state.get("plan") or []:
        rec = state["trials"].get(p["id"]) or {}
        rows.append({"trial": p["label"], "id": p["id"], "status": rec.get("status", "not run"),
                     "attempts": str(rec.get("attempt", "")), "time s": fmt(rec.get("time_s"), ".1f"),
                     "reason": rec.get("reason") or ""})
    return rows


def _md_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_none_\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h].replace("|", "/") for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _summary(state: dict[str, Any]) -> list[str]:
    eng, cache = state.get("engine") or {}, state.get("cache") or {}
    knee = next((c for c in state.get("candidates") or [] if c["knee"]), None)
    sampler = state.get("sampler") or {}
    lines = [f"{len(state.get('plan') or [])} trials on {eng.get('engine')}"
             + (f" ({eng.get('nodes')} nodes)" if eng.get("nodes") else "")
             + (f", chosen from a grid of {sampler['grid_trials']} by Optuna's multi-objective TPE sampler "
                f"(seed {sampler['seed']})" if sampler else "")
             + f", wall time {fmt(state.get('wall_time_s'), '.1f')} s; "
             f"{len(state.get('front') or [])} candidates on the front of {len(state.get('candidates') or [])}.",
             f"Stage cache: {cache.get('hits', 0)} stage computations reused ({fmt(cache.get('saved_s'), '.1f')} s "
             f"saved), {cache.get('computed', 0)} computed."]
    if knee:
        lines.append(f"Knee point: **{knee['label']} on {knee['backend']}** ({knee['id']}); re-make it from "
                     f"{knee.get('best_yaml')}.")
    return lines


def to_markdown(state: dict[str, Any]) -> str:
    return ("# edgesdk search\n\n" + "\n".join(f"- {line}" for line in _summary(state)) + "\n\n## Candidates\n\n"
            + _md_table(candidate_rows(state)) + "\n## Trials\n\n" + _md_table(trial_rows(state)))


def pareto_chart(state: dict[str, Any], figure_cls: Any) -> str | None:
    """Latency (x, with its 95% interval) against accuracy or cosine (y); marker area by size; the front
    joined; the knee starred; candidates over budget in grey."""
    cands = state.get("candidates") or []
    if not cands or figure_cls is None:
        return None
    lat = (state.get("space") or {}).get("latency", "p50")
    quality = _quality_key(cands)
    pts = [c for c in cands if c.get(quality) is not None]
    if not pts:
        return None
    fig = figure_cls(figsize=(7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    biggest = max(c["size_mb"] for c in pts) or 1.0
    for group, color in (([c for c in pts if not c["feasible"]], "#bbbbbb"),
                         ([c for c in pts if c["feasible"] and not c["on_front"]], "#6a9fd4"),
                         ([c for c in pts if c["on_front"]], "#d62728")):
        if not group:
            continue
        xs, ys = [c[lat] for c in group], [c[quality] for c in group]
        lo = [c[lat] - c["latency_ci"][0] for c in group]
        hi = [c["latency_ci"][1] - c[lat] for c in group]
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="none", ecolor=color, alpha=0.6, zorder=1)
        ax.scatter(xs, ys, s=[30 + 400 * c["size_mb"] / biggest for c in group], color=color, alpha=0.8,
                   edgecolor="black", zorder=2)
    front = sorted((c for c in pts if c["on_front"]), key=lambda c: c[lat])
    ax.plot([c[lat] for c in front], [c[quality] for c in front], color="#d62728", lw=1.2, zorder=1)
    for c in pts:
        ax.annotate(f"{c['label']} {c['backend']}", (c[lat], c[quality]), xytext=(5, 4),
                    textcoords="offset points", fontsize=7, parse_math=False)
    knee = [c for c in pts if c["knee"]]
    if knee:
        ax.scatter([knee[0][lat]], [knee[0][quality]], marker="*", s=260, color="gold", edgecolor="black", zorder=4)
    ax.set_xlabel(f"{lat} latency (ms), 95% interval")
    ax.set_ylabel("accuracy (%)" if quality == "accuracy" else "cosine vs PyTorch")
    ax.grid(alpha=0.3)
    return svg_of(fig, "search-pareto")


def to_html(state: dict[str, Any]) -> str:
    summary = "<ul>" + "".join(f"<li>{esc(line).replace('**', '')}</li>" for line in _summary(state)) + "</ul>"
    chart = figure_html("Candidates: red = the noise-aware front, star = knee, grey = over budget; marker area = "
                        "size", pareto_chart, state, matplotlib_figure())
    return page("edgesdk search", ["<h1>edgesdk search</h1>", summary, chart, "<h2>Candidates</h2>",
                                   html_table(candidate_rows(state), numeric=frozenset()), "<h2>Trials</h2>",
                                   html_table(trial_rows(state), numeric=frozenset())])


def write_views(root: Path, state: dict[str, Any]) -> None:
    from edgesdk.atomic import write_text

    write_text(root / "search.md", to_markdown(state))
    write_text(root / "search.html", to_html(state))
