"""The OpenVINO backend passes the same Session contract on CPU: FP32 parity (not bf16), threads, errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("openvino")

from edgesdk.errors import ArtifactError, FeedError, InputError  # noqa: E402
from edgesdk.runtimes import TensorSpec, backend_status, load  # noqa: E402


def test_specs_and_fp32_parity_with_onnxruntime(mlp):
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32) * 10
    with load(mlp, backend="openvino", threads=1) as ov, load(mlp, backend="onnxruntime") as ort:
        assert ov.backend == "openvino" and ov.precision == "f32"
        assert ov.inputs == [TensorSpec("x", "float32", ("batch", 4))]
        assert ov.outputs == [TensorSpec("y", "float32", ("batch", 3))]
        for batch in (1, 5):
            np.testing.assert_allclose(ov.run({"x": x[:batch]})["y"], ort.run({"x": x[:batch]})["y"], rtol=1e-5,
                                       atol=1e-5)


def test_bf16_is_its_own_precision(mlp):
    x = np.random.default_rng(1).random((4, 4), dtype=np.float32) * 100
    from edgesdk.runtimes.fingerprint import device_fingerprint

    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(device_fingerprint()["isa"]))
    with load(mlp, backend="openvino", precision="bf16") as bf, load(mlp, backend="openvino") as f32:
        assert bf.precision == ("bf16" if has_bf16 else "f32")  # what the plugin runs, never what was asked
        assert f32.precision == "f32"
        y16, y32 = bf.run({"x": x})["y"], f32.run({"x": x})["y"]
        np.testing.assert_allclose(y16, y32, rtol=5e-2, atol=1.0)
    with pytest.raises(InputError, match="precision"):
        load(mlp, backend="openvino", precision="int3")


def test_threads_bitwise_equal_and_feed_errors(mlp):
    xs = [np.random.default_rng(i).random((1 + i % 3, 4), dtype=np.float32) for i in range(8)]
    with load(mlp, backend="openvino", threads=1) as sess:
        expected = [sess.run({"x": x})["y"] for x in xs]
        bad: list[object] = []

        def worker(t: int) -> None:
            for i in range(100):
                k = (t + i) % len(xs)
                if not np.array_equal(sess.run({"x": xs[k]})["y"], expected[k]):
                    bad.append((t, i))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert bad == []
        with pytest.raises(FeedError, match="dtype float64"):
            sess.run({"x": xs[0].astype(np.float64)})
        assert sess.run({"x": xs[0]})["y"].shape == (1, 3)


def test_wrong_files(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"<html>nope</html>")
    with pytest.raises(ArtifactError, match="HTML"):
        load(f, backend="openvino")


def test_doctor_lists_openvino():
    row = next(r for r in backend_status() if r["name"] == "openvino")
    assert row["available"] and "CPU" in row["detail"]


def test_output_names_are_the_graphs_even_behind_an_identity(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["hidden"]),
                               helper.make_node("Identity", ["hidden"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    with load(tmp_path / "m.onnx", backend="openvino") as sess:
        assert [o.name for o in sess.outputs] == ["logits"]
        assert list(sess.run({"x": np.ones((1, 4), np.float32)})) == ["logits"]


def test_close_while_other_threads_run_never_returns_an_empty_answer(digits_artifacts):
    from edgesdk.errors import InferenceError

    sess = load(digits_artifacts / "model.onnx", backend="openvino")
    x = np.zeros((1, 1, 8, 8), np.float32)
    wrong, stop = [], threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                out = sess.run({"x": x})
                if set(out) != {"output"}:
                    wrong.append(out)
            except (InferenceError, FeedError):
                pass  # closed under it: an error is the right answer

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        sess.close()
        sess.load()
    stop.set()
    for t in threads:
        t.join()
    sess.close()
    assert wrong == []
