"""A CRNN text-line reader (CNN + 2-layer BiLSTM, CTC) trained on rendered lines, compressed to ONNX and
TFLite in FP32 and INT8 with a character-error-rate budget, then re-checked from its directory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from tests.conftest import ROOT, train_example

pytestmark = pytest.mark.slow
OCR = ROOT / "examples" / "ocr"


@pytest.fixture(scope="module")
def ocr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ocr")
    summary = train_example(OCR / "train.py", out, "--steps", "500", "--seed", "0", "--calib-lines", "64")
    assert summary["heldout_cer"] < 10, summary  # it really reads the lines
    return out


def test_crnn_to_onnx_and_tflite_int8_under_a_cer_budget(ocr_dir, tmp_path):
    out = tmp_path / "o"
    args = ["compress", f"{OCR / 'model.py'}:build", "--weights", str(ocr_dir / "weights.safetensors"),
            "--input", "x:1x1x32x128", "--calib", str(ocr_dir / "calib.npz"), "--eval-data", str(ocr_dir / "eval.npz"),
            "--metric", "cer", "--max-metric-drop", "1", "--quantize", "int8", "--targets", "onnx,tflite",
            "--no-benchmark", "-o", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["metric"] == "cer"
    arts = {a["name"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"}
    base = manifest["model"]["accuracy"]  # PyTorch's CER on the held-out lines
    for a in arts.values():
        assert a["parity"]["passed"], (a["name"], a["parity"])  # no --allow-mismatch
        assert a["accuracy"] is not None and a["accuracy"] - base <= 1.0, (a["name"], a["accuracy"], base)
        assert a["meta"]["vs_original"]["accuracy_drop"] <= 1.0
    # litert-torch fixes the batch of recurrent models: the TFLite files are gated in batches of their size
    assert arts["model.tflite"]["inputs"][0]["shape"][0] == 1 and arts["model.tflite"]["parity"]["batches"] >= 17
    assert "LSTM" in arts["model.int8.onnx"]["meta"]["quantization"]["float_ops"]
    res = CliRunner().invoke(main, ["benchmark", str(out), "--iterations", "2", "--warmup", "1", "--json",
                                    "--no-isolate"])
    assert res.exit_code == 0, res.output
    checks = {r["artifact"]: r["device_check"] for r in json.loads(res.stdout)["results"]}
    assert all(c["parity"]["passed"] and c["metric"] == "cer" for c in checks.values()), checks
