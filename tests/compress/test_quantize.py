"""Quantization stages on real data: INT8 accuracy on held-out digits, FP16, dynamic INT8, the budget."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.errors import BudgetError, InputError
from edgesdk.intake import build_model, load_weights
from tests.conftest import DIGITS_MODEL
from tests.models import build, make_inputs


@pytest.fixture(scope="module")
def digits(digits_dir: Path):
    model = build_model(f"{DIGITS_MODEL}:build")
    load_weights(model, digits_dir / "weights.safetensors")
    with np.load(digits_dir / "eval.npz") as z:
        eval_data = {"x": z["x"], "labels": z["labels"]}
    return model, digits_dir / "calib.npz", eval_data


def test_int8_static_on_digits(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, quantize="int8", benchmark=False)
    fp32, int8 = res.manifest["artifacts"]
    assert int8["name"] == "model.int8.onnx" and int8["precision"] == "int8" and int8["parent"] == "model.onnx"
    q = int8["meta"]["quantization"]
    assert (q["activation_type"], q["weight_type"], q["per_channel"]) == ("uint8", "int8", True)
    assert q["calib_samples"] == 256 and res.manifest["calibration"].startswith("file")
    assert int8["parity"]["passed"] and int8["parity"]["cosine"] > 0.99
    assert int8["size_bytes"] < 0.35 * fp32["size_bytes"]
    assert abs(fp32["accuracy"] - int8["accuracy"]) <= 0.5, (fp32["accuracy"], int8["accuracy"])
    from edgesdk.runtimes import inspect_artifact

    ops = inspect_artifact(tmp_path / "o" / "model.int8.onnx")["ops"]
    assert ops.get("QuantizeLinear") and ops.get("DequantizeLinear")


def test_tensorrt_target_is_symmetric_int8(digits, tmp_path):
    model, calib, _ = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           quantize="int8", quant_target="tensorrt", benchmark=False, calib_method="percentile")
    q = res.manifest["artifacts"][1]["meta"]["quantization"]
    assert q["activation_type"] == "int8" and q["symmetric_activations"] and q["calib_method"] == "percentile"


def test_fp16_keeps_float32_io(tmp_path):
    res = edgesdk.compress(build("Residual"), make_inputs("Residual", 1), out_dir=tmp_path / "o", quantize="fp16",
                           benchmark=False)
    art = res.manifest["artifacts"][1]
    assert art["precision"] == "fp16" and art["parity"]["passed"]
    assert art["inputs"][0]["dtype"] == "float32" and art["outputs"][0]["dtype"] == "float32"


def test_dynamic_int8_transformer_and_conv_warning(tmp_path):
    res = edgesdk.compress(build("TinyTransformer"), make_inputs("TinyTransformer", 2), out_dir=tmp_path / "t",
                           quantize="int8-dynamic", benchmark=False)
    art = res.manifest["artifacts"][1]
    assert art["parity"]["cosine"] >= 0.99 and art["meta"]["quantization"]["per_channel"]
    res = edgesdk.compress(build("ConvBnRelu"), make_inputs("ConvBnRelu", 1), out_dir=tmp_path / "c",
                           quantize="int8-dynamic", benchmark=False)
    assert any("Conv" in w and "slower" in w for w in res.manifest["artifacts"][1]["meta"]["warnings"])


def test_budget_keeps_worst_layers_in_float(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, quantize="int8", min_cosine_budget=0.99995, max_accuracy_drop=0.5,
                           benchmark=False)
    budget = res.manifest["artifacts"][1]["meta"]["budget"]
    assert budget["met"] and budget["result"]["cosine"] >= 0.99995
    assert budget["float_nodes"] and all("dB of SQNR lost" in why for why in budget["float_nodes"].values())
    assert budget["tries"][0]["float_nodes"] == 0 and not budget["tries"][0]["met"]
    assert res.manifest["artifacts"][1]["meta"]["quantization"]["nodes_excluded"] == list(budget["float_nodes"])


def test_unmeetable_budget_keeps_best_and_says_by_how_much(digits, tmp_path):
    model, calib, _ = digits
    with pytest.raises(BudgetError) as err:
        edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                         quantize="int8", min_cosine_budget=1.0, benchmark=False)
    assert "under 1.0" in str(err.value)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    art = manifest["artifacts"][1]
    assert art["status"] == "budget_not_met" and (tmp_path / "o" / art["path"]).is_file()


def test_bad_quantization_inputs(digits, tmp_path):
    model, calib, _ = digits
    x = {"x": torch.rand(1, 1, 8, 8)}
    with pytest.raises(InputError, match="calibration data"):
        edgesdk.compress(model, x, out_dir=tmp_path / "a", quantize="int8")
    with pytest.raises(InputError, match="labelled eval data"):
        edgesdk.compress(model, x, out_dir=tmp_path / "b", calib_data=calib, quantize="int8", max_accuracy_drop=1)
    with pytest.raises(InputError, match="quantize mode"):
        edgesdk.compress(model, x, out_dir=tmp_path / "c", quantize="int4")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_random_calibration_is_said_in_bold(digits, tmp_path):
    model, _, _ = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data="random",
                           quantize="int8", benchmark=False)
    assert res.manifest["calibration"].startswith("RANDOM")
    assert "**Calibration used RANDOM" in (tmp_path / "o" / "report.md").read_text()


def test_calibration_directory_of_npy(digits, tmp_path):
    model, calib, _ = digits
    d = tmp_path / "calib"
    d.mkdir()
    with np.load(calib) as z:
        np.save(d / "x.npy", z["x"][:64])
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=d,
                           quantize="int8", benchmark=False)
    assert res.manifest["artifacts"][1]["meta"]["quantization"]["calib_samples"] == 64
    (d / "x.npy").unlink()
    with pytest.raises(InputError, match="no .npy"):
        edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "p", calib_data=d, quantize="int8")
