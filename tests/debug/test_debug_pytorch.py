"""edgesdk debug --against pytorch: every module's output through forward hooks, matched to the ONNX export
through the exporter's provenance, on the real digits artifacts (FP32, INT8, and a pruned INT8 whose pruned
PyTorch model is rebuilt from the directory); a module changed on purpose is found; bad input is refused."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from edgesdk.cli import main
from edgesdk.debug import debug
from edgesdk.debug.torch_ref import lineage
from edgesdk.intake import build_model, load_weights

from tests.conftest import DIGITS_MODEL
from tests.debug.refusals import assert_refused

FACTORY = f"{DIGITS_MODEL}:build"


def test_the_fp32_export_agrees_with_pytorch_module_by_module(digits_artifacts, digits_dir):
    weights = str(digits_dir / "weights.safetensors")
    report = debug(digits_artifacts / "model.onnx", against="pytorch", model=FACTORY, weights=weights)
    assert report.reference.startswith("pytorch") and "model.onnx" in report.reference_choice
    assert report.agree and report.first_jump is None
    assert len(report.layers) >= 8 and all(d.sqnr_db >= 90 for d in report.layers)
    classes = {d.module: d.module_class for d in report.layers}
    assert classes["head"] == "torch.nn.modules.linear.Linear"
    assert any(c == "torch.nn.modules.activation.ReLU" for c in classes.values())  # ReLUs get their own name
    assert classes.get("stem.0.1") == "torch.nn.modules.batchnorm.BatchNorm2d"  # the Conv+BN fused node
    # the Conv whose BatchNorm the exporter folded into it has no tensor of its own: listed, not guessed
    assert "folded" in report.unmatched["stem.0.0"]
    assert len(set(classes)) == len(report.layers)  # one layer per module: a parent and its last child share


def test_int8_against_pytorch_matches_int8_against_its_fp32_parent(digits_artifacts, digits_dir):
    """The FP32 export is PyTorch to ~120 dB, so a tensor's SQNR must be the same either way."""
    weights = str(digits_dir / "weights.safetensors")
    vs_torch = debug(digits_artifacts / "model.int8.onnx", against="pytorch", model=FACTORY, weights=weights)
    vs_onnx = {d.tensor: d for d in debug(digits_artifacts / "model.int8.onnx").layers}
    common = [d for d in vs_torch.layers if d.tensor in vs_onnx]
    assert len(common) >= 4 and len(common) >= len(vs_torch.layers) - 2
    for d in common:
        assert d.sqnr_db == pytest.approx(vs_onnx[d.tensor].sqnr_db, abs=0.05), d.tensor
    assert vs_torch.first_jump is not None and not vs_torch.agree


def test_a_pytorch_module_changed_on_purpose_is_the_first_jump(digits_artifacts, digits_dir):
    """The model given differs from the exported one in one module (the block's BatchNorm shifted): the
    divergence must start there, with the stem before it exact."""
    net = build_model(FACTORY)
    load_weights(net, digits_dir / "weights.safetensors")
    with torch.no_grad():
        net.block[1].bias += 0.5
    report = debug(digits_artifacts / "model.onnx", against="pytorch", model=net)
    jump = report.first_jump
    assert jump is not None and jump.module.startswith("block"), [(d.module, d.sqnr_db) for d in report.layers]
    for d in report.layers:
        if d.module.startswith("stem"):
            assert d.sqnr_db >= 90, d
    assert jump.sqnr_db < 60
    assert all(not m._forward_hooks for m in net.modules())  # the caller's module is left as it was (a copy is hooked)


def test_a_pruned_artifact_is_compared_with_the_pruned_model_from_its_directory(digits_dir, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "compress", FACTORY, "--weights", str(digits_dir / "weights.safetensors"), "--input", "x:1x1x8x8",
        "--calib", str(digits_dir / "calib.npz"), "--eval-data", str(digits_dir / "eval.npz"), "--prune", "0.5",
        "--recover-steps", "3", "--max-accuracy-drop", "100", "--quantize", "int8", "--no-benchmark", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    bridge, pruned = lineage(out, manifest, "model.pruned.int8.onnx")
    assert bridge == out / "model.pruned.onnx" and pruned == out / "model.pruned"
    assert lineage(out, manifest, "model.onnx") == (out / "model.onnx", None)

    report_file = out / "debug.json"
    res = CliRunner().invoke(main, ["debug", str(out / "model.pruned.int8.onnx"), "--against", "pytorch",
                                    "--model", FACTORY, "--weights", str(digits_dir / "weights.safetensors"),
                                    "-o", str(report_file)])
    assert res.exit_code == 0, res.output
    data = json.loads(report_file.read_text())
    assert "pruned as model.pruned" in data["reference_choice"] and data["matched_layers"] >= 4
    assert data["first_jump"] is not None  # INT8 noise, against the pruned model
    assert any(len(d["shape"]) == 4 and d["shape"][1] < 32 for d in data["layers"])  # pruned widths (full: 32, 64)

    (out / "model.pruned.json").unlink()  # the pruned shapes gone: refused, not loaded onto the full model
    res = CliRunner().invoke(main, ["debug", str(out / "model.pruned.int8.onnx"), "--against", "pytorch",
                                    "--model", FACTORY, "--weights", str(digits_dir / "weights.safetensors")])
    assert res.exit_code == 2 and "is not in its directory" in res.output and "Traceback" not in res.output
    assert all(0.9 < d["cosine"] <= 1.0 for d in data["layers"])


def test_against_pytorch_bad_input_is_refused_cleanly(digits_artifacts, digits_dir, tmp_path):
    art = str(digits_artifacts / "model.int8.onnx")
    cases = [
        ([art, "--against", "pytorch"], "needs the model"),
        ([art, "--model", FACTORY], "are for --against pytorch"),
        ([art, "--against", "pytorch", "--model", "nowhere.py:build"], "nowhere.py"),
    ]
    assert_refused(cases, tmp_path)
