"""The debug report's views: the noise summed over the PyTorch module tree, and the HTML page with its
per-layer chart (rendered in a real headless Chromium), on the real digits INT8 artifact."""
from __future__ import annotations

import html
import json
import re

import pytest
from click.testing import CliRunner
from edgesdk.cli import main
from edgesdk.debug import DebugReport, LayerDivergence, debug
from edgesdk.debug.html import to_html
from edgesdk.debug.report import NO_MODULE, TOP_LEVEL, module_tree

from tests.browser import CHROMIUM, colour_stats, read_png, screenshot


@pytest.fixture(scope="module")
def int8_report(digits_artifacts) -> DebugReport:
    return debug(digits_artifacts / "model.int8.onnx")


def _layer(order: int, module: str | None, sqnr: float, noise: float) -> LayerDivergence:
    return LayerDivergence(tensor=f"t{order}", op="Conv", node=f"n{order}", module=module, module_class=None,
                           order=order, shape=[1], cosine=0.99, sqnr_db=sqnr, max_abs_err=0.1, max_rel_err=0.01,
                           input_sqnr_db=200.0, jump_db=200.0 - sqnr, added_noise=noise)


def test_module_tree_sums_noise_parent_first_in_graph_order():
    layers = [_layer(3, "b.0", 20.0, 0.3), _layer(0, "a", 30.0, 0.1), _layer(1, "b.1.conv", 25.0, 0.4),
              _layer(2, "", 40.0, 0.0), _layer(4, None, 35.0, 0.2)]
    tree = module_tree(layers)
    assert [(m.module, m.depth, m.layers) for m in tree] == [
        ("a", 0, 1), ("b", 0, 2), ("b.1", 1, 1), ("b.1.conv", 2, 1), ("b.0", 1, 1), (TOP_LEVEL, 0, 1),
        (NO_MODULE, 0, 1)]
    b = next(m for m in tree if m.module == "b")
    assert b.added_noise == pytest.approx(0.7) and b.noise_share == pytest.approx(0.7)
    assert b.worst_sqnr_db == 20.0 and b.worst_tensor == "t3"
    assert sum(m.noise_share for m in tree if m.depth == 0) == pytest.approx(1.0)
    assert module_tree([]) == []


def test_module_tree_of_the_digits_int8_file(int8_report):
    report = int8_report
    tree = report.modules
    tops = [m for m in tree if m.depth == 0]
    assert {m.module for m in tops} >= {"stem", "block", "head"}
    assert sum(m.layers for m in tops) == len(report.layers)
    assert sum(m.noise_share for m in tops) == pytest.approx(1.0, abs=1e-3)
    for i, m in enumerate(tree):  # a child follows its parent, and holds no more layers or noise than it
        if m.depth:
            parent = next(p for p in reversed(tree[:i]) if p.depth == m.depth - 1)
            assert m.module.startswith(parent.module + ".")
            assert m.layers <= parent.layers and m.added_noise <= parent.added_noise + 1e-12
    data = report.to_dict()
    assert [m["module"] for m in data["modules"]] == [m.module for m in tree]


def test_html_page_is_self_contained_names_the_first_jump_and_escapes(int8_report, digits_artifacts, tmp_path):
    pytest.importorskip("matplotlib")
    report = int8_report
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1
    assert "<script" not in page and not re.search(r"""(src|href)=["']?https?:""", page)
    text = html.unescape(page)
    jump = report.first_jump
    assert f"First jump: {jump.module}" in text
    assert "Noise by module" in text and all(m.module in text for m in report.modules)

    hostile = DebugReport(artifact="<b>x</b>.onnx", reference="r.onnx", reference_choice="given", inputs="i",
                          layers=[_layer(0, "<script>alert(1)</script>", 20.0, 0.5)])
    bad = to_html(hostile)
    assert "<script>" not in bad and "<b>x</b>" not in bad and "&lt;script&gt;" in bad

    for suffix, head in (("html", "<!DOCTYPE html>"), ("md", "# edgesdk debug"), ("json", "{")):
        out = tmp_path / f"debug.{suffix}"
        res = CliRunner().invoke(main, ["debug", str(digits_artifacts / "model.int8.onnx"), "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert out.read_text().lstrip().startswith(head), suffix
    assert json.loads((tmp_path / "debug.json").read_text())["modules"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium) to render the HTML page")
def test_html_chart_renders_in_headless_chromium(int8_report, tmp_path):
    pytest.importorskip("matplotlib")
    page = to_html(int8_report)
    full, bare = tmp_path / "debug.html", tmp_path / "bare.html"
    full.write_text(page, encoding="utf-8")
    bare.write_text(re.sub(r"<svg.*?</svg>", "", page, flags=re.S), encoding="utf-8")
    screenshot(CHROMIUM, full, tmp_path / "full.png", tmp_path)
    screenshot(CHROMIUM, bare, tmp_path / "bare.png", tmp_path)
    distinct, saturated = colour_stats(read_png(tmp_path / "full.png"))
    _, saturated_bare = colour_stats(read_png(tmp_path / "bare.png"))
    assert distinct > 100, distinct  # not a blank page
    assert saturated - saturated_bare > 1000, (saturated, saturated_bare)  # the chart's coloured points and bars
