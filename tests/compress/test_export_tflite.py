"""TFLite export with litert-torch: every precision verified on real digits, failures reported per target."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch")

import edgesdk  # noqa: E402
from edgesdk.compress.export_tflite import export_tflite  # noqa: E402
from edgesdk.errors import ExportError  # noqa: E402
from edgesdk.intake import build_model  # noqa: E402
from edgesdk.runtimes.registry import backend_installed  # noqa: E402
from edgesdk.parity import compare  # noqa: E402
from edgesdk.runtimes import load  # noqa: E402
from edgesdk.runtimes.inspect import inspect_artifact  # noqa: E402
from tests.conftest import DIGITS_MODEL  # noqa: E402
from tests.models import Unexportable, make_inputs  # noqa: E402


@pytest.mark.slow
def test_all_precisions_through_compress(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, targets=["onnx", "tflite"], quantize="int8", iterations=5, warmup=1)
    arts = {a["name"]: a for a in res.manifest["artifacts"]}
    fp32, int8 = arts["model.tflite"], arts["model.int8.tflite"]
    assert fp32["format"] == "tflite" and fp32["parity"]["passed"] and fp32["parity"]["max_abs_err"] <= 1e-4
    assert int8["precision"] == "int8" and int8["parity"]["passed"] and int8["parity"]["cosine"] > 0.99
    q = int8["meta"]["quantization"]
    assert q["route"] == "ai-edge-quantizer" and q["io"].startswith("float32")  # quantizes inside the graph
    assert q["float_file"] == "model.tflite"  # quantized from the float file made before, not converted again
    assert inspect_artifact(tmp_path / "o" / "model.int8.tflite")["inputs"][0]["dtype"] == "float32"
    lite = [r for r in res.report["results"] if r["backend"] == "litert"]
    assert lite and all(0 < r["delegation"]["delegated"] <= r["delegation"]["total"] for r in lite)
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.5
    assert int8["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]  # float through the wrapper
    assert res.manifest["targets"]["tflite"]["status"] == "ok"
    here = {"onnxruntime", "litert"} | ({"openvino"} if backend_installed("openvino") else set())
    assert {r["backend"] for r in res.report["results"]} == {"torch"} | here  # every installed backend (auto)


@pytest.mark.slow
@pytest.mark.parametrize("precision, min_cos", [("fp16", 0.9999), ("int8-dynamic", 0.99)])
def test_fp16_and_dynamic_range(digits, tmp_path, precision, min_cos):
    model, calib, eval_data = digits
    path = tmp_path / f"m.{precision}.tflite"
    info = export_tflite(model, {"x": torch.rand(1, 1, 8, 8)}, path, precision=precision)
    assert info.quantization["weights"] in ("float16", "int8 per-channel")
    x = eval_data["x"][:64]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    with load(path) as sess:
        got = sess.run({"x": x})["output"]
    r = compare({"o": ref}, {"o": got}, atol=None, rtol=None, min_cosine=min_cos)
    assert r.passed, r.summary()
    assert path.stat().st_size < 0.6 * 230_000


@pytest.mark.slow
def test_channels_last_inputs_for_mobile_apps(digits, tmp_path):
    """--tflite-nhwc: the TFLite file takes N,H,W,C; the gate, accuracy and the on-device re-check feed the
    N,C,H,W reference data transposed; an app feeding N,H,W,C gets PyTorch's answer."""
    from click.testing import CliRunner

    from edgesdk.cli import main

    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, targets=["tflite"], quantize="int8", benchmark=False,
                           tflite_channels_last=True)
    arts = {a["name"]: a for a in res.manifest["artifacts"]}
    for name in ("model.tflite", "model.int8.tflite"):
        a = arts[name]
        assert a["inputs"][0]["shape"][1:] == [8, 8, 1] and a["meta"]["input_layout"] == {"x": "channels_last"}
        assert a["parity"]["passed"] and a["accuracy"] >= 98.0, a
    x = eval_data["x"][:32]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    with load(tmp_path / "o" / "model.tflite") as sess:  # the app's view: channels-last in, logits out
        got = np.concatenate([sess.run({"x": x[i:i + 1].transpose(0, 2, 3, 1)})["output"] for i in range(len(x))])
    assert np.abs(got - ref).max() < 1e-4
    out = CliRunner().invoke(main, ["benchmark", str(tmp_path / "o"), "--iterations", "5", "--json"])
    assert out.exit_code == 0, out.output
    checks = {r["artifact"]: r["device_check"] for r in json.loads(out.stdout)["results"] if r.get("device_check")}
    assert checks and all(c["parity"]["passed"] for c in checks.values()), checks


def test_lowering_failure_is_reported_and_other_targets_delivered(tmp_path):
    with pytest.raises(ExportError) as err:
        export_tflite(Unexportable().eval(), make_inputs("Unexportable", 1), tmp_path / "m.tflite")
    assert "TFLite conversion failed" in str(err.value)
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_failed_target_does_not_abort_the_run(tmp_path):
    from tests.models import DetNet

    torch.manual_seed(0)
    res = edgesdk.compress(DetNet().eval(), {"x": torch.randn(1, 3, 3)}, out_dir=tmp_path / "o",
                           targets=["onnx", "tflite"], benchmark=False)
    assert [a["format"] for a in res.manifest["artifacts"]] == ["onnx"]
    failed = res.manifest["targets"]["tflite"]
    assert failed["status"] == "failed" and "TFLite conversion failed on aten." in failed["reason"]
    assert "tflite: failed" in (tmp_path / "o" / "report.md").read_text()


class _ManyIO(torch.nn.Module):
    def forward(self, *xs):
        return tuple(x * (i + 2) for i, x in enumerate(xs))


@pytest.mark.slow
def test_signature_names_map_to_the_right_tensors_with_many_inputs(tmp_path):
    """The converter sorts signature entries as text (args_0, args_1, args_10, ...): names follow tensors."""
    from ai_edge_litert.interpreter import Interpreter

    ex = {f"in{i}": torch.rand(1, 3) for i in range(12)}
    path = tmp_path / "many.tflite"
    export_tflite(_ManyIO(), ex, path, output_names=[f"out{i}" for i in range(12)], dynamic_batch=False)
    runner = Interpreter(str(path)).get_signature_runner()
    feeds = {f"in{i}": np.full((1, 3), i + 1, np.float32) for i in range(12)}
    got = runner(**feeds)
    for i in range(12):
        np.testing.assert_allclose(got[f"out{i}"], feeds[f"in{i}"] * (i + 2))


@pytest.mark.slow
def test_outputs_declare_the_dynamic_batch_in_the_file(tmp_path):
    """An app sizing buffers from the file's own signature sees the batch, not litert-torch's tracing size."""
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "m.tflite"
    export_tflite(build_model(f"{DIGITS_MODEL}:build"), {"x": torch.rand(1, 1, 8, 8)}, path)
    it = Interpreter(str(path))
    assert it.get_input_details()[0]["shape_signature"][0] == -1
    assert it.get_output_details()[0]["shape_signature"].tolist() == [-1, 10]
    it.resize_tensor_input(0, [5, 1, 8, 8])
    it.allocate_tensors()
    it.set_tensor(0, np.zeros((5, 1, 8, 8), np.float32))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).shape == (5, 10)


@pytest.mark.slow
def test_full_integer_int8_calibrates_with_few_samples(tmp_path):
    model = build_model(f"{DIGITS_MODEL}:build")
    calib = {"x": np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)}  # fewer than one batch of 32
    path = tmp_path / "m.int8.tflite"
    export_tflite(model, {"x": torch.rand(1, 1, 8, 8)}, path, precision="int8", calib=calib, int8_io=True)
    q = inspect_artifact(path)["inputs"][0]["quantization"]
    assert q != {"scale": 1.0, "zero_point": 0}, q  # an uncalibrated observer leaves scale 1, zero point 0


@pytest.mark.slow
def test_int8_io_choice_and_route_fallback(tmp_path, monkeypatch):
    """By default the INT8 file takes float32 and its first op quantizes; int8_io keeps the integer edge (with the
    calibrated scale), and both compute the same; when ai-edge-quantizer fails, PT2E makes the file and says why."""
    import edgesdk.compress.export_tflite as et
    from ai_edge_litert import schema_py_generated as schema

    model = build_model(f"{DIGITS_MODEL}:build")
    calib = {"x": np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)}
    x = {"x": torch.rand(1, 1, 8, 8)}
    paths = {k: tmp_path / f"{k}.int8.tflite" for k in ("float", "int8", "pt2e")}
    export_tflite(model, x, paths["float"], precision="int8", calib=calib)
    export_tflite(model, x, paths["int8"], precision="int8", calib=calib, int8_io=True)
    flat = schema.ModelT.InitFromPackedBuf(paths["float"].read_bytes(), 0)
    sg = flat.subgraphs[0]
    first = flat.operatorCodes[sg.operators[0].opcodeIndex]
    assert max(first.builtinCode, first.deprecatedBuiltinCode) == schema.BuiltinOperator.QUANTIZE
    assert sg.tensors[sg.inputs[0]].type == schema.TensorType.FLOAT32 and sg.tensors[sg.inputs[0]].name == b"x"
    assert inspect_artifact(paths["int8"])["inputs"][0]["dtype"] == "int8"

    def refuse(*a, **k):
        raise RuntimeError("no quantization for this op")

    monkeypatch.setattr(et, "_ai_edge_static", refuse)  # the fallback's control flow; PT2E itself runs for real
    info = export_tflite(model, x, paths["pt2e"], precision="int8", calib=calib)
    assert info.quantization["route"] == "litert-torch pt2e"
    assert "no quantization for this op" in info.quantization["route_reason"]
    assert any("litert-torch pt2e" in w for w in info.warnings)
    feeds = {"x": calib["x"][:8]}
    with load(paths["float"]) as a, load(paths["int8"]) as b, load(paths["pt2e"]) as c:
        ya, yb, yc = (s.run(feeds)["output"] for s in (a, b, c))
        assert a.delegation["delegate"] == "XNNPACK" and a.delegation["not_delegated"] == {}
    np.testing.assert_allclose(ya, yb, atol=1e-5)  # same integer graph, quantized in the graph or by the runtime
    assert compare({"o": ya}, {"o": yc}, atol=None, rtol=None).to_dict()["cosine"] > 0.99


class _Tok(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e = torch.nn.Embedding(100, 16)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.e(ids).mean(1))


class _TopK(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = torch.topk(x, 4, dim=1).values
        return self.fc(torch.cat([top, x[:, :4]], 1))


@pytest.mark.slow
def test_int64_ids_reach_an_int32_tflite_and_a_tflite_that_cannot_run_is_not_delivered(tmp_path):
    torch.manual_seed(0)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 100, (1, 12)))
    res = edgesdk.compress(_Tok(), {"ids": ids}, out_dir=tmp_path / "tok", targets=["onnx", "tflite"],
                           calib_data={"ids": np.random.default_rng(1).integers(0, 100, (32, 12))}, benchmark=False)
    arts = {a["name"]: a for a in res.manifest["artifacts"]}
    assert arts["model.tflite"]["inputs"][0]["dtype"] == "int32" and arts["model.tflite"]["parity"]["passed"]
    # an op the LiteRT runtime has no kernel for: TFLite is reported, ONNX still delivered
    res = edgesdk.compress(_TopK(), {"x": torch.rand(1, 8)}, out_dir=tmp_path / "topk", targets=["onnx", "tflite"],
                           benchmark=False)
    assert [a["name"] for a in res.manifest["artifacts"]] == ["model.onnx"]
    t = res.manifest["targets"]["tflite"]
    assert t["status"] == "failed" and "could not be verified" in t["reason"], t
    assert not (tmp_path / "topk" / "model.tflite").exists()


class _Pixels(torch.nn.Module):
    """Takes uint8 pixels, as camera apps hand them over."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255.0).mean((2, 3))


@pytest.mark.slow
def test_integer_data_inputs_stay_integer_in_full_integer_tflite(tmp_path):
    """Only integer tensors that stand for floats (with a scale) get a float edge: uint8 pixels stay uint8."""
    model = _Pixels().eval()
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    calib = {"x": np.random.default_rng(0).integers(0, 256, (16, 3, 8, 8), dtype=np.uint8)}
    path = tmp_path / "p.int8.tflite"
    export_tflite(model, {"x": x}, path, precision="int8", calib=calib)
    with load(path) as sess:
        assert sess.inputs[0].dtype == "uint8"
        got = sess.run({"x": x.numpy()})["output"]
    with torch.no_grad():
        ref = model(x).numpy()
    assert compare({"o": ref}, {"o": got}, atol=None, rtol=None).to_dict()["cosine"] > 0.99
