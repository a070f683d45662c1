"""Batch and thread sweeps: per (artifact, backend), the timed points of a report and which of them are
Pareto-optimal for latency vs throughput (``report["sweep"]``, written by ``edgesdk benchmark``).

A point is Pareto-optimal when no other point of its series has a p50 latency at least as low and a throughput
at least as high, one of the two strictly. Latency and throughput are traded against each other by the batch
size (a bigger batch usually costs latency per call and buys items per second), so the frontier is the set of
configurations worth choosing from; the others lose on both counts to one of them.

Example::

    pareto_flags([(1.0, 100.0), (2.0, 150.0), (2.5, 120.0)])   # [True, True, False]
    for s in sweep_of(report): print(s["artifact"], [p["batch"] for p in s["points"] if p["pareto"]])
"""
from __future__ import annotations

from typing import Any, Sequence


def pareto_flags(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (latency, throughput) pairs, True where no other pair dominates: none has latency <= and
    throughput >= with one of them strictly better. Equal pairs do not dominate each other, so ties are all on
    the frontier; a single point is. Quadratic, which suits sweeps of tens of points.

    Example::

        pareto_flags([(1.0, 10.0), (1.0, 10.0), (2.0, 5.0)])   # [True, True, False]
    """
    return [not any(ol <= lat and ot >= tput and (ol < lat or ot > tput) for ol, ot in points)
            for lat, tput in points]


def _point(i: int, r: dict[str, Any]) -> dict[str, Any] | None:
    """A sweep point of result row ``i``; None without a p50 or throughput (nothing to place on the chart)."""
    p50, tput = (r.get("latency_ms") or {}).get("p50"), r.get("throughput")
    if not isinstance(p50, (int, float)) or not isinstance(tput, (int, float)):
        return None
    return {"row": i, "batch": r.get("batch"), "threads": r.get("threads"), "p50_ms": p50, "throughput": tput,
            "peak_rss_mb": r.get("peak_rss_mb"), "peak_rss_scope": r.get("peak_rss_scope")}


def sweep_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One series per (artifact, backend, path) in report order: ``{artifact, backend, path, points}``, each
    point ``{row (index in results), batch, threads, p50_ms, throughput, peak_rss_mb, peak_rss_scope, pareto}``.
    Rows without a p50 or throughput are left out; Pareto flags compare points of the same series only.
    """
    series: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for i, r in enumerate(results):
        point = _point(i, r)
        if point is None:
            continue
        key = (r.get("artifact"), r.get("backend"), r.get("path"))
        s = series.setdefault(key, {"artifact": key[0], "backend": key[1], "path": key[2], "points": []})
        s["points"].append(point)
    for s in series.values():
        flags = pareto_flags([(p["p50_ms"], p["throughput"]) for p in s["points"]])
        for p, flag in zip(s["points"], flags):
            p["pareto"] = flag
    return list(series.values())


def sweep_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's stored ``sweep`` (what ``edgesdk benchmark`` writes); [] when there is none or it is
    malformed. Reports without one (from ``compress``, or an older edgesdk) keep their views as they were."""
    stored = report.get("sweep")
    if isinstance(stored, list) and all(isinstance(s, dict) and isinstance(s.get("points"), list) for s in stored):
        return stored
    return []


def is_sweep(series: list[dict[str, Any]]) -> bool:
    """Whether any series has more than one point: only then is there a trade-off to draw."""
    return any(len(s.get("points") or []) > 1 for s in series)


def pareto_by_row(series: list[dict[str, Any]]) -> dict[int, bool]:
    """Result-row index -> its Pareto flag (for views with one line per result row, e.g. CSV)."""
    return {p["row"]: bool(p.get("pareto")) for s in series for p in s.get("points") or []
            if isinstance(p.get("row"), int)}
