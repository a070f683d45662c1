"""The runtime-only install: a fresh venv with `edgesdk[onnx]` has no torch, and the device commands work."""
from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def site_packages_mb(env: Path) -> float:
    (site,) = env.glob("lib/python*/site-packages")
    return sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


@pytest.fixture(scope="module")
def lean_env(tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("lean") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          f"{ROOT}[onnx]"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return env


@pytest.mark.slow
def test_runtime_only_install_has_no_torch_and_runs(lean_env, digits_artifacts, tmp_path):
    py, cli = lean_env / "bin" / "python", lean_env / "bin" / "edgesdk"
    env = {**os.environ, "PYTHONPATH": ""}
    probe = subprocess.run([str(py), "-c", "import importlib.util as u, sys; "
                            "print(json.dumps({m: u.find_spec(m) is not None for m in sys.argv[1:]}))"
                            .replace("import importlib.util", "import json, importlib.util"),
                            "torch", "onnxruntime", "edgesdk", "litert_torch", "onnxscript"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    found = json.loads(probe.stdout)
    assert found == {"torch": False, "onnxruntime": True, "edgesdk": True, "litert_torch": False,
                     "onnxscript": False}, found

    bench = subprocess.run([str(cli), "benchmark", str(digits_artifacts), "--iterations", "5", "--warmup", "1",
                            "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert {r["artifact"] for r in report["results"]} == {"model.onnx", "model.int8.onnx"}
    assert all(r["device_check"]["parity"]["passed"] for r in report["results"])

    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    run = subprocess.run([str(cli), "run", str(digits_artifacts), "--inputs", str(tmp_path / "x.npz"), "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    (out,) = json.loads(run.stdout).values()
    assert out["shape"] == [3, 10] and len(out["argmax"]) == 3

    for args in (["doctor"], ["inspect", str(digits_artifacts / "model.onnx")],
                 ["report", str(digits_artifacts / "report.json")]):
        res = subprocess.run([str(cli), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert res.returncode == 0, (args, res.stderr)
    # the import guard holds in a process that has no torch at all
    guard = subprocess.run([str(py), "-c", "import edgesdk.runtimes, edgesdk.cli, sys; "
                            "assert 'torch' not in sys.modules"], capture_output=True, text=True, env=env)
    assert guard.returncode == 0, guard.stderr
    print(f"\nruntime-only install (edgesdk[onnx]): site-packages {site_packages_mb(lean_env):.0f} MB")
