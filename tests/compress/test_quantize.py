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


def _digit() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy((load_digits().images[:1] / 16.0).astype(np.float32)[:, None])


# a real digit, not torch.rand noise: the example batch is one of the batches the gate checks
EXAMPLE = {"x": _digit()}


@pytest.fixture(scope="module")
def digits(digits_dir: Path):
    model = build_model(f"{DIGITS_MODEL}:build")
    load_weights(model, digits_dir / "weights.safetensors")
    with np.load(digits_dir / "eval.npz") as z:
        eval_data = {"x": z["x"], "labels": z["labels"]}
    return model, digits_dir / "calib.npz", eval_data


def test_int8_static_on_digits(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=calib,
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
    res = edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=calib,
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
    res = edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, quantize="int8", min_cosine=0.99995, max_accuracy_drop=0.5,
                           benchmark=False)
    budget = res.manifest["artifacts"][1]["meta"]["budget"]
    assert budget["met"] and budget["result"]["cosine"] >= 0.99995
    assert budget["float_nodes"] and all("SQNR" in why and " dB" in why and "rank" in why
                                         for why in budget["float_nodes"].values())
    assert budget["tries"][0]["float_nodes"] == 0 and not budget["tries"][0]["met"]
    assert res.manifest["artifacts"][1]["meta"]["quantization"]["nodes_excluded"] == list(budget["float_nodes"])
    # each layer kept in float, with its measured SQNR (the record `edgesdk debug --fix` writes too)
    layers = budget["float_layers"]
    assert layers and {n for r in layers for n in r["nodes"]} == set(budget["float_nodes"])
    assert all(r["tensor"] and r["lost_db"] == pytest.approx(r["input_sqnr_db"] - r["sqnr_db"], abs=0.02)
               for r in layers)


def test_unmeetable_budget_keeps_best_and_says_by_how_much(digits, tmp_path):
    model, calib, _ = digits
    with pytest.raises(BudgetError) as err:
        edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=calib,
                         quantize="int8", min_cosine=1.0, benchmark=False)
    assert "under 1.0" in str(err.value)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    art = manifest["artifacts"][1]
    assert art["status"] == "budget_not_met" and (tmp_path / "o" / art["path"]).is_file()


def test_budget_the_float_model_already_misses_tries_no_fallback(digits, tmp_path):
    """A pruned model is judged against the original: when pruning alone costs more cosine than the budget
    allows, keeping layers in float cannot meet it, so no fallback is tried and the reason says so."""
    model, calib, _ = digits
    with pytest.raises(BudgetError) as err:
        edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=calib, prune=0.5,
                         recover_steps=2, prune_min_cosine=0.05, quantize="int8", min_cosine=0.99999,
                         benchmark=False)
    assert "the float model it quantizes misses the budget too" in str(err.value)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    budget = art["meta"]["budget"]
    assert art["status"] == "budget_not_met" and not budget["met"]
    assert not budget["float_source"]["met"] and budget["float_source"]["cosine"] < 0.99999
    assert [t["float_nodes"] for t in budget["tries"]] == [0] and not budget["float_nodes"]


def test_bad_quantization_inputs(digits, tmp_path):
    model, calib, _ = digits
    x = dict(EXAMPLE)
    with pytest.raises(InputError, match="calibration data"):
        edgesdk.compress(model, x, out_dir=tmp_path / "a", quantize="int8")
    with pytest.raises(InputError, match="labelled eval data"):
        edgesdk.compress(model, x, out_dir=tmp_path / "b", calib_data=calib, quantize="int8", max_accuracy_drop=1)
    with pytest.raises(InputError, match="quantize mode"):
        edgesdk.compress(model, x, out_dir=tmp_path / "c", quantize="int4")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_random_calibration_is_said_in_bold(digits, tmp_path):
    model, _, _ = digits
    res = edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data="random",
                           quantize="int8", benchmark=False)
    assert res.manifest["calibration"].startswith("RANDOM")
    assert "**Calibration used RANDOM" in (tmp_path / "o" / "report.md").read_text()


def test_calibration_directory_of_npy(digits, tmp_path):
    model, calib, _ = digits
    d = tmp_path / "calib"
    d.mkdir()
    with np.load(calib) as z:
        np.save(d / "x.npy", z["x"][:64])
    res = edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=d,
                           quantize="int8", benchmark=False)
    assert res.manifest["artifacts"][1]["meta"]["quantization"]["calib_samples"] == 64
    (d / "x.npy").unlink()
    with pytest.raises(InputError, match="no .npy"):
        edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "p", calib_data=d, quantize="int8")


# -- TFLite dynamic-range INT8: weights ai-edge-quantizer stores after the flatbuffer ----------------
def _external_buffers(path: Path) -> int:
    """Buffers whose data sits after the flatbuffer (offset/size) rather than inside it."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    return sum(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength()))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class _WideMLP(torch.nn.Module):
    """Over 256 KiB of int8 weights: the size from which ai-edge-quantizer writes them after the flatbuffer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                       torch.nn.ReLU(), torch.nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _run_tflite(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from edgesdk.runtimes import load

    with load(path, backend="litert") as sess:  # LiteRT takes int32 ids where PyTorch took int64
        return next(iter(sess.run({s.name: feeds[s.name].astype(s.dtype) for s in sess.inputs}).values()))


def test_inlining_keeps_the_quantizers_external_weights(tmp_path):
    pytest.importorskip("ai_edge_quantizer")
    from edgesdk.compress.export_tflite import _inline_buffers, export_tflite

    torch.manual_seed(0)
    export_tflite(_WideMLP().eval(), {"x": torch.randn(2, 64)}, tmp_path / "f.tflite", precision="fp32")
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(tmp_path / "f.tflite"))
    qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    qt.quantize().export_model(str(tmp_path / "q.tflite"))
    external = _external_buffers(tmp_path / "q.tflite")
    assert external > 0  # the case being fixed: weights after the flatbuffer
    x = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    before = _run_tflite(tmp_path / "q.tflite", x)  # LiteRT reads the file as the quantizer wrote it
    assert _inline_buffers(tmp_path / "q.tflite") == external
    assert _external_buffers(tmp_path / "q.tflite") == 0
    np.testing.assert_array_equal(_run_tflite(tmp_path / "q.tflite", x), before)
    assert _inline_buffers(tmp_path / "q.tflite") == 0  # nothing left to move


def test_int8_dynamic_tflite_with_large_weights_loads_and_matches(tmp_path):
    pytest.importorskip("litert_torch")
    from edgesdk.compress.export_tflite import export_tflite

    torch.manual_seed(0)
    model, ex = _WideMLP().eval(), {"x": torch.randn(2, 64)}
    export_tflite(model, ex, tmp_path / "f.tflite", precision="fp32")
    # quantized from the float file just made (as compress does), not converted a second time
    info = export_tflite(model, ex, tmp_path / "q.tflite", precision="int8-dynamic", float_file=tmp_path / "f.tflite")
    x = {"x": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)}
    # before the fix LiteRT refused this file: "Constant buffer 1 specified an out of range offset"
    assert _cosine(_run_tflite(tmp_path / "q.tflite", x), _run_tflite(tmp_path / "f.tflite", x)) > 0.99
    assert info.quantization["weights"] == "int8 per-channel" and _external_buffers(tmp_path / "q.tflite") == 0
    assert info.quantization["float_file"] == "f.tflite"
    assert (tmp_path / "q.tflite").stat().st_size < 0.4 * (tmp_path / "f.tflite").stat().st_size


class _LastHidden(torch.nn.Module):
    """A Hugging Face encoder behind plain tensors: ``last_hidden_state`` out."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder(*inputs).last_hidden_state


def _bert() -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    transformers = pytest.importorskip("transformers")
    # intermediate 1024 (not 128) so the int8 weights pass the 256 KiB where the quantizer moves them out
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=1024,
                                  vocab_size=1000)
    ids = np.random.default_rng(1).integers(0, 1000, (4, 16))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return (_LastHidden(transformers.BertModel(cfg).eval()).eval(),
            {k: torch.from_numpy(v[:2]) for k, v in feeds.items()}, feeds)


def _whisper_encoder() -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                                     decoder_attention_heads=2, num_mel_bins=16, max_source_positions=50)
    feats = np.random.default_rng(1).standard_normal((4, 16, 100)).astype(np.float32)
    encoder = transformers.WhisperModel(cfg).get_encoder().eval()
    return _LastHidden(encoder).eval(), {"input_features": torch.from_numpy(feats[:2])}, {"input_features": feats}


@pytest.mark.slow
@pytest.mark.parametrize("build_encoder", [_bert, _whisper_encoder], ids=["bert", "whisper-encoder"])
def test_int8_dynamic_tflite_of_transformer_encoders(build_encoder, tmp_path):
    pytest.importorskip("litert_torch")
    from edgesdk.compress.export_tflite import export_tflite

    torch.manual_seed(0)
    model, ex, feeds = build_encoder()
    export_tflite(model, ex, tmp_path / "f.tflite", precision="fp32")
    info = export_tflite(model, ex, tmp_path / "q.tflite", precision="int8-dynamic", float_file=tmp_path / "f.tflite")
    assert info.quantization["float_file"] == "f.tflite"
    assert _cosine(_run_tflite(tmp_path / "q.tflite", feeds), _run_tflite(tmp_path / "f.tflite", feeds)) > 0.99
    assert _external_buffers(tmp_path / "q.tflite") == 0


def test_int8_on_cpus_whose_int8_sums_saturate():
    """x86 without VNNI adds 8-bit products pairwise in int16 (VPMADDUBSW): full-range weights overflow.
    There the CPU target quantizes with 7-bit weights, and the runtime runs a full-range QDQ file unfused."""
    from edgesdk.compress.quantize import _reduce_range
    from edgesdk.runtimes.fingerprint import int8_saturates

    assert int8_saturates(["avx2"]) and not int8_saturates(["avx2", "avx512f", "avx512_vnni"])
    assert not int8_saturates(["avx2", "avx_vnni"]) and not int8_saturates(["neon", "asimddp"])
    here = int8_saturates()
    assert _reduce_range("cpu", None)[0] is here and _reduce_range("tensorrt", None) == (False, None)
    assert _reduce_range("cpu", False) == (False, None) and _reduce_range("tensorrt", True)[0] is True


def test_full_range_int8_is_right_on_this_cpu(digits, tmp_path):
    """Whatever this CPU is, a TensorRT-style (full-range, symmetric) INT8 artifact run by onnxruntime here
    agrees with the float model: fused kernels where they are exact, the unfused graph where they overflow."""
    model, calib, _ = digits
    res = edgesdk.compress(model, dict(EXAMPLE), out_dir=tmp_path / "o", calib_data=calib, quantize="int8",
                           quant_target="tensorrt", benchmark=False)
    int8 = res.manifest["artifacts"][1]
    assert int8["meta"]["quantization"]["reduce_range"] is False  # TensorRT reads full-range weights
    assert int8["parity"]["passed"] and int8["parity"]["cosine"] > 0.995
    from edgesdk.runtimes import load
    from edgesdk.runtimes.fingerprint import int8_saturates

    with load(tmp_path / "o" / "model.int8.onnx", backend="onnxruntime") as sess:
        assert bool(sess.notes) is int8_saturates()
