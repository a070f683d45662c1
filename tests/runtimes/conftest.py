"""Tiny ONNX models built with onnx.helper (no torch needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.runtimes.registry import BackendRecord, register_backend

# A backend from outside edgesdk, added through the registry alone (see toy_backend.py). It is registered
# after the real ones, so it is never preferred for a format, and out of --backends auto: it only runs when
# asked for by name.
TOY = register_backend(BackendRecord("toy-numpy", "tests.runtimes.toy_backend:NumpySession", "numpy", ("onnx",),
                                     "it ships with the tests", in_auto=False))


def mlp_model(path: Path, seed: int = 0) -> Path:
    """x: float32[batch, 4] -> MatMul(4x8) + Add -> Relu -> MatMul(8x3) -> y: float32[batch, 3]."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgesdk-tests")
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def two_input_model(path: Path) -> Path:
    """a: float32[batch, 2, 3], ids: int64[batch, 3] -> out = a * Cast(ids) summed: float32[batch, 3]."""
    nodes = [helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["a", "idf"], ["m"]),
             helper.make_node("ReduceSum", ["m", "axes"], ["out"], keepdims=0)]
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2, 3]),
                                             helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return mlp_model(tmp_path / "mlp.onnx")


@pytest.fixture
def two_input(tmp_path: Path) -> Path:
    return two_input_model(tmp_path / "two.onnx")
