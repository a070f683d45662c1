"""Report views (HTML, CSV), cross-device merge and the regression check, on a real digits report."""
from __future__ import annotations

import copy
import csv
import html
import importlib.util
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.report import CSV_COLUMNS, load_report, to_csv, write_report_views
from edgesdk.report.html_view import to_html
from tests.browser import CHROMIUM, colour_stats as _colour_stats, read_png as _read_png, screenshot as _screenshot

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_clean_error(result, *needles: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, f"{n!r} not in:\n{result.output}"


@pytest.fixture()
def report(digits_artifacts: Path) -> dict:
    """A fresh copy of the real digits report (the fixture directory stays untouched)."""
    return json.loads((digits_artifacts / "report.json").read_text())


def save(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def other_device(report: dict, p50_factor: float = 2.0) -> dict:
    """The same report as if measured on a Jetson: another fingerprint and slower latencies."""
    rep = copy.deepcopy(report)
    rep["device"].update(cpu_model="ARM Cortex-A78AE", cores=6, gpu="Orin (nvgpu)", jetson="NVIDIA Jetson Orin Nano",
                         hostname="orin-01", machine="aarch64")
    for r in rep["results"]:
        r["latency_ms"] = {k: v * p50_factor for k, v in r["latency_ms"].items()}
    return rep


# --- HTML -----------------------------------------------------------------------------------------

def test_html_is_self_contained_with_charts(report):
    pytest.importorskip("matplotlib")
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I), "links out of the page"
    assert not re.search(r"<script|<link|@import|url\(\s*['\"]?https?:", page, re.I)
    assert page.count("<svg") == 2, "latency and size charts"
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    for needle in ("Device", "Recipe", "Results", "What each step bought", "model.int8.onnx", "p99 ms", "speed-up",
                   "accuracy", "parity", report["device"]["cpu_model"]):
        assert needle in html.unescape(page), needle


def test_html_escapes_every_string(report):
    pytest.importorskip("matplotlib")
    evil = '<script>alert("x")</script>$\\x$ & co'
    report["results"][1]["artifact"] = evil
    report["artifacts"][0]["name"] = evil
    report["artifacts"][0]["meta"]["warnings"] = ["<img src=http://evil/x.png>"]
    report["device"]["cpu_model"] = '"><b>cpu</b>'
    report["calibration"] = "RANDOM <i>noise</i>"
    page = to_html(report)
    assert "<script" not in page and "<img" not in page and "<b>cpu" not in page and "<i>noise" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=http://evil/x.png&gt;" in page
    assert page.count("<svg") == 2, "mathtext-like names must not break the charts"


def test_html_without_matplotlib_still_renders(report, monkeypatch):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    page = to_html(report)
    assert "<svg" not in page
    assert "pip install 'edgesdk[report]'" in html.unescape(page)
    assert "model.int8.onnx" in page and "<table>" in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium) to render the HTML report")
def test_html_renders_in_headless_chromium(report, tmp_path):
    pytest.importorskip("matplotlib")
    import numpy as np

    page = to_html(report)
    with_charts = tmp_path / "report.html"
    with_charts.write_text(page, encoding="utf-8")
    no_charts = tmp_path / "nocharts.html"
    no_charts.write_text(re.sub(r"<svg.*?</svg>", "", page, flags=re.S), encoding="utf-8")
    shot, bare = tmp_path / "shot.png", tmp_path / "bare.png"
    _screenshot(CHROMIUM, with_charts, shot, tmp_path)
    _screenshot(CHROMIUM, no_charts, bare, tmp_path)
    rgb, rgb_bare = _read_png(shot), _read_png(bare)
    assert rgb.shape[:2] == (2000, 1280)
    distinct, saturated = _colour_stats(rgb)
    _, saturated_bare = _colour_stats(rgb_bare)
    # the page is not blank, and the charts add colour that the same page without its SVGs lacks
    assert distinct > 200, distinct
    assert saturated - saturated_bare > 1000, (saturated, saturated_bare)
    changed_rows = np.nonzero((rgb != rgb_bare).any(axis=(1, 2)))[0]
    assert len(changed_rows) > 300, "the charts should take several hundred pixel rows"
    chart_region = rgb[changed_rows.min():changed_rows.max() + 1]
    region_distinct, region_saturated = _colour_stats(chart_region)
    assert region_distinct > 100 and region_saturated > 1000, (region_distinct, region_saturated)
    if os.environ.get("EDGESDK_SAVE_SCREENSHOT"):
        dest = ROOT / "docs" / "img" / "report-screenshot.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)


# --- CSV and the views written next to report.json --------------------------------------------------

def test_csv_has_one_flat_row_per_result(report):
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(report["results"])
    for row, r in zip(rows, report["results"]):
        assert row["artifact"] == r["artifact"] and int(row["batch"]) == r["batch"]
        assert float(row["p50_ms"]) == pytest.approx(r["latency_ms"]["p50"])
        assert float(row["throughput"]) == pytest.approx(r["throughput"])
        assert row["parity_passed"] in ("true", "false", "")
        assert row["cpu_model"] == report["device"]["cpu_model"]
    assert {row["precision"] for row in rows} == {"fp32", "int8"}


def test_write_report_views(report, tmp_path):
    names = write_report_views(tmp_path, report)
    assert names == ["report.md", "report.html", "report.csv"]
    assert (tmp_path / "report.md").read_text().startswith("# edgesdk report")
    assert "<table>" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.csv").read_text().startswith("artifact,backend,")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names), "no temp files left"


def test_cli_show_formats(digits_artifacts, tmp_path):
    src = digits_artifacts / "report.json"
    res = invoke("report", src)  # the short form = report show
    assert res.exit_code == 0 and "| model.int8.onnx |" in res.output
    res = invoke("report", "show", src, "--format", "csv")
    assert res.exit_code == 0 and res.stdout.startswith("artifact,backend,format,")
    res = invoke("report", "--json", src)
    assert json.loads(res.stdout)["schema_version"] == 1
    out = tmp_path / "view.html"
    res = invoke("report", "show", digits_artifacts, "-o", out)  # a directory works too
    assert res.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    res = invoke("report", "show", src, "-o", tmp_path / "view.txt")
    assert_clean_error(res, "view.txt", "--format")


# --- merge -------------------------------------------------------------------------------------------

def test_merge_puts_devices_side_by_side(report, tmp_path):
    a = save(tmp_path / "xeon" / "report.json", report)
    b = save(tmp_path / "orin" / "report.json", other_device(report))
    out = tmp_path / "merged.json"
    res = invoke("report", "merge", a, b, "-o", out)
    assert res.exit_code == 0, res.output
    merged = json.loads(out.read_text())
    labels = [d["label"] for d in merged["devices"]]
    assert len(labels) == 2 and labels[1] == "NVIDIA Jetson Orin Nano @orin-01"
    from edgesdk.report.merge import device_label

    assert labels[0] == device_label(report["device"])  # this machine's CPU, whatever it is
    assert len(merged["rows"]) == len(report["results"])
    for row in merged["rows"]:
        assert set(row["cells"]) == set(labels)
        xeon, orin = (row["cells"][lab] for lab in labels)
        assert orin["p50_ms"] == pytest.approx(2 * xeon["p50_ms"])
    md = invoke("report", "merge", a, b).output  # Markdown to the terminal by default
    header = next(line for line in md.splitlines() if line.startswith("| artifact"))
    assert header.count("|") - 1 == 4 + 2 and all(lab in header for lab in labels)
    rows = list(csv.DictReader(io.StringIO(invoke("report", "merge", a, b, "--format", "csv").stdout)))
    assert f"{labels[1]} p50_ms" in rows[0] and f"{labels[0]} accuracy" in rows[0]
    page = tmp_path / "merged.html"
    assert invoke("report", "merge", a, b, "-o", page).exit_code == 0
    assert all(html.escape(lab) in page.read_text() for lab in labels)
    if importlib.util.find_spec("matplotlib"):
        assert page.read_text().count("<svg") == 1  # the p50-per-device chart


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium) to render the HTML report")
def test_merged_html_chart_shows_one_bar_colour_per_device(report, tmp_path):
    pytest.importorskip("matplotlib")
    import numpy as np

    a = save(tmp_path / "xeon" / "report.json", report)
    b = save(tmp_path / "orin" / "report.json", other_device(report))
    page = tmp_path / "merged.html"
    assert invoke("report", "merge", a, b, "-o", page).exit_code == 0
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<svg.*?</svg>", "", page.read_text(), flags=re.S), encoding="utf-8")
    shot, shot_bare = tmp_path / "merged.png", tmp_path / "bare.png"
    _screenshot(CHROMIUM, page, shot, tmp_path)
    _screenshot(CHROMIUM, bare, shot_bare, tmp_path)

    def near(rgb: "object", colour: tuple[int, int, int]) -> int:
        d = np.abs(np.asarray(rgb).astype(np.int32) - np.array(colour)).max(axis=-1)
        return int((d <= 12).sum())

    rgb, rgb_bare = _read_png(shot), _read_png(shot_bare)
    for colour in ((31, 119, 180), (255, 127, 14)):  # tab10's first two: one per device
        assert near(rgb, colour) > 500 and near(rgb_bare, colour) == 0, colour


def test_merge_same_device_is_told_apart_by_file(report, tmp_path):
    a = save(tmp_path / "monday.json", report)
    b = save(tmp_path / "tuesday.json", report)
    merged = json.loads(invoke("report", "merge", a, b, "--format", "json").stdout)
    labels = [d["label"] for d in merged["devices"]]
    assert labels[0] != labels[1] and "monday.json" in labels[0] and "tuesday.json" in labels[1]


def test_merge_of_one_report_is_allowed(report, tmp_path):
    res = invoke("report", "merge", save(tmp_path / "r.json", report))
    assert res.exit_code == 0 and "model.int8.onnx" in res.output


# --- compare -----------------------------------------------------------------------------------------

def test_compare_identical_reports_pass(digits_artifacts):
    src = digits_artifacts / "report.json"
    res = invoke("report", "compare", src, src)
    assert res.exit_code == 0, res.output
    assert "ok: no regression" in res.output and "model.int8.onnx" in res.output


def _without_distributions(report: dict) -> dict:
    """The report as an older edgesdk wrote it: percentiles only, no samples or confidence intervals."""
    rep = copy.deepcopy(report)
    for r in rep["results"]:
        r.pop("samples_ms", None)
        r["latency_ms"] = {k: v for k, v in r["latency_ms"].items() if "_ci_" not in k}
    return rep


def test_compare_flags_a_slower_row(report, tmp_path):
    # rows without stored distributions (older reports) are judged on the threshold alone
    report = _without_distributions(report)
    base = save(tmp_path / "base.json", report)
    slower = copy.deepcopy(report)
    row = next(r for r in slower["results"] if r["artifact"] == "model.onnx" and r["batch"] == 1)
    row["latency_ms"]["p50"] *= 1.2
    new = save(tmp_path / "new.json", slower)
    res = invoke("report", "compare", base, new, "--max-regression", "5%")
    assert res.exit_code == 1, res.output
    assert "REGRESSED: 1 regression" in res.output
    assert "model.onnx onnxruntime fp32 1: p50 ms" in res.output and "+20.0%" in res.output
    table_line = next(ln for ln in res.output.splitlines() if ln.startswith("model.onnx") and "p50 ms" in ln
                      and ln.endswith("REGRESSED"))
    assert " 1 " in table_line and "threshold only (no stored distribution)" in table_line
    data = json.loads(invoke("report", "compare", base, new, "--json").stdout)
    assert data["regressed"] is True and len(data["regressions"]) == 1
    assert invoke("report", "compare", base, new, "--max-regression", "25%").exit_code == 0
    assert invoke("report", "compare", base, new, "--max-regression", "0.25").exit_code == 0
    assert_clean_error(invoke("report", "compare", base, new, "--max-regression", "5"), "5%", "0.05")


def test_compare_accuracy_size_parity_and_added_rows(report, tmp_path):
    base = save(tmp_path / "base.json", report)
    worse = copy.deepcopy(report)
    int8 = [r for r in worse["results"] if r["artifact"] == "model.int8.onnx"]
    for r in int8:
        r["accuracy"] -= 6.0
        r["parity_passed"] = False
        r["size_bytes"] = int(r["size_bytes"] * 1.5)
    extra = copy.deepcopy(int8[0])
    extra["batch"] = 32
    worse["results"].append(extra)
    res = invoke("report", "compare", base, save(tmp_path / "new.json", worse), "--json")
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    bad = {(r["artifact"], r["batch"]): {m["metric"] for m in r["metrics"] if m["verdict"] == "REGRESSED"}
           for r in data["rows"] if r["verdict"] == "REGRESSED"}
    assert bad == {("model.int8.onnx", 1): {"accuracy", "parity_passed", "size_bytes"},
                   ("model.int8.onnx", 8): {"accuracy", "parity_passed", "size_bytes"}}
    assert data["added"] == [{"artifact": "model.int8.onnx", "backend": "onnxruntime", "precision": "int8",
                              "batch": 32}]
    data = json.loads(invoke("report", "compare", base, tmp_path / "new.json", "--json", "--max-accuracy-drop",
                             "10").stdout)
    assert all(m["metric"] != "accuracy" or m["verdict"] == "ok" for r in data["rows"] for m in r["metrics"])


def test_compare_without_common_rows_is_a_clear_error(report, tmp_path):
    other = copy.deepcopy(report)
    for r in other["results"]:
        r["artifact"] = "other-" + r["artifact"]
    res = invoke("report", "compare", save(tmp_path / "a.json", report), save(tmp_path / "b.json", other))
    assert_clean_error(res, "no result rows in common", "other-model.onnx", code=2)


# --- bad inputs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["show", "merge", "compare"])
def test_not_json_names_the_file(command, digits_artifacts, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"results": [\n  oops\n]}')
    args = {"show": [bad], "merge": [digits_artifacts / "report.json", bad],
            "compare": [digits_artifacts / "report.json", bad]}[command]
    assert_clean_error(invoke("report", command, *args), "notes.json", "is not a JSON report", "line 2, column 3")


def test_foreign_and_binary_files_are_refused(tmp_path):
    foreign = save(tmp_path / "package.json", {"name": "left-pad", "version": "1.3.0"})
    assert_clean_error(invoke("report", foreign), "package.json is not an edgesdk report", "schema_version")
    blob = tmp_path / "model.json"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert_clean_error(invoke("report", "show", blob), "model.json", "not UTF-8")
    assert_clean_error(invoke("report", tmp_path / "missing.json"), "not found", "missing.json")


def test_newer_schema_is_refused(report, tmp_path):
    report["schema_version"] = 2
    report["edgesdk_version"] = "9.0.0"
    future = save(tmp_path / "future.json", report)
    for args in (["show", future], ["merge", future], ["compare", future, future]):
        assert_clean_error(invoke("report", *args), "future.json", "newer edgesdk", "schema version 1",
                           "pip install -U edgesdk")


def test_older_schema_is_upgraded_when_a_migration_is_known(report, tmp_path, monkeypatch):
    from edgesdk import report as report_mod

    report["schema_version"] = 0
    report["results_v0"] = report.pop("results")  # a made-up old layout
    old = save(tmp_path / "old.json", report)
    assert_clean_error(invoke("report", old), "old.json", "schema version 0", "cannot upgrade")

    def v0_to_v1(data: dict) -> dict:
        data["results"] = data.pop("results_v0")
        return data

    monkeypatch.setitem(report_mod.MIGRATIONS, 0, v0_to_v1)
    upgraded = load_report(old)
    assert upgraded["schema_version"] == 1 and "results_v0" not in upgraded
    assert invoke("report", "compare", old, old).exit_code == 0
