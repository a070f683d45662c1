"""Models that are not our examples, end to end: compress (FP32 + INT8, pruning where it applies), then
``benchmark DIR`` re-checking every artifact on the device. Every artifact records its parity with its
parent and its agreement with the original model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgesdk
from edgesdk.cli import main
from edgesdk.errors import BudgetError
from tests.real_models import Detector, RecurrentClassifier, UNet, bert_classifier, vit_classifier

pytestmark = pytest.mark.slow


def _bench_dir(out: Path) -> dict:
    """``edgesdk benchmark DIR`` (a few iterations): every artifact re-checked against the stored references."""
    res = CliRunner().invoke(main, ["benchmark", str(out), "--iterations", "3", "--warmup", "1", "--json",
                                    "--no-isolate"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    checked = {r["artifact"]: r["device_check"]["parity"]["passed"] for r in report["results"]
               if r.get("device_check")}
    assert checked and all(checked.values()), checked
    return report


def _check_recorded(manifest: dict) -> None:
    for art in manifest["artifacts"]:
        vs = art["meta"].get("vs_original")
        assert vs is not None and vs["cosine"] is not None, art["name"]
        if art["format"] != "torch":
            assert art["parity"]["passed"], (art["name"], art["parity"])


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Smooth random images (low-frequency patterns, like photos), not white noise."""
    rng = np.random.default_rng(seed)
    small = rng.random((n, shape[0], shape[1] // 8, shape[2] // 8), dtype=np.float32)
    return np.ascontiguousarray(small.repeat(8, 2).repeat(8, 3) * 0.8 + rng.random((n, *shape), dtype=np.float32) * 0.2)


def test_two_output_detector_at_192x320(tmp_path):
    torch.manual_seed(0)
    calib = {"image": _images(32, (3, 192, 320))}
    res = edgesdk.compress(Detector().eval(), {"image": torch.from_numpy(calib["image"][:1])}, out_dir=tmp_path / "o",
                           calib_data=calib, quantize="int8", benchmark=False, output_names=["boxes", "scores"])
    _check_recorded(res.manifest)
    int8 = {a["name"]: a for a in res.manifest["artifacts"]}["model.int8.onnx"]
    assert set(int8["parity"]["outputs"]) == {"boxes", "scores"}
    assert int8["parity"]["outputs"]["scores"]["centered_cosine"] is not None
    _bench_dir(tmp_path / "o")


def test_bert_with_ids_and_mask_dynamic_int8(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # onnxruntime's shape inference used to drop files into the cwd here
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (32, 16))
    mask = (np.arange(16)[None] < rng.integers(4, 17, (32, 1))).astype(np.int64)
    data = {"attention_mask": mask, "input_ids": ids}  # not forward()'s order: bound by name
    res = edgesdk.compress(bert_classifier(), {k: torch.from_numpy(v[:1]) for k, v in data.items()},
                           out_dir=tmp_path / "o", calib_data=data, quantize="int8-dynamic", benchmark=False)
    _check_recorded(res.manifest)
    art = res.manifest["artifacts"][0]
    assert [i["name"] for i in art["inputs"]] == ["input_ids", "attention_mask"]
    assert [i["shape"] for i in art["inputs"]] == [["batch", "sequence"]] * 2
    assert [o["name"] for o in art["outputs"]] == ["logits"]
    assert list((tmp_path / "cwd").iterdir()) == []
    _bench_dir(tmp_path / "o")


def test_vit_pruned_is_judged_against_the_original(tmp_path):
    """The issue's case: pruned artifacts compared with the pruned model alone read 'pass (cos 1.0)' while
    the model had moved far from the original. Now the default budget (cosine >= 0.95 vs the original,
    label-free) fails the run with exit 4, keeps the artifacts, and every row shows the distance."""
    torch.manual_seed(0)
    calib = {"pixel_values": _images(64, (3, 32, 32))}
    with pytest.raises(BudgetError, match="cosine vs the original model") as e:
        edgesdk.compress(vit_classifier(), {"pixel_values": torch.from_numpy(calib["pixel_values"][:1])},
                         out_dir=tmp_path / "o", calib_data=calib, prune=0.25, recover_steps=20, benchmark=False)
    assert "prune less" in e.value.hint
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    _check_recorded(manifest)
    pruned = [a for a in manifest["artifacts"] if a["meta"].get("reference") == "pytorch.pruned"]
    assert pruned and all(a["status"] == "budget_not_met" for a in pruned)
    assert all(a["meta"]["vs_original"]["cosine"] < 0.95 for a in pruned)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_classifiers_say_what_stayed_in_float(tmp_path, cell):
    torch.manual_seed(0)
    calib = {"x": np.random.default_rng(0).standard_normal((64, 20, 16)).astype(np.float32)}
    res = edgesdk.compress(RecurrentClassifier(cell).eval(), {"x": torch.from_numpy(calib["x"][:1])},
                           out_dir=tmp_path / "o", calib_data=calib, quantize="int8", benchmark=False,
                           dynamic_sequence=False)
    _check_recorded(res.manifest)
    int8 = {a["name"]: a for a in res.manifest["artifacts"]}["model.int8.onnx"]
    float_ops = int8["meta"]["quantization"]["float_ops"]
    assert cell.upper() in float_ops and float_ops[cell.upper()]["count"] == 2
    assert any(cell.upper() in w and "float" in w for w in int8["meta"]["warnings"])
    fp32 = {a["name"]: a for a in res.manifest["artifacts"]}["model.onnx"]
    gates = 4 if cell == "lstm" else 3  # MACs per step: gates x (in*h + h*h), two layers, 20 steps
    expected = 20 * gates * ((16 * 32 + 32 * 32) + (32 * 32 + 32 * 32)) + 32 * 5
    assert fp32["meta"]["macs"] is None or abs(fp32["meta"]["macs"] - expected) / expected < 0.1
    _bench_dir(tmp_path / "o")


def test_unet_with_skip_concatenations_at_any_size(tmp_path):
    torch.manual_seed(0)
    calib = {"x": _images(16, (3, 64, 96))}
    res = edgesdk.compress(UNet().eval(), {"x": torch.from_numpy(calib["x"][:1])}, out_dir=tmp_path / "o",
                           calib_data=calib, quantize="int8", benchmark=False, dynamic_dims={"x": {2: "H", 3: "W"}})
    _check_recorded(res.manifest)
    dd = res.manifest["model"]["dynamic_dims"]
    assert len(dd["H"]["checked"]) == 3 and len(dd["W"]["checked"]) == 3
    assert res.manifest["artifacts"][0]["inputs"][0]["shape"] == ["batch", 3, "H", "W"]
    _bench_dir(tmp_path / "o")
