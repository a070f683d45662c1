"""edgesdk debug on a full-integer TFLite file against the float file it was quantized from (LiteRT, tensor by
tensor by name, no PyTorch), and --fix on it: the ops INT8 hurts most are left in float32 by ai-edge-quantizer
(NO_QUANTIZE) until a cosine budget holds; the fixed file is parity-checked on LiteRT and listed in the manifest
with each layer kept in float and its SQNR; the kept ops really run in float32 in the file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.debug import debug
from edgesdk.debug.fix import fix
from edgesdk.debug.tflite import location_module
from edgesdk.manifest import read_manifest
from edgesdk.runtimes import load
from tests.conftest import DIGITS_MODEL
from tests.debug.refusals import assert_refused

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")


@pytest.fixture(scope="module")
def made(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fix-tflite") / "out"
    res = CliRunner().invoke(main, [
        "compress", f"{DIGITS_MODEL}:build", "--weights", str(digits_dir / "weights.safetensors"),
        "--input", "x:1x1x8x8", "--calib", str(digits_dir / "calib.npz"), "--targets", "tflite",
        "--quantize", "int8", "--no-benchmark", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture()
def work(made, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(made, out)
    return out


def _float_ops(path) -> dict[str, str]:
    """{output tensor name: op} of the ops of a TFLite file that compute in float32 (not DEQUANTIZE)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    det = {d["index"]: d for d in it.get_tensor_details()}
    return {det[int(o)]["name"]: op["op_name"] for op in it._get_ops_details()
            for o in op["outputs"] if op["op_name"] not in ("DEQUANTIZE", "DELEGATE")
            and det[int(o)]["dtype"] == np.float32}


def test_location_names_give_module_paths_without_pytorch():
    seg = "torch.nn.modules.container.Sequential_stem/torch.nn.modules.conv.Conv2d_conv_1"
    assert location_module(f"pkg.Net/{seg};1") == ("stem.conv_1", "Conv2d")
    assert location_module(f"litert_torch.W/pkg.Net_wrapped/{seg};") == ("stem.conv_1", "Conv2d")
    assert location_module("pkg.Net;2") == ("", None)  # the model's own forward
    assert location_module("x") == (None, None)  # an input: no location


def test_int8_tflite_is_compared_with_its_float_file_without_pytorch(made):
    report = debug(made / "model.int8.tflite")
    assert report.backend == "litert" and report.reference == str(made / "model.tflite")
    assert "float file it was quantized from" in report.reference_choice
    modules = {d.module for d in report.layers}
    assert {"stem.0.2", "block.2"} <= modules and len(report.layers) >= 6
    # the head writes the renamed graph output: its module is read from its weights' names
    assert [(d.module, d.module_class) for d in report.layers if d.op == "FULLY_CONNECTED"] == [("head", "Linear")]
    assert not report.agree and report.first_jump is not None
    assert all(d.sqnr_db < 60 for d in report.layers if d.op in ("CONV_2D", "FULLY_CONNECTED"))
    same = debug(made / "model.tflite", against=made / "model.tflite")  # a file against itself: exact
    assert same.agree and all(d.added_noise == 0 for d in same.layers)


def test_fix_keeps_the_worst_ops_in_float_until_the_budget_holds(work, digits_dir, tmp_path):
    calib = str(digits_dir / "calib.npz")
    as_made = fix(work / "model.int8.tflite", calib=calib, min_cosine=0.5, out=tmp_path / "probe.tflite")
    assert as_made.met and not as_made.float_nodes and as_made.entry is None
    before = as_made.before["cosine"]
    assert before < 0.99999
    target = before + (1.0 - before) / 2  # halfway to float: reachable, not met as made

    report_file = work / "fix.json"
    res = CliRunner().invoke(main, ["debug", str(work / "model.int8.tflite"), "--fix", "--calib", calib,
                                    "--min-cosine", f"{target:.9f}", "-o", str(report_file)])
    assert res.exit_code == 0, res.output
    assert "Budget met" in res.stdout and "listed in the manifest as `model.int8.fixed.tflite`" in res.stdout
    data = json.loads(report_file.read_text())["fix"]
    assert data["met"] and data["after"]["cosine"] >= target > data["before"]["cosine"]
    fixed = work / "model.int8.fixed.tflite"
    assert data["fixed"] == str(fixed) and fixed.is_file()
    kept = [r["tensor"] for r in data["float_layers"]]
    assert kept and all(r["sqnr_db"] < 60 for r in data["float_layers"])
    floats = _float_ops(fixed)
    assert set(kept) <= set(floats)  # each kept op computes in float32 in the file
    assert not set(kept) & set(_float_ops(work / "model.int8.tflite"))  # and did not as made

    entry = {a["name"]: a for a in read_manifest(work)["artifacts"]}["model.int8.fixed.tflite"]
    assert entry["parity"]["passed"] and entry["recommended_backend"] == "litert"
    assert entry["meta"]["fixed_from"] == "model.int8.tflite"
    assert [r["tensor"] for r in entry["meta"]["budget"]["float_layers"]] == kept
    with load(work, artifact="model.int8.fixed.tflite") as sess:
        x = np.load(digits_dir / "calib.npz")["x"][:4]
        assert sess.run({"x": x})["output"].shape == (4, 10)


def test_tflite_fix_refusals(work, digits_dir, tmp_path):
    calib = str(digits_dir / "calib.npz")
    assert_refused([
        ([str(work / "model.tflite"), "--fix", "--calib", calib, "--min-cosine", "0.99"], "is not one"),
        ([str(work / "model.int8.tflite"), "--fix", "--calib", calib, "--min-cosine", "0.99",
          "--fix-out", str(tmp_path / "x.onnx")], "must keep the artifact's format"),
        ([str(work / "model.tflite")], "no float TFLite parent"),
    ], tmp_path)
