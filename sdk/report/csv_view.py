"""The CSV view: one line per result row (latencies in ms, throughput in samples/s, booleans true/false).

Example::

    Path("out/report.csv").write_text(to_csv(load_report("out/report.json")))
"""
from __future__ import annotations

import csv
import io
from typing import Any

from .tables import _jetson_label

# Flat CSV: one line per result row. Latencies in milliseconds, throughput in samples/s, booleans true/false.
CSV_COLUMNS = ("artifact", "backend", "format", "precision", "batch", "threads", "p50_ms", "p90_ms", "p95_ms",
               "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput", "size_bytes", "accuracy", "parity_passed",
               "speedup_vs_baseline", "cpu_model", "cores", "machine", "gpu", "jetson", "os", "edgesdk_version",
               "created", "peak_rss_mb", "peak_rss_scope", "pareto")  # later columns go last: old readers keep working

def csv_cell(v: Any) -> str:
    """A CSV cell: empty for None, true/false for booleans, repr-exact floats."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)

def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The flat rows behind to_csv(), with raw (unformatted) values."""
    from .sweep import pareto_by_row, sweep_of

    dev = report.get("device") or {}
    pareto = pareto_by_row(sweep_of(report))  # empty cell for a row not in the sweep (no p50 or throughput)
    rows = []
    for i, r in enumerate(report.get("results", [])):
        lat = r.get("latency_ms") or {}
        row: dict[str, Any] = {k: r.get(k) for k in ("artifact", "backend", "format", "precision", "batch", "threads")}
        row.update({f"{q}_ms": lat.get(q) for q in ("p50", "p90", "p95", "p99", "mean", "min", "max")})
        row.update({k: r.get(k) for k in ("throughput", "size_bytes", "accuracy", "parity_passed",
                                          "speedup_vs_baseline")})
        row.update({k: dev.get(k) for k in ("cpu_model", "cores", "machine", "gpu", "os")})
        row["jetson"] = _jetson_label(dev.get("jetson"))  # "Orin Nano (L4T 36.4.3, JetPack 6.2)", not a dict
        row.update(edgesdk_version=report.get("edgesdk_version"), created=report.get("created"),
                   peak_rss_mb=r.get("peak_rss_mb"), peak_rss_scope=r.get("peak_rss_scope"), pareto=pareto.get(i))
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
