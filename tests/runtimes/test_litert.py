"""The LiteRT backend: Session contract, dynamic batch, int8 I/O scaling with clipping, interpreter pool."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch")

from edgesdk.compress.export_tflite import export_tflite  # noqa: E402
from edgesdk.errors import ArtifactError, FeedError  # noqa: E402
from edgesdk.runtimes import TensorSpec, load  # noqa: E402
from edgesdk.runtimes.litert import dequantize, quantize  # noqa: E402
from tests.models import build, make_inputs  # noqa: E402


@pytest.fixture(scope="module")
def tflites(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    d = tmp_path_factory.mktemp("tfl")
    model = build("Residual")
    calib = {"x": make_inputs("Residual", 64)["x"].numpy()}
    export_tflite(model, make_inputs("Residual", 1), d / "m.tflite")
    export_tflite(model, make_inputs("Residual", 1), d / "m.int8.tflite", precision="int8", calib=calib, int8_io=True)
    return model, d / "m.tflite", d / "m.int8.tflite"


def test_contract_and_fp32_parity(tflites):
    model, fp32, _ = tflites
    with load(fp32, threads=2) as sess:
        assert sess.backend == "litert"
        assert sess.inputs == [TensorSpec("x", "float32", ("batch", 3, 16, 16))]
        assert [o.name for o in sess.outputs] == ["output"]
        for batch in (1, 6, 2):  # dynamic batch resizes the interpreter
            x = make_inputs("Residual", batch)
            with torch.no_grad():
                ref = model(x["x"]).numpy()
            np.testing.assert_allclose(sess.run({"x": x["x"].numpy()})["output"], ref, atol=1e-4)
        with pytest.raises(FeedError, match="dim 1 is 4"):
            sess.run({"x": np.zeros((1, 4, 16, 16), np.float32)})


def test_int8_float_io_raw_io_and_clipping(tflites, caplog):
    _, _, int8 = tflites
    x = make_inputs("Residual", 2)["x"].numpy()
    with load(int8) as sess:
        assert sess.inputs[0].dtype == "float32"
        y = sess.run({"x": x})["output"]
        with caplog.at_level(logging.WARNING):
            sess.run({"x": x * 1000})
            sess.run({"x": x * 1000})
        assert sum("clipped" in r.message for r in caplog.records) == 1  # warned once
    with load(int8, raw_io=True) as raw:
        assert raw.inputs[0].dtype == "int8"
        io_in, io_out = raw._in[0], raw._out[0]
        qx, _ = quantize(x, io_in)
        yq = raw.run({"x": qx})["output"]
        assert yq.dtype == np.int8
        np.testing.assert_allclose(dequantize(yq, io_out), y, atol=1e-6)


def test_quantize_helpers_round_trip():
    class IO:
        scale, zero, dtype, qmin, qmax = 0.1, -3, np.dtype(np.int8), -128, 127

    q, clipped = quantize(np.array([0.0, 1.0, 50.0], np.float32), IO)
    assert q.tolist() == [-3, 7, 127] and clipped
    np.testing.assert_allclose(dequantize(q, IO)[:2], [0.0, 1.0], atol=1e-6)


def test_quantize_rounds_half_away_from_zero_and_maps_nan_to_the_zero_point():
    class IO:
        scale, zero, dtype, qmin, qmax = 1.0, 0, np.dtype(np.int8), -128, 127

    q, _ = quantize(np.array([0.5, 1.5, 2.5, -0.5, -2.5, np.nan], np.float32), IO)
    assert q.tolist() == [1, 2, 3, -1, -3, 0]  # TFLite's kernel; numpy's round would give 0, 2, 2, -0, -2


def test_inspect_reads_tflite_signature_types_and_ops(tflites):
    from edgesdk.runtimes import inspect_artifact

    _, fp32, int8 = tflites
    info = inspect_artifact(fp32)
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 16, 16]}]
    assert info["outputs"][0]["name"] == "output" and info["parameters"] > 0
    assert "CONV_2D" in info["ops"] and "ADD" in info["ops"]  # the residual add
    q = inspect_artifact(int8)
    assert q["inputs"][0]["dtype"] == "int8" and set(q["inputs"][0]["quantization"]) == {"scale", "zero_point"}
    assert "CONV_2D" in q["ops"] and q["node_count"] == sum(q["ops"].values())


def test_threads_use_separate_interpreters(tflites):
    _, fp32, _ = tflites
    xs = [make_inputs("Residual", 1 + i % 3)["x"].numpy() for i in range(6)]
    with load(fp32, threads=1) as sess:
        expected = [sess.run({"x": x})["output"] for x in xs]
        bad: list[tuple[int, int]] = []

        def worker(t: int) -> None:
            for i in range(60):
                k = (t + i) % len(xs)
                if not np.array_equal(sess.run({"x": xs[k]})["output"], expected[k]):
                    bad.append((t, i))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert bad == []


def test_wrong_files(tmp_path, tflites):
    _, fp32, _ = tflites
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(fp32.read_bytes()[:400])
    with pytest.raises(ArtifactError, match="cut.tflite"):
        load(cut)
    with pytest.raises(ArtifactError, match="tflite file"):
        load(fp32, backend="onnxruntime")


def test_fixed_batch_fallback_runs_any_batch(tmp_path):
    from tests.models import FlattenNet

    torch.manual_seed(0)
    model = FlattenNet().eval()
    info = export_tflite(model, make_inputs("Residual", 1), tmp_path / "f.tflite")
    assert not info.dynamic_batch and "fixed batch of 1" in info.warnings[0]
    x = make_inputs("Residual", 3)["x"]
    with load(tmp_path / "f.tflite") as sess:
        assert sess.inputs[0].shape[0] == "batch"
        with torch.no_grad():
            np.testing.assert_allclose(sess.run({"x": x.numpy()})["output"], model(x).numpy(), atol=1e-4)
