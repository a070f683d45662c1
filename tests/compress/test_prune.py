"""Structured pruning on every graph pattern, masks, persistence, recovery, and pruning in the pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.compress.prune import load_pruned, prune_model, save_pruned
from edgesdk.compress.recover import recover
from edgesdk.errors import BudgetError, InputError
from tests.conftest import DIGITS_MODEL
from tests.models import build, make_inputs


@pytest.mark.parametrize("name", ["Residual", "Concat", "Depthwise", "Grouped", "AttentionNet", "ConvBnRelu"])
def test_channel_pruning_keeps_interface_and_round_trips(name, tmp_path):
    model, ex = build(name), make_inputs(name, 2)
    with torch.no_grad():
        before = model(*ex.values())
    info = prune_model(model, ex, ratio=0.5, round_to=None)
    assert info.params_after < 0.8 * info.params_before and info.macs_after < info.macs_before
    assert "head" in info.protected
    with torch.no_grad():
        after = model(*ex.values())
    assert after.shape == before.shape
    save_pruned(model, tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.safetensors"]
    rebuilt = load_pruned(build(name), tmp_path / "p")
    with torch.no_grad():
        assert torch.equal(rebuilt(*ex.values()), after)  # identical outputs after the round trip


def test_attention_heads_are_pruned_whole():
    model, ex = build("AttentionNet"), make_inputs("AttentionNet", 2)
    info = prune_model(model, ex, ratio=0.5, round_to=None)
    assert info.heads == {"attn": [4, 2]} and model.attn.num_heads == 2
    assert model.attn.q.out_features == 2 * model.attn.head_dim


def test_round_to_multiple_and_target_macs():
    model, ex = build("Residual"), make_inputs("Residual", 1)
    prune_model(model, ex, ratio=0.4, round_to=4)
    assert all(m.out_channels % 4 == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    model = build("ConvBnRelu")
    info = prune_model(model, make_inputs("ConvBnRelu", 1), ratio=None, target_macs=60_000, round_to=None)
    assert info.macs_after <= 60_000 < info.macs_before


@pytest.mark.parametrize("method, expect", [("unstructured", 0.6), ("2:4", 0.5)])
def test_masks_report_sparsity_and_say_no_speedup(method, expect):
    model, ex = build("ConvBnRelu"), make_inputs("ConvBnRelu", 1)
    info = prune_model(model, ex, ratio=0.6, method=method)
    assert info.sparsity == pytest.approx(expect, abs=0.1)
    assert info.params_after == info.params_before and "not speed up" in info.notes[0]
    if method == "2:4":
        w = model.body[3].weight  # K=8, C=8, 3x3: TensorRT reads 2:4 along C at each kernel position
        groups = w.permute(0, 2, 3, 1).reshape(8, 3, 3, -1, 4)
        assert ((groups != 0).sum(-1) <= 2).all()


def test_bad_prune_inputs():
    model, ex = build("Residual"), make_inputs("Residual", 1)
    with pytest.raises(InputError, match="between 0 and 1"):
        prune_model(model, ex, ratio=1.5)
    with pytest.raises(InputError, match="unknown module"):
        prune_model(model, ex, ratio=0.5, protect=("nothere",))
    with pytest.raises(InputError, match="Taylor importance needs data"):
        prune_model(model, ex, ratio=0.5, importance="taylor")


def test_taylor_importance_with_data():
    model, ex = build("Residual"), make_inputs("Residual", 1)
    info = prune_model(model, ex, ratio=0.5, importance="taylor", round_to=None,
                       data={"x": make_inputs("Residual", 16)["x"].numpy()})
    assert info.params_after < info.params_before


def test_recovery_hook_is_called():
    teacher, ex = build("Residual"), make_inputs("Residual", 1)
    student = build("Residual")
    calls = []
    info = recover(student, teacher, {"x": np.zeros((4, 3, 16, 16), np.float32)}, ["x"],
                   hook=lambda m, d: calls.append(len(d["x"])))
    assert calls == [4] and info["method"] == "hook"


@pytest.fixture(scope="module")
def digits(digits_dir: Path):
    from edgesdk.intake import build_model, load_weights

    model = build_model(f"{DIGITS_MODEL}:build")
    load_weights(model, digits_dir / "weights.safetensors")
    with np.load(digits_dir / "eval.npz") as z:
        return model, digits_dir / "calib.npz", {"x": z["x"], "labels": z["labels"]}


def test_pipeline_prune_recover_quantize_on_digits(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, prune=0.5, quantize="int8", benchmark=False)
    names = [a["name"] for a in res.manifest["artifacts"]]
    assert names == ["model.onnx", "model.pruned.safetensors", "model.pruned.onnx", "model.pruned.int8.onnx"]
    fp32, pruned, pruned_onnx, pruned_int8 = res.manifest["artifacts"]
    assert pruned["meta"]["macs"] < 0.4 * fp32["meta"]["macs"]
    assert pruned["meta"]["accuracy_before_recovery"] < pruned["meta"]["accuracy_after_recovery"]
    assert fp32["accuracy"] - pruned_onnx["accuracy"] <= 1.0, (fp32["accuracy"], pruned_onnx["accuracy"])
    assert pruned_onnx["parity"]["passed"] and pruned_onnx["meta"]["reference"] == "pytorch.pruned"
    assert pruned_onnx["meta"]["vs_original"]["cosine"] < 1.0
    assert pruned_int8["meta"]["reference"] == "pytorch.pruned" and pruned_int8["parity"]["passed"]
    shapes = tmp_path / "o" / pruned["meta"]["shapes_file"]["path"]
    assert json.loads(shapes.read_text())["format"] == "edgesdk-pruned-shapes"
    rebuilt = load_pruned(edgesdk.intake.build_model(f"{DIGITS_MODEL}:build"), tmp_path / "o" / "model.pruned")
    from edgesdk.runtimes import load

    x = eval_data["x"][:8]
    with torch.no_grad(), load(tmp_path / "o" / "model.pruned.onnx") as sess:
        np.testing.assert_allclose(rebuilt(torch.from_numpy(x)).numpy(), sess.run({"x": x})["output"], atol=1e-4)


def test_pruning_range_search_under_budget(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, prune=0.3, prune_max=0.9, prune_max_accuracy_drop=1.0,
                           recover_steps=300, benchmark=False)
    search = res.manifest["artifacts"][1]["meta"]["search"]
    assert search["met"] and 0.3 <= search["chosen"] <= 0.9 and len(search["tries"]) >= 1
    assert all(t["met"] == (t["drop"] <= 1.0) for t in search["tries"])
    with pytest.raises(InputError, match="accuracy budget"):
        edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "p", calib_data=calib,
                         prune=0.3, prune_max=0.7, benchmark=False)


def test_unmeetable_pruning_budget(digits, tmp_path):
    model, calib, eval_data = digits
    with pytest.raises(BudgetError):
        edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                         eval_data=eval_data, prune=0.7, prune_max=0.8, prune_max_accuracy_drop=0.0,
                         recover_steps=0, benchmark=False)
    assert (tmp_path / "o" / "manifest.json").is_file()
