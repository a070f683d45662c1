"""TensorRT target: what runs without a GPU (profiles, settings, the compatibility rules, the skipped target)
and, behind markers, the real build and run on a machine with TensorRT and a GPU."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgesdk.compress.export_tensorrt import EngineSettings, compute_profiles, record_path
from edgesdk.errors import BackendUnavailableError, InputError
from edgesdk.runtimes.tensorrt import check_compatibility


def test_profile_from_dynamic_batch():
    p = compute_profiles([{"name": "x", "shape": ["batch", 3, 224, 224]}], batch=(1, 8, 32))
    assert p == {"x": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}


def test_profile_other_dynamic_dims_take_the_example_size_or_an_override():
    inputs = [{"name": "ids", "shape": ["batch", "seq"]}, {"name": "mask", "shape": [-1, -1]}]
    p = compute_profiles(inputs, batch=(1, 4, 16), example_shapes={"ids": (1, 128), "mask": (1, 128)},
                         overrides={"mask": ((1, 16), (4, 128), (16, 512))})
    assert p["ids"] == ((1, 128), (4, 128), (16, 128))
    assert p["mask"] == ((1, 16), (4, 128), (16, 512))


def test_profile_of_a_static_model_is_its_shape():
    assert compute_profiles([{"name": "x", "shape": [2, 3]}]) == {"x": ((2, 3), (2, 3), (2, 3))}


@pytest.mark.parametrize("kwargs, needle", [
    ({"batch": (4, 2, 8)}, "1 <= min <= opt <= max"),
    ({"batch": (0, 1, 1)}, "1 <= min <= opt <= max"),
    ({"overrides": {"x": ((1, 3), (1, 3))}}, "(min, opt, max)"),
    ({"overrides": {"x": ((1, 4), (1, 4), (1, 4))}}, "changes fixed dimension 1"),
    ({"overrides": {"x": ((1, 3, 1), (1, 3, 1), (1, 3, 1))}}, "wrong rank"),
    ({"overrides": {"x": ((8, 3), (4, 3), (16, 3))}}, "min <= opt <= max per dimension"),
    ({"overrides": {"y": ((1, 3), (1, 3), (1, 3))}}, "an input the model does not have"),
])
def test_profile_errors_say_what_is_wrong(kwargs, needle):
    with pytest.raises(InputError) as e:
        compute_profiles([{"name": "x", "shape": ["batch", 3]}], **kwargs)
    assert needle in str(e.value)


def test_profile_needs_sizes_for_non_batch_dynamic_dims():
    with pytest.raises(InputError, match="besides the batch") as e:
        compute_profiles([{"name": "ids", "shape": ["batch", "seq"]}], batch=(1, 1, 4))
    assert "trt_shapes" in e.value.hint


def test_settings_round_trip_and_validation():
    s = EngineSettings(precision="int8", profiles={"x": ((1, 3), (8, 3), (32, 3))}, dla_core=0,
                       version_compatible=True)
    d = json.loads(json.dumps(s.to_dict()))
    assert EngineSettings.from_dict(d) == s
    for bad in ({"precision": "int4"}, {"workspace_mb": 0}, {"dla_core": -1}, {"hardware_compatibility": "x"},
                {"optimization_level": 9}):
        with pytest.raises(InputError):
            EngineSettings(**bad)


HERE = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


@pytest.mark.parametrize("record, expect", [
    ({"tensorrt": "10.3.0.26", "gpu": "Orin", "compute_capability": "8.7"}, []),
    ({"tensorrt": "10.3.1", "gpu": "Orin", "compute_capability": "8.7"}, ["TensorRT 10.3.1"]),
    ({"tensorrt": "10.1.0", "gpu": "Orin", "compute_capability": "8.7",
      "settings": {"version_compatible": True}}, []),
    ({"tensorrt": "10.5.0", "gpu": "Orin", "compute_capability": "8.7",
      "settings": {"version_compatible": True}}, ["at or after 10.5.0"]),
    ({"tensorrt": "9.2.0", "gpu": "Orin", "compute_capability": "8.7",
      "settings": {"version_compatible": True}}, ["needs 9.x"]),
    ({"tensorrt": "10.3.0", "gpu": "NVIDIA A100", "compute_capability": "8.0"}, ["NVIDIA A100 (compute capability "
                                                                                  "8.0), this GPU is Orin (8.7)"]),
    ({"tensorrt": "10.3.0", "gpu": "NVIDIA A100", "compute_capability": "8.0",
      "settings": {"hardware_compatibility": "ampere_plus"}}, []),
    ({"tensorrt": "10.0.1", "gpu": "NVIDIA T4", "compute_capability": "7.5"}, ["TensorRT 10.0.1", "NVIDIA T4"]),
])
def test_engine_compatibility_rules(record, expect):
    reasons = check_compatibility(record, HERE)
    assert len(reasons) == len(expect), reasons
    for reason, needle in zip(reasons, expect):
        assert needle in reason


def test_ampere_plus_engine_refused_on_turing():
    record = {"tensorrt": "10.3.0", "compute_capability": "8.6", "settings": {"hardware_compatibility": "ampere_plus"}}
    (reason,) = check_compatibility(record, {"tensorrt": "10.3.0", "gpu": "T4", "compute_capability": "7.5"})
    assert "Ampere and newer" in reason


def test_engine_file_without_tensorrt_names_the_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    from edgesdk.runtimes import load

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00ftrt" + bytes(200))
    with pytest.raises(BackendUnavailableError) as e:
        load(engine)
    assert "edgesdk[tensorrt]" in e.value.format()


def test_compress_reports_missing_tensorrt_as_skipped_and_runs_openvino(digits_dir, tmp_path):
    """`--targets onnx,tensorrt,openvino` on a machine without TensorRT: exit 0, TensorRT skipped with the
    install command, every ONNX artifact also verified and timed on OpenVINO."""
    import importlib.util

    from click.testing import CliRunner

    from edgesdk.cli import main
    from tests.conftest import DIGITS_MODEL

    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "compress", f"{DIGITS_MODEL}:build", "--weights", str(digits_dir / "weights.safetensors"), "--input",
        "x:1x1x8x8", "--calib", str(digits_dir / "calib.npz"), "--eval-data", str(digits_dir / "eval.npz"),
        "--targets", "onnx,tensorrt,openvino", "--quantize", "int8", "--iterations", "5", "--warmup", "1",
        "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    targets = manifest["targets"]
    has_trt = importlib.util.find_spec("tensorrt") is not None
    if not has_trt:
        for t in ("tensorrt", "tensorrt-int8"):
            assert targets[t]["status"] == "skipped" and "edgesdk[tensorrt]" in targets[t]["install"]
        assert "tensorrt: skipped" in (out / "report.md").read_text()
        assert not list(out.glob("*.engine"))
    assert targets["openvino"]["status"] == "ok"
    report = json.loads((out / "report.json").read_text())
    backends = {(r["artifact"], r["backend"]) for r in report["results"]}
    for name in ("model.onnx", "model.int8.onnx"):
        assert {(name, "onnxruntime"), (name, "openvino")} <= backends
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    assert by_name["model.onnx"]["meta"]["parity_by_backend"]["openvino"]["passed"] is True


def test_recipe_tensorrt_section_and_flags():
    from edgesdk.recipe import Recipe

    r = Recipe.from_dict({"targets": ["tensorrt"], "quantize": {"mode": "fp16"},
                          "tensorrt": {"batch": [1, 8, 32], "workspace_mb": 2048, "dla_core": 0}})
    assert r.stages == ["export_onnx", "quantize_onnx", "export_tensorrt", "quantize_tensorrt"]
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(InputError, match="MIN:OPT:MAX"):
        Recipe.from_dict({"tensorrt": {"batch": [8, 1, 32]}})


# -- on a machine with TensorRT and an NVIDIA GPU ----------------------------------------------

@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_build_run_and_parity(digits_artifacts, tmp_path, precision):
    from edgesdk.compress.export_tensorrt import build_engine
    from edgesdk.runtimes import load

    onnx_path = digits_artifacts / "model.onnx"
    engine = tmp_path / f"model.{precision}.engine"
    shutil.copy(onnx_path, tmp_path / "model.onnx")
    settings = EngineSettings(precision=precision, profiles=compute_profiles(
        [{"name": "x", "shape": ["batch", 1, 8, 8]}], batch=(1, 8, 64)))
    info = build_engine(tmp_path / "model.onnx", engine, settings)
    assert record_path(engine).is_file() and info.record["compute_capability"]
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    with load(tmp_path / "model.onnx", backend="onnxruntime", device="cpu") as ref, load(engine) as sess:
        want, got = ref.run({"x": x}), sess.run({"x": x})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-3 if precision == "fp32" else 3e-2)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_incompatible_engine_is_refused_then_rebuilt(digits_artifacts, tmp_path):
    from edgesdk.compress.export_tensorrt import build_engine
    from edgesdk.errors import ArtifactError
    from edgesdk.runtimes import load

    shutil.copy(digits_artifacts / "model.onnx", tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    build_engine(tmp_path / "model.onnx", engine, EngineSettings(profiles=compute_profiles(
        [{"name": "x", "shape": ["batch", 1, 8, 8]}], batch=(1, 4, 16))))
    rec = json.loads(record_path(engine).read_text())
    rec["tensorrt"] = "9.0.0"
    record_path(engine).write_text(json.dumps(rec))
    with pytest.raises(ArtifactError, match="another machine"):
        load(engine)
    with load(engine, rebuild=True) as sess:
        assert sess.run({"x": np.zeros((2, 1, 8, 8), np.float32)})


@pytest.mark.gpu
def test_torch_backend_on_cuda_fp16_and_graphs():
    import torch

    from edgesdk.runtimes.torch import TorchSession
    from tests.models import ConvBnRelu

    model = ConvBnRelu().eval()
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    ref = model(torch.from_numpy(x)).detach().numpy()
    for kwargs in ({}, {"precision": "fp16"}, {"cuda_graph": True}, {"precision": "fp16", "cuda_graph": True}):
        sess = TorchSession.from_module(model, ["x"], example_inputs={"x": x[:1]}, device="cuda", **kwargs).load()
        got = sess.run({"x": x})["output"]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-2 if "precision" in kwargs else 1e-4)
        again = sess.run({"x": x[::-1].copy()})["output"]  # a replay with new data gives new results
        np.testing.assert_allclose(again, ref[::-1], atol=2e-2 if "precision" in kwargs else 1e-4)
