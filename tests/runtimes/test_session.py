"""The Session contract on the onnxruntime backend: specs, runs, feed validation, threads, errors."""
from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from edgesdk.errors import ArtifactError, BackendUnavailableError, FeedError
from edgesdk.runtimes import TensorSpec, load


def test_specs_run_and_dynamic_batch(mlp):
    with load(mlp, threads=1) as sess:
        assert sess.backend == "onnxruntime"
        assert sess.inputs == [TensorSpec("x", "float32", ("batch", 4))]
        assert sess.outputs == [TensorSpec("y", "float32", ("batch", 3))]
        raw = ort.InferenceSession(str(mlp), providers=["CPUExecutionProvider"])
        for batch in (1, 7):
            x = np.random.default_rng(batch).random((batch, 4), dtype=np.float32)
            out = sess({"x": x})  # __call__ is run
            np.testing.assert_array_equal(out["y"], raw.run(None, {"x": x})[0])
        assert sess.load_time_s is not None and sess.load_time_s > 0


def test_feed_errors_list_every_problem_and_session_survives(two_input):
    sess = load(two_input)
    good = {"a": np.ones((2, 2, 3), np.float32), "ids": np.ones((2, 3), np.int64)}
    with pytest.raises(FeedError) as err:
        sess.run({"a": np.ones((2, 2, 3), np.float64), "extra": np.ones(1)})
    msg = str(err.value)
    assert "ids: missing" in msg and "extra: not an input" in msg and "dtype float64, expected float32" in msg
    assert "a: float32[batch, 2, 3]" in msg  # expected side listed
    with pytest.raises(FeedError, match="rank 2"):
        sess.run({"a": np.ones((2, 6), np.float32), "ids": good["ids"]})
    with pytest.raises(FeedError, match="dim 2 is 4, expected 3"):
        sess.run({"a": np.ones((2, 2, 4), np.float32), "ids": good["ids"]})
    with pytest.raises(FeedError, match="np.asarray"):
        sess.run({"a": [[[1.0] * 3] * 2], "ids": good["ids"]})
    with pytest.raises(FeedError, match="dict"):
        sess.run([good["a"], good["ids"]])
    # still usable, and non-contiguous arrays are accepted
    out = sess.run(good)["out"]
    np.testing.assert_array_equal(out, np.full((2, 3), 2.0, np.float32))
    a_nc = np.ones((2, 3, 2), np.float32).transpose(0, 2, 1)
    assert not a_nc.flags.c_contiguous
    np.testing.assert_array_equal(sess.run({"a": a_nc, "ids": good["ids"]})["out"], out)
    sess.close()


def test_check_finite(mlp):
    with load(mlp) as sess:
        x = np.array([[np.nan, 0, 0, 0]], np.float32)
        assert np.isnan(sess.run({"x": x})["y"]).any()  # allowed by default
        with pytest.raises(FeedError, match="NaN"):
            sess.run({"x": x}, check_finite=True)


def test_threads_bitwise_equal(mlp):
    rng = np.random.default_rng(0)
    xs = [rng.random((1 + i % 4, 4), dtype=np.float32) for i in range(16)]
    with load(mlp, threads=1) as sess:
        expected = [sess.run({"x": x})["y"] for x in xs]
        errors: list[BaseException] = []
        mismatches = []

        def worker(tid: int) -> None:
            try:
                for i in range(200):
                    k = (tid + i) % len(xs)
                    if not np.array_equal(sess.run({"x": xs[k]})["y"], expected[k]):
                        mismatches.append((tid, i))
            except BaseException as e:  # collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and mismatches == []


def test_load_artifact_directory(tmp_path, mlp):
    import json
    import shutil

    d = tmp_path / "art"
    d.mkdir()
    shutil.copy(mlp, d / "m.onnx")
    from edgesdk.atomic import sha256_file

    entry = {"name": "m.onnx", "path": "m.onnx", "format": "onnx"}
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [entry]}))
    with pytest.raises(ArtifactError, match="records no sha256 for m.onnx"):  # nothing unverified runs
        load(d)
    entry["sha256"] = sha256_file(d / "m.onnx")
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [entry]}))
    with load(d) as sess:
        assert sess.path.name == "m.onnx"
    with pytest.raises(ArtifactError, match="no runnable artifact"):
        load(d, artifact="other")


def test_wrong_backend_and_unknown_backend(tmp_path, mlp):
    tfl = tmp_path / "model.tflite"
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    with pytest.raises(ArtifactError, match="tflite file"):
        load(tfl, backend="onnxruntime")
    with pytest.raises(ArtifactError, match="LiteRT cannot load"):  # a fake flatbuffer, refused cleanly
        load(tfl)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tvm'"):
        load(mlp, backend="tvm")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
            load(mlp, device="cuda")


def test_torch_session_matches_module():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    from edgesdk.runtimes.torch import TorchSession

    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    sess = TorchSession.from_module(model, ["x"], ["logits"], example_inputs={"x": x[:1]}).load()
    assert sess.inputs == [TensorSpec("x", "float32", ("batch", 4))]
    assert sess.outputs == [TensorSpec("logits", "float32", ("batch", 2))]
    with torch.no_grad():
        np.testing.assert_array_equal(sess.run({"x": x})["logits"], model(torch.from_numpy(x)).numpy())
    with pytest.raises(FeedError):
        sess.run({"x": x.astype(np.float64)})


# --- onnxruntime execution providers (pure selection logic; the GPU EPs themselves need onnxruntime-gpu) ---

def test_provider_choice_per_device(tmp_path):
    from edgesdk.errors import BackendUnavailableError
    from edgesdk.runtimes.onnxruntime import choose_providers

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cpu", gpu) == ["CPUExecutionProvider"]
    # auto never picks the TensorRT EP: it would rebuild an engine in every new process
    assert choose_providers("auto", gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda, cpu = choose_providers("tensorrt", gpu, trt_cache=tmp_path, trt_fp16=True)
    assert trt[0] == "TensorrtExecutionProvider" and (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt[1]["trt_engine_cache_enable"] and trt[1]["trt_engine_cache_path"] == str(tmp_path)
    assert trt[1]["trt_timing_cache_path"] == str(tmp_path) and trt[1]["trt_fp16_enable"] is True
    for device in ("cuda", "tensorrt"):
        with pytest.raises(BackendUnavailableError) as e:
            choose_providers(device, ["CPUExecutionProvider"])
        assert "onnxruntime-gpu" in e.value.format() and "providers: CPUExecutionProvider" in e.value.format()
    with pytest.raises(BackendUnavailableError, match="unknown device"):
        choose_providers("tpu", gpu)


def test_cpu_only_onnxruntime_refuses_device_cuda_clearly(digits_artifacts):
    from edgesdk.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError) as e:
        load(digits_artifacts / "model.onnx", backend="onnxruntime", device="cuda")
    assert "CUDAExecutionProvider" in e.value.format()
