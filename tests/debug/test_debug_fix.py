"""edgesdk debug --fix on the real digits INT8 artifact: the worst layers are kept in float until a cosine
budget holds (compress's accuracy budget, ranked by the debug comparison), the fixed file is written whole
beside the artifact, the directory's manifest is left alone; an unmeetable budget exits 4 with the best file."""
from __future__ import annotations

import hashlib
import json
import shutil

import onnx
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.debug.fix import fix
from tests.debug.refusals import assert_refused


@pytest.fixture()
def work(digits_artifacts, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digits_artifacts, out)
    return out


def _quantized_nodes(path) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def test_fix_keeps_the_worst_layers_in_float_until_the_budget_holds(work, digits_dir):
    calib = str(digits_dir / "calib.npz")
    as_made = fix(work / "model.int8.onnx", calib=calib, min_cosine=0.5, out=work / "probe.onnx")
    assert as_made.met and not as_made.float_nodes  # a budget it already meets: nothing kept in float
    before = as_made.before["cosine"]
    assert before < 0.99999
    target = before + (1.0 - before) / 2  # halfway to float: reachable, not met as made
    manifest = hashlib.sha256((work / "manifest.json").read_bytes()).hexdigest()

    report_file = work / "fix.json"
    res = CliRunner().invoke(main, ["debug", str(work / "model.int8.onnx"), "--fix", "--calib", calib,
                                    "--min-cosine", f"{target:.9f}", "-o", str(report_file)])
    assert res.exit_code == 0, res.output
    assert "Budget met" in res.stdout and "node kept in float" in res.stdout
    data = json.loads(report_file.read_text())["fix"]
    assert data["met"] and data["after"]["cosine"] >= target > data["before"]["cosine"]
    assert data["float_nodes"] and all("SQNR" in why for why in data["float_nodes"].values())
    assert data["tries"][0]["float_nodes"] == 0 and not data["tries"][0]["met"]
    fixed = work / "model.int8.fixed.onnx"
    assert data["fixed"] == str(fixed) and fixed.is_file()
    graph = onnx.load(str(fixed)).graph
    names = {n.name for n in graph.node}
    assert set(data["float_nodes"]) <= names  # the nodes kept in float are still there, unquantized
    assert _quantized_nodes(fixed) < _quantized_nodes(work / "model.int8.onnx")
    assert hashlib.sha256((work / "manifest.json").read_bytes()).hexdigest() == manifest
    assert not list(work.glob(".fix-*")) and not list(work.glob(".budget-*"))  # no leftovers


def test_an_unmeetable_budget_exits_4_and_keeps_the_best_file(work, digits_dir):
    out = work / "best.onnx"
    res = CliRunner().invoke(main, ["debug", str(work / "model.int8.onnx"), "--fix", "--calib",
                                    str(digits_dir / "calib.npz"), "--min-cosine", "1.0", "--fix-out", str(out)])
    assert res.exit_code == 4, res.output
    assert "Budget NOT met" in res.stdout and "under 1.0" in res.stdout and out.is_file()


def test_fix_bad_input_is_refused_cleanly(work, digits_dir, tmp_path):
    art, calib = str(work / "model.int8.onnx"), str(digits_dir / "calib.npz")
    assert_refused([
        ([art, "--fix", "--min-cosine", "0.99"], "needs the calibration data"),
        ([art, "--calib", calib], "is for --fix"),
        ([art, "--fix", "--calib", calib], "needs a budget"),
        ([str(work / "model.onnx"), "--fix", "--calib", calib, "--min-cosine", "0.99"], "is not one"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--fix-out", art], "would overwrite"),
        ([art, "--fix", "--calib", str(work / "reference.npz"), "--min-cosine", "0.99"], "lacks inputs"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--against", "pytorch"], "not used with --fix"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--backend", "openvino"], "not used with --fix"),
    ], tmp_path)  # (the report file: not the artifact directory, which has a report.json)
    assert not (work / "model.int8.fixed.onnx").exists()
