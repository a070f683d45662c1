"""A toy backend that lives outside edgesdk: it runs small ONNX graphs (MatMul, Add, Relu) in numpy.

It exists to show that a backend is one file plus one registry record: tests/runtimes/conftest.py
registers it, and it then appears in `doctor`, in the recipe's and the CLI's backend choices, and in
the backend contract suite, with no other change to edgesdk.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgesdk.errors import ArtifactError
from edgesdk.runtimes.base import Option, Session, TensorSpec

_OPS = {"MatMul": np.matmul, "Add": np.add, "Relu": lambda x: np.maximum(x, 0)}
_TYPES = {1: "float32", 7: "int64"}


class NumpySession(Session):
    backend = "toy-numpy"
    option_specs = {"strict": Option(bool, True, "refuse graphs with ops it does not know")}

    def _load_impl(self) -> None:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(self.path))
        unknown = sorted({n.op_type for n in model.graph.node} - set(_OPS))
        if unknown and self.options["strict"]:
            raise ArtifactError(f"the toy backend cannot run {', '.join(unknown)}", hint="use backend='auto'")
        self._consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self._nodes = [(n.op_type, list(n.input), n.output[0]) for n in model.graph.node]

        def spec(vi: Any) -> TensorSpec:
            dims = tuple(d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim)
            return TensorSpec(vi.name, _TYPES.get(vi.type.tensor_type.elem_type, "float32"), dims)

        self._in = [spec(v) for v in model.graph.input if v.name not in self._consts]
        self._out = [spec(v) for v in model.graph.output]

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = {**self._consts, **feeds}
        for op, ins, out in self._nodes:
            values[out] = _OPS[op](*(values[i] for i in ins)).astype(np.float32)
        return {o.name: values[o.name] for o in self._out or []}
