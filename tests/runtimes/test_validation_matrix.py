"""One input-validation matrix for every CPU backend: each bad feed raises FeedError naming expected vs
actual, never a native crash, and the session keeps giving the same answers afterwards."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgesdk.errors import FeedError, InferenceError
from edgesdk.runtimes import load
from tests.conftest import DIGITS_MODEL

GOOD = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)

BAD = {
    "wrong name": ({"y": GOOD}, ["x: missing", "y: not an input"]),
    "missing input": ({}, ["x: missing"]),
    "extra input": ({"x": GOOD, "z": GOOD}, ["z: not an input"]),
    "wrong rank": ({"x": GOOD.reshape(2, 64)}, ["rank 2", "expected rank 4"]),
    "wrong shape": ({"x": np.zeros((2, 1, 8, 9), np.float32)}, ["dim 3 is 9, expected 8"]),
    "wrong dtype": ({"x": GOOD.astype(np.float64)}, ["dtype float64, expected float32"]),
    "integer dtype": ({"x": GOOD.astype(np.int32)}, ["dtype int32, expected float32"]),
    "list not array": ({"x": GOOD.tolist()}, ["got a list", "np.asarray"]),
    "scalar": ({"x": np.float32(1.0)}, ["got a float32"]),
    "not a dict": ([GOOD], ["dict of input name"]),
}


@pytest.fixture(scope="module")
def backends(digits_artifacts, tmp_path_factory):
    out = {"onnxruntime": digits_artifacts / "model.onnx"}
    if importlib.util.find_spec("openvino"):
        out["openvino"] = digits_artifacts / "model.onnx"
    if importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_litert"):
        import torch

        from edgesdk.compress.export_tflite import export_tflite
        from edgesdk.intake import build_model

        path = tmp_path_factory.mktemp("tflv") / "digits.tflite"
        export_tflite(build_model(f"{DIGITS_MODEL}:build"), {"x": torch.rand(1, 1, 8, 8)}, path, output_names=["y"])
        out["litert"] = path
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "litert"])
def test_validation_matrix(backends, backend):
    if backend not in backends:
        pytest.skip(f"{backend} is not installed")
    with load(backends[backend], backend=backend) as sess:
        want = sess.run({"x": GOOD})
        for case, (feeds, needles) in BAD.items():
            with pytest.raises(FeedError) as e:
                sess.run(feeds)
            msg = e.value.format()
            assert "x: float32[batch, 1, 8, 8]" in msg, (case, msg)  # the expected side, always
            for n in needles:
                assert n in msg, (case, n, msg)
        # non-contiguous input: accepted, same answer
        nc = np.ascontiguousarray(GOOD.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
        assert not nc.flags.c_contiguous
        got = sess.run({"x": nc})
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        # NaN is allowed (and propagates) unless check_finite=True asks for it to be refused
        nan = GOOD.copy()
        nan[0, 0, 0, 0] = np.nan
        sess.run({"x": nan})
        with pytest.raises(FeedError, match="1 NaN/Inf values"):
            sess.run({"x": nan}, check_finite=True)
        # an empty batch matches the signature; a backend may run it or refuse it, but only with an SDK error
        try:
            out = sess.run({"x": np.zeros((0, 1, 8, 8), np.float32)})
            assert all(v.shape[0] == 0 for v in out.values())
        except InferenceError as e:
            assert "0, 1, 8, 8" in e.format() and e.hint
        # still usable and unchanged after every error
        again = sess.run({"x": GOOD})
        for k in want:
            np.testing.assert_array_equal(again[k], want[k])


def test_inputs_that_disagree_on_the_batch_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "add.onnx"))
    with load(tmp_path / "add.onnx") as sess:
        with pytest.raises(FeedError, match="inputs disagree on the batch size: a 2, b 3"):
            sess.run({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32)})
        assert sess.run({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 4), np.float32)})["y"].sum() == 24
