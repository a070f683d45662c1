"""edgesdk debug --fix on the real digits INT8 artifact: the worst layers are kept in float until a cosine
budget holds (compress's accuracy budget, ranked by the debug comparison), the fixed file is written whole
beside the artifact, parity-checked and listed in the directory's manifest with each layer kept in float and its
SQNR (a device loads it by name, verified); fixed again, its entry is replaced; written elsewhere, it is not
listed; an unmeetable budget exits 4 with the best file."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.debug.fix import fix
from edgesdk.manifest import read_manifest
from edgesdk.runtimes import load
from tests.debug.refusals import assert_refused


@pytest.fixture()
def work(digits_artifacts, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digits_artifacts, out)
    return out


def _quantized_nodes(path) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def _entry(work, name):
    return {a["name"]: a for a in read_manifest(work)["artifacts"]}.get(name)


def test_fix_keeps_the_worst_layers_in_float_until_the_budget_holds(work, digits_dir, tmp_path):
    calib = str(digits_dir / "calib.npz")
    as_made = fix(work / "model.int8.onnx", calib=calib, min_cosine=0.5, out=tmp_path / "probe.onnx")
    assert as_made.met and not as_made.float_nodes  # a budget it already meets: nothing kept in float
    assert as_made.entry is None and _entry(work, "probe.onnx") is None  # outside the directory: not listed
    before = as_made.before["cosine"]
    assert before < 0.99999
    target = before + (1.0 - before) / 2  # halfway to float: reachable, not met as made
    original = read_manifest(work)["artifacts"]

    report_file = work / "fix.json"
    res = CliRunner().invoke(main, ["debug", str(work / "model.int8.onnx"), "--fix", "--calib", calib,
                                    "--min-cosine", f"{target:.9f}", "-o", str(report_file)])
    assert res.exit_code == 0, res.output
    assert "Budget met" in res.stdout and "layer kept in float" in res.stdout
    assert "listed in the manifest as `model.int8.fixed.onnx`" in res.stdout
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
    assert not list(work.glob(".fix-*")) and not list(work.glob(".budget-*"))  # no leftovers

    # the manifest: what compress wrote, and the fixed file right after the artifact it fixes
    arts = read_manifest(work)["artifacts"]
    at = [a["name"] for a in arts].index("model.int8.onnx")
    assert arts[:at + 1] + arts[at + 2:] == original and arts[at + 1]["name"] == "model.int8.fixed.onnx"
    entry = arts[at + 1]
    assert entry["sha256"] == hashlib.sha256(fixed.read_bytes()).hexdigest()
    assert entry["meta"]["fixed_from"] == "model.int8.onnx" and entry["parent"] == "model.onnx"
    assert entry["status"] == "ok" and entry["parity"]["passed"] and entry["parity"]["cosine"] >= target
    assert entry["parity"]["batches"] >= 1 and entry["accuracy"] is not None
    assert entry["meta"]["quantization"]["nodes_excluded"] == list(data["float_nodes"])
    assert "culprit" not in entry["meta"] and entry["meta"]["budget"]["min_cosine"] == pytest.approx(target)
    layers = entry["meta"]["budget"]["float_layers"]
    assert layers == data["float_layers"] and [r["rank"] for r in layers] == list(range(1, len(layers) + 1))
    kept = {n for r in layers for n in r["nodes"]}
    assert kept == set(data["float_nodes"])  # every node kept in float belongs to a listed layer
    for r in layers:  # each with the SQNR it was measured at, and where it lost it
        assert r["node"] in r["nodes"] and r["tensor"] and r["op"]
        assert r["lost_db"] == pytest.approx(r["input_sqnr_db"] - r["sqnr_db"], abs=0.02)
        assert isinstance(r["channel_sqnr_db"], float)
        assert r["module"] is None or r["module"].split(".")[0] in ("stem", "block", "head")  # DigitsNet's modules
    # a device loads it from the directory by name, its sha256 checked, and gets the gate's outputs
    x = np.load(digits_dir / "calib.npz")["x"][:4]
    with load(work, artifact="model.int8.fixed.onnx") as sess:
        assert sess.run({"x": x})[sess.outputs[0].name].shape[0] == 4
    assert _entry(work, "model.int8.fixed.onnx")["meta"]["made_by"] == "edgesdk debug --fix"

    # fixed again (a looser budget): the file is replaced, the entry with it, nothing else changes
    again = fix(work / "model.int8.onnx", calib=calib, min_cosine=0.5)
    assert again.entry is not None and not again.float_nodes
    arts = read_manifest(work)["artifacts"]
    assert [a["name"] for a in arts].count("model.int8.fixed.onnx") == 1 and len(arts) == len(original) + 1
    assert _entry(work, "model.int8.fixed.onnx")["sha256"] == hashlib.sha256(fixed.read_bytes()).hexdigest()
    assert _entry(work, "model.int8.fixed.onnx")["meta"]["budget"]["float_layers"] == []


def test_an_unmeetable_budget_exits_4_and_keeps_the_best_file(work, digits_dir):
    out = work / "best.onnx"
    res = CliRunner().invoke(main, ["debug", str(work / "model.int8.onnx"), "--fix", "--calib",
                                    str(digits_dir / "calib.npz"), "--min-cosine", "1.0", "--fix-out", str(out)])
    assert res.exit_code == 4, res.output
    assert "Budget NOT met" in res.stdout and "under 1.0" in res.stdout and out.is_file()
    entry = _entry(work, "best.onnx")  # the best file found, listed for what it is
    assert entry["status"] in ("budget_not_met", "parity_mismatch") and not entry["meta"]["budget"]["met"]
    assert entry["meta"]["budget"]["shortfall"] and "under 1.0" in entry["meta"]["budget"]["shortfall"]


def test_fix_bad_input_is_refused_cleanly(work, digits_dir, tmp_path):
    art, calib = str(work / "model.int8.onnx"), str(digits_dir / "calib.npz")
    manifest = hashlib.sha256((work / "manifest.json").read_bytes()).hexdigest()
    assert_refused([
        ([art, "--fix", "--min-cosine", "0.99"], "needs the calibration data"),
        ([art, "--calib", calib], "is for --fix"),
        ([art, "--fix", "--calib", calib], "needs a budget"),
        ([str(work / "model.onnx"), "--fix", "--calib", calib, "--min-cosine", "0.99"], "is not one"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--fix-out", art], "would overwrite"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--fix-out", str(work / "reference.npz")],
         "would overwrite"),
        ([art, "--fix", "--calib", str(work / "reference.npz"), "--min-cosine", "0.99"], "lacks inputs"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--against", "pytorch"], "not used with --fix"),
        ([art, "--fix", "--calib", calib, "--min-cosine", "0.99", "--backend", "openvino"], "not used with --fix"),
    ], tmp_path)  # (the report file: not the artifact directory, which has a report.json)
    assert not (work / "model.int8.fixed.onnx").exists()
    assert hashlib.sha256((work / "manifest.json").read_bytes()).hexdigest() == manifest
