"""The Pareto computation and the sweep summary behind `benchmark --batch ... --threads ...` (pure functions)."""
from __future__ import annotations

import pytest

from edgesdk.report import render, to_csv
from edgesdk.report.sweep import is_sweep, pareto_by_row, pareto_flags, sweep_of, sweep_summary
from edgesdk.report.tables import sweep_rows


def test_single_point_is_on_the_frontier():
    assert pareto_flags([(3.0, 10.0)]) == [True]
    assert pareto_flags([]) == []


def test_dominated_points_are_off_the_frontier():
    # (2, 150) and (1, 100) trade latency for throughput; (2.5, 120) loses to (2, 150) on both counts
    assert pareto_flags([(1.0, 100.0), (2.0, 150.0), (2.5, 120.0)]) == [True, True, False]


def test_equal_points_do_not_dominate_each_other():
    assert pareto_flags([(1.0, 10.0), (1.0, 10.0), (2.0, 5.0)]) == [True, True, False]


def test_one_strictly_better_coordinate_is_enough_to_dominate():
    # same latency, more throughput; same throughput, less latency
    assert pareto_flags([(1.0, 10.0), (1.0, 12.0)]) == [False, True]
    assert pareto_flags([(1.0, 10.0), (0.5, 10.0)]) == [False, True]


def test_every_point_of_a_trade_off_curve_is_pareto():
    assert all(pareto_flags([(float(b), 100.0 * b ** 0.5) for b in (1, 2, 4, 8, 16, 32)]))


def _row(artifact: str, backend: str, batch: int, threads: int | None, p50: float | None, tput: float | None,
         rss: float | None = 50.0) -> dict:
    return {"artifact": artifact, "backend": backend, "path": f"/m/{artifact}", "batch": batch, "threads": threads,
            "latency_ms": {"p50": p50} if p50 is not None else {}, "throughput": tput, "peak_rss_mb": rss,
            "peak_rss_scope": "configuration"}


def test_sweep_summary_groups_by_artifact_and_backend_and_keeps_row_indices():
    results = [_row("a.onnx", "onnxruntime", 1, 1, 1.0, 1000.0), _row("a.onnx", "openvino", 1, 1, 0.5, 2000.0),
               _row("a.onnx", "onnxruntime", 2, 1, 1.5, 900.0), _row("a.onnx", "onnxruntime", 4, 1, None, None)]
    series = sweep_summary(results)
    assert [(s["artifact"], s["backend"]) for s in series] == [("a.onnx", "onnxruntime"), ("a.onnx", "openvino")]
    ort, ov = series
    assert [p["row"] for p in ort["points"]] == [0, 2]  # the untimed row 3 is left out
    assert [p["pareto"] for p in ort["points"]] == [True, False]  # compared within its own series only
    assert ov["points"][0]["pareto"] is True
    assert set(ort["points"][0]) == {"row", "batch", "threads", "p50_ms", "throughput", "peak_rss_mb",
                                     "peak_rss_scope", "pareto"}
    assert pareto_by_row(series) == {0: True, 2: False, 1: True}
    assert is_sweep(series) and not is_sweep([ov])


def _report(rows: list[dict]) -> dict:
    """A report as `edgesdk benchmark` writes it: results and their stored sweep."""
    return {"schema_version": 1, "results": rows, "sweep": sweep_summary(rows)}


def test_views_show_the_sweep_only_when_a_series_has_several_points():
    one = _report([_row("a.onnx", "onnxruntime", 1, 1, 1.0, 1000.0)])
    assert sweep_rows(one) == [] and "Batch and thread sweep" not in render(one, "md")
    two = _report([_row("a.onnx", "onnxruntime", 1, 1, 1.0, 1000.0),
                   _row("a.onnx", "onnxruntime", 8, 1, 2.0, 4000.0, rss=None)])
    rows = sweep_rows(two)
    assert [r["pareto"] for r in rows] == ["yes", "yes"] and rows[1]["peak RSS MB"] == "-"
    assert "## Batch and thread sweep" in render(two, "md")
    header, first, _ = to_csv(two).splitlines()
    cells = dict(zip(header.split(","), first.split(",")))
    assert cells["threads"] == "1" and cells["peak_rss_mb"] == "50.0" and cells["pareto"] == "true"
    assert cells["peak_rss_scope"] == "configuration"


def test_a_process_wide_peak_is_flagged_not_passed_off_as_per_configuration():
    rows = [_row("a.onnx", "onnxruntime", b, 1, float(b), 100.0 * b) for b in (1, 2)]
    rows[1]["peak_rss_scope"] = "process"
    report = _report(rows)
    assert [r["peak RSS MB"] for r in sweep_rows(report)] == ["50.0", "50.0*"]
    assert "high-water mark so far" in render(report, "md")


def test_only_a_stored_sweep_is_shown():
    """Reports without a sweep (from compress, whose batch rows are not a sweep run) keep their views."""
    rows = [_row("a.onnx", "onnxruntime", b, 1, float(b), 100.0 * b) for b in (1, 2)]
    plain = {"schema_version": 1, "results": rows}
    assert sweep_of(plain) == [] and sweep_rows(plain) == [] and "sweep" not in render(plain, "html")
    assert to_csv(plain).splitlines()[1].endswith(",50.0,configuration,")  # no pareto cell without a sweep
    assert sweep_of({**plain, "sweep": "not a list"}) == []  # hand-edited or foreign: ignored
    assert sweep_of(_report(rows)) == sweep_summary(rows)


def test_the_html_sweep_chart_draws_names_that_look_like_mathtext():
    pytest.importorskip("matplotlib")
    rows = [_row("m_$x.onnx", "onnxruntime", b, t, float(b) / t, 100.0 * b * t) for t in (1, 2) for b in (1, 2)]
    html = render(_report(rows), "html")
    section = html[html.index('<h2 id="sweep">'):]
    assert section.count("<svg") == 1 and "chart not drawn" not in html
    assert "m_$x.onnx" in section
