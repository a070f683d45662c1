"""`edgesdk benchmark --batch 1,2 --threads 1,2 [--backend a,b]`: real runs of a tiny ONNX model, checked for
structure and the invariants every sweep must hold (never for timings themselves)."""
from __future__ import annotations

import importlib.util
import json
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from edgesdk.benchmarking import benchmark_paths
from edgesdk.cli import main
from edgesdk.errors import BackendUnavailableError, InputError
from tests.runtimes.conftest import mlp_model

FAST = ("--iterations", "5", "--warmup", "1")


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def dominates(a: dict, b: dict) -> bool:
    return (a["p50_ms"] <= b["p50_ms"] and a["throughput"] >= b["throughput"]
            and (a["p50_ms"] < b["p50_ms"] or a["throughput"] > b["throughput"]))


def check_frontier(points: list[dict]) -> None:
    """At least one Pareto point; none dominated by another; every other point dominated by a Pareto one."""
    front = [p for p in points if p["pareto"]]
    assert front, points
    assert not any(dominates(q, p) for p in front for q in points)
    assert all(any(dominates(f, p) for f in front) for p in points if not p["pareto"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One real sweep: batch 1,2 x threads 1,2 on onnxruntime, the report written with -o and printed as JSON."""
    tmp = tmp_path_factory.mktemp("sweep")
    model = mlp_model(tmp / "mlp.onnx")
    res = invoke("benchmark", model, "--batch", "1,2", "--threads", "1,2", "--backend", "onnxruntime", *FAST,
                 "--json", "-o", tmp / "report.json")
    assert res.exit_code == 0, res.output
    return tmp, json.loads(res.stdout)


def test_every_batch_and_thread_count_is_a_row_with_its_peak_rss(sweep):
    _, report = sweep
    rows = report["results"]
    assert sorted((r["batch"], r["threads"]) for r in rows) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]  # one session per count
    for r in rows:
        assert r["backend"] == "onnxruntime" and r["iterations"] == 5
        assert isinstance(r["peak_rss_mb"], float) and r["peak_rss_mb"] > 0
        assert r["peak_rss_scope"] in ("configuration", "process")


def test_the_sweep_marks_a_pareto_frontier(sweep):
    _, report = sweep
    (series,) = report["sweep"]
    assert (series["artifact"], series["backend"]) == ("mlp.onnx", "onnxruntime")
    points = series["points"]
    assert [p["row"] for p in points] == [0, 1, 2, 3]
    for p, r in zip(points, report["results"]):
        assert (p["batch"], p["threads"], p["p50_ms"], p["throughput"], p["peak_rss_mb"]) == (
            r["batch"], r["threads"], r["latency_ms"]["p50"], r["throughput"], r["peak_rss_mb"])
    check_frontier(points)


def test_the_views_carry_the_sweep(sweep):
    tmp, report = sweep
    assert json.loads((tmp / "report.json").read_text())["sweep"] == report["sweep"]
    res = invoke("report", "show", tmp / "report.json", "-o", tmp / "report.html")
    assert res.exit_code == 0, res.output
    html = (tmp / "report.html").read_text()
    section = html[html.index('<h2 id="sweep">Batch and thread sweep</h2>'):]
    if importlib.util.find_spec("matplotlib") is not None:
        assert section.index("<svg") < section.index("<table")  # the chart, then the table
        assert "Pareto frontier" in section
    assert "<th>peak RSS MB</th>" in section and "<th>pareto</th>" in section
    assert section.count('<td class="best">yes</td>') == sum(p["pareto"] for p in report["sweep"][0]["points"])
    md = invoke("report", "show", tmp / "report.json").stdout
    assert "## Batch and thread sweep" in md and "| threads |" in md
    csv_lines = invoke("report", "show", tmp / "report.json", "--format", "csv").stdout.splitlines()
    header = csv_lines[0].split(",")
    assert {"threads", "peak_rss_mb", "peak_rss_scope", "pareto"} <= set(header)
    pareto = [line.split(",")[header.index("pareto")] for line in csv_lines[1:]]
    assert pareto == ["true" if p["pareto"] else "false" for p in report["sweep"][0]["points"]]


@pytest.mark.parametrize("value", ["0,x", "0", "1,-2", "two", ","])
def test_bad_threads_are_refused_clearly(tmp_path, value):
    res = invoke("benchmark", mlp_model(tmp_path / "m.onnx"), "--threads", value, *FAST)
    assert res.exit_code == 2, res.output
    assert f"bad --threads value {value!r}" in res.output and "integers, e.g. 2 or 1,2,4" in res.output
    assert f"found:    {value}" in res.output and "Traceback" not in res.output


def test_auto_cannot_be_swept_with_named_backends(tmp_path):
    res = invoke("benchmark", mlp_model(tmp_path / "m.onnx"), "--backend", "auto,onnxruntime", *FAST)
    assert res.exit_code == 2 and "bad --backend value" in res.output and "Traceback" not in res.output


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_a_backend_sweep_gives_one_series_per_backend(tmp_path):
    res = invoke("benchmark", mlp_model(tmp_path / "m.onnx"), "--backend", "onnxruntime,openvino", "--batch",
                 "1,2", *FAST, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert sorted((r["backend"], r["batch"]) for r in report["results"]) == [
        ("onnxruntime", 1), ("onnxruntime", 2), ("openvino", 1), ("openvino", 2)]
    assert [s["backend"] for s in report["sweep"]] == ["onnxruntime", "openvino"]
    for s in report["sweep"]:
        check_frontier(s["points"])


def test_the_api_takes_one_thread_count_or_a_tuple(tmp_path):
    model = mlp_model(tmp_path / "m.onnx")
    one = benchmark_paths([model], threads=1, iterations=2, warmup=0)
    assert [r["threads"] for r in one["results"]] == [1]
    both = benchmark_paths([model], threads=(2, 1, 2), batches=(1,), iterations=2, warmup=0)
    assert [r["threads"] for r in both["results"]] == [2, 1]  # in order, repeats dropped
    for bad in ((0,), (1, "2"), True, 2.5, ()):
        with pytest.raises(InputError):
            benchmark_paths([model], threads=bad, iterations=2, warmup=0)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tvm'"):
        benchmark_paths([model], backend=("onnxruntime", "tvm"), iterations=2, warmup=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-configuration reset is Linux's")
def test_peak_rss_is_per_configuration_not_the_process_high_water_mark(tmp_path):
    """A 256 MB array freed before the run raises the process's high-water mark; a per-configuration peak of
    a model of a few bytes must stay below it (only the process-wide figure would include it)."""
    model = mlp_model(tmp_path / "m.onnx")
    big = np.ones(256 << 17)  # 256 MB of float64, every page touched
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB, after the array
    del big
    report = benchmark_paths([model], batches=(1, 2), iterations=2, warmup=0)
    for r in report["results"]:
        if r["peak_rss_scope"] != "configuration":
            pytest.skip("this kernel or sandbox refuses to reset the peak RSS (/proc/self/clear_refs)")
        assert r["peak_rss_mb"] < before - 128, (r["peak_rss_mb"], before)
