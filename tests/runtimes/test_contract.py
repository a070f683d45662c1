"""The Session contract every registered backend must keep, parametrized over the registry (not a list
written here): load, specs, run at several batch sizes against a numpy reference, feed errors that leave
the session usable, many threads bitwise equal, close, and typed options."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.errors import FeedError, InputError
from edgesdk.runtimes import backend_status, load
from edgesdk.runtimes.registry import BACKENDS, backend_installed

from .conftest import TOY, mlp_model


def _mlp_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)  # the same draws as mlp_model
    w1, b1, w2 = rng.standard_normal((4, 8)), rng.standard_normal(8), rng.standard_normal((8, 3))
    return (np.maximum(x @ w1.astype(np.float32) + b1.astype(np.float32), 0) @ w2.astype(np.float32))


def _tflite_mlp(path: Path) -> Path:
    """The same MLP as a TFLite file (needs litert-torch to write it)."""
    pytest.importorskip("litert_torch")
    import torch

    from edgesdk.compress.export_tflite import export_tflite

    rng = np.random.default_rng(0)
    w1, b1, w2 = (torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in ((4, 8), (8,), (8, 3)))

    class MLP(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x @ w1 + b1) @ w2

    export_tflite(MLP().eval(), {"x": torch.rand(2, 4)}, path, output_names=["y"])
    return path


_MAKERS = {"onnx": mlp_model, "tflite": _tflite_mlp}
CASES = [(name, fmt) for name, rec in BACKENDS.items() for fmt in rec.formats[:1] if fmt in _MAKERS]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("contract")
    return {"onnx": mlp_model(d / "mlp.onnx")}


def _artifact(artifacts: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    if fmt not in artifacts:
        artifacts[fmt] = _MAKERS[fmt](tmp_path / f"mlp.{fmt}")
    return artifacts[fmt]


@pytest.mark.parametrize("backend, fmt", CASES, ids=[f"{b}-{f}" for b, f in CASES])
def test_session_contract(artifacts, tmp_path, backend, fmt):
    if not backend_installed(backend):
        pytest.skip(f"{backend} is not installed: {BACKENDS[backend].install}")
    path = _artifact(artifacts, fmt, tmp_path)
    with load(path, backend=backend, threads=1) as sess:
        assert sess.backend == backend
        assert [(s.name, s.dtype, len(s.shape)) for s in sess.inputs] == [("x", "float32", 2)]
        assert [o.name for o in sess.outputs] == ["y"] and sess.inputs[0].shape[1] == 4
        xs = [np.random.default_rng(b).random((b, 4), dtype=np.float32) for b in (1, 5, 2)]
        for x in xs:
            np.testing.assert_allclose(sess.run({"x": x})["y"], _mlp_reference(x), rtol=1e-4, atol=1e-4)
        for bad in ({"x": np.zeros((2, 5), np.float32)}, {"x": np.zeros((2, 4), np.float64)}, {"z": xs[0]}, {}):
            with pytest.raises(FeedError):
                sess.run(bad)
        expected = [sess.run({"x": x})["y"] for x in xs]  # still usable after the bad feeds
        wrong: list[int] = []

        def worker(t: int) -> None:
            for i in range(30):
                k = (t + i) % len(xs)
                if not np.array_equal(sess.run({"x": xs[k]})["y"], expected[k]):
                    wrong.append(k)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert wrong == []
    with pytest.raises(InputError, match="unknown option 'cuda_grpah'") as e:
        load(path, backend=backend, cuda_grpah=True)
    assert "options it takes" in e.value.expected


def test_a_backend_added_through_the_registry_alone_is_everywhere(artifacts):
    """The toy backend of tests/runtimes/toy_backend.py, registered in conftest.py and nowhere else."""
    from edgesdk.cli import main
    from edgesdk.recipe import Recipe, apply_options

    assert ("toy-numpy", "onnx") in CASES  # the contract suite runs it
    row = next(b for b in backend_status() if b["name"] == "toy-numpy")
    assert row["available"] and row["formats"] == ["onnx"] and row["install"] == TOY.install
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0 and "toy-numpy" in res.stdout
    assert apply_options(Recipe(), backends="onnxruntime,toy-numpy").benchmark.backends == ("onnxruntime", "toy-numpy")
    with load(artifacts["onnx"]) as sess:  # registered last: never preferred for a format
        assert sess.backend == "onnxruntime"
    with pytest.raises(InputError, match="option 'strict' of the toy-numpy backend must be bool"):
        load(artifacts["onnx"], backend="toy-numpy", strict="yes")
