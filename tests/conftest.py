"""Shared fixtures: a trained digits model directory (real data, trained once per session)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MODEL = ROOT / "examples" / "digits" / "model.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests without a CUDA device and `tensorrt` tests without the tensorrt package."""
    import importlib.util

    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = False
    if any("gpu" in item.keywords for item in items):
        try:
            import torch

            has_gpu = torch.cuda.is_available()
        except ImportError:
            has_gpu = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs the tensorrt package (pip install 'edgesdk[tensorrt]')"))


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the digits example briefly and return its directory (weights, calib.npz, eval.npz)."""
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    try:
        import train  # examples/digits/train.py
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("digits")
    train.train(out, epochs=15, seed=0)
    return out


@pytest.fixture(scope="session")
def digits_artifacts(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete artifact directory for the digits model (ONNX fp32 + int8, report.json), built once.

    Treat it as read-only; copy it (shutil.copytree) before changing anything inside.
    """
    from click.testing import CliRunner

    from edgesdk.cli import main

    out = tmp_path_factory.mktemp("digits-artifacts") / "out"
    args = ["compress", f"{DIGITS_MODEL}:build", "--weights", str(digits_dir / "weights.safetensors"),
            "--input", "x:1x1x8x8", "--calib", str(digits_dir / "calib.npz"), "--eval-data",
            str(digits_dir / "eval.npz"), "--quantize", "int8", "--iterations", "20", "--warmup", "2",
            "--batch", "1,8", "--threads", "1", "-o", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out
