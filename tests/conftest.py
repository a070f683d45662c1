"""Shared fixtures: a trained digits model directory (real data, trained once per session)."""
from __future__ import annotations

import json
import subprocess
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


def train_example(script: Path, out: Path, *args: str) -> dict:
    """Run an example's train.py as its own process and return its train_summary.json.

    Every example has its own `train` and `model` modules; importing two of them into one interpreter
    would hand the second the first one's (sys.modules caches by name), so each trains in a process.
    """
    proc = subprocess.run([sys.executable, str(script), "--out", str(out), *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads((out / "train_summary.json").read_text())


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the digits example briefly and return its directory (weights, calib.npz, eval.npz)."""
    out = tmp_path_factory.mktemp("digits")
    train_example(ROOT / "examples" / "digits" / "train.py", out, "--epochs", "15", "--seed", "0")
    return out


@pytest.fixture(scope="module")
def digits(digits_dir: Path) -> tuple:
    """(the trained digits model, its calib.npz path, labelled eval arrays), built once per test module."""
    import numpy as np

    from edgesdk.intake import build_model, load_weights

    model = build_model(f"{DIGITS_MODEL}:build")
    load_weights(model, digits_dir / "weights.safetensors")
    with np.load(digits_dir / "eval.npz") as z:
        return model, digits_dir / "calib.npz", {"x": z["x"], "labels": z["labels"]}


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
