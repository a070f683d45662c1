"""Hardening, measured: concurrency on every CPU backend, memory under open/close churn and a long soak,
kill -9 during compress, and disk-full / permission failures. Each test prints its counts (run with -s);
docs/reliability.md summarises them."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgesdk.atomic import sha256_file
from edgesdk.runtimes import load
from tests.conftest import DIGITS_MODEL, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifacts(digits_artifacts, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """backend -> (file, backend) for each CPU backend installed here; a TFLite export for LiteRT."""
    out = {"onnxruntime": (digits_artifacts / "model.onnx", "onnxruntime")}
    import importlib.util

    if importlib.util.find_spec("openvino"):
        out["openvino"] = (digits_artifacts / "model.onnx", "openvino")
    if importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_litert"):
        import torch

        from edgesdk.compress.export_tflite import export_tflite
        from edgesdk.intake import build_model

        path = tmp_path_factory.mktemp("tfl") / "digits.tflite"
        export_tflite(build_model(f"{DIGITS_MODEL}:build"), {"x": torch.rand(1, 1, 8, 8)}, path)
        out["litert"] = (path, "litert")
    return out


def _inputs(n: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.random((1 + i % 4, 1, 8, 8), dtype=np.float32)} for i in range(n)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "litert"])
def test_16_threads_x_500_requests_bitwise_equal(artifacts, backend):
    if backend not in artifacts:
        pytest.skip(f"{backend} is not installed")
    path, name = artifacts[backend]
    feeds = _inputs()
    with load(path, backend=name, threads=1) as sess:
        expected = [sess.run(f) for f in feeds]
        errors: list[str] = []
        mismatches = [0]
        done = [0]
        lock = threading.Lock()

        def worker(tid: int) -> None:
            for i in range(500):
                k = (tid * 7 + i) % len(feeds)
                try:
                    got = sess.run(feeds[k])
                except Exception as e:  # noqa: BLE001 - counted, then asserted to be zero
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                same = all(np.array_equal(got[o], expected[k][o]) for o in expected[k])
                with lock:
                    done[0] += 1
                    mismatches[0] += not same

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(f"\n{backend}: 16 threads x 500 requests: {done[0]} ok, {len(errors)} errors, {mismatches[0]} not bitwise "
          f"equal, {time.perf_counter() - t0:.1f} s")
    assert errors == [] and mismatches[0] == 0 and done[0] == 8000


# Memory is measured in a child process that imports only edgesdk.runtimes and the backend (no torch,
# no pytest), so the 10% / 5% bounds are tight relative to what the runtime itself holds.
_MEMORY_PROBE = r"""
import gc, json, sys, threading
import numpy as np
from edgesdk.runtimes import load

def rss_mb():
    import os
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

path, backend, mode = sys.argv[1:4]
out = {}
if mode == "churn":
    x = {"x": np.ones((2, 1, 8, 8), np.float32)}
    def cycle():
        with load(path, backend=backend, threads=1) as sess:
            sess.run(x)
    errors = []
    def worker(n):
        for _ in range(n):
            try:
                cycle()
            except Exception as e:
                errors.append(repr(e))
    def churn(n):
        ts = [threading.Thread(target=worker, args=(n,)) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
    churn(5)  # warm-up with the same 8 threads: each gets its malloc arena and thread-local pools once
    gc.collect(); base = rss_mb()
    churn(50)
    gc.collect()
    out = {"base": base, "after": rss_mb(), "errors": errors, "cycles": 400}
else:
    rng = np.random.default_rng(1)
    batches = [rng.random((b, 1, 8, 8), dtype=np.float32) for b in range(1, 17)]
    with load(path, backend=backend, threads=1) as sess:
        for i in range(2000):
            sess.run({"x": batches[i % 16]})
        gc.collect(); base = rss_mb()
        for i in range(20000):
            sess.run({"x": batches[(i * 7) % 16]})
        gc.collect()
        out = {"base": base, "after": rss_mb(), "errors": [], "runs": 20000}
print(json.dumps(out))
"""


def _memory_probe(path: Path, backend: str, mode: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), backend, mode], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "litert"])
def test_open_close_churn_returns_memory(artifacts, backend):
    """8 threads x 50 open/run/close cycles: no error, RSS back within 10% of the warmed-up baseline."""
    if backend not in artifacts:
        pytest.skip(f"{backend} is not installed")
    r = _memory_probe(*artifacts[backend], "churn")
    print(f"\n{backend}: 8 threads x 50 open/run/close cycles: {len(r['errors'])} errors; RSS {r['base']:.0f} MB "
          f"-> {r['after']:.0f} MB ({(r['after'] - r['base']) / r['base']:+.1%})")
    assert r["errors"] == []
    assert r["after"] <= r["base"] * 1.10


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "litert"])
def test_soak_20000_runs_varying_batch(artifacts, backend):
    """20,000 runs with batch 1..16 after a warm-up: RSS grows by at most 5%."""
    if backend not in artifacts:
        pytest.skip(f"{backend} is not installed")
    r = _memory_probe(*artifacts[backend], "soak")
    print(f"\n{backend}: 20,000 runs, batch 1..16: RSS {r['base']:.0f} MB after warm-up -> {r['after']:.0f} MB "
          f"({(r['after'] - r['base']) / r['base']:+.2%})")
    assert r["after"] <= r["base"] * 1.05


# -- crash safety ------------------------------------------------------------------------------

def _verify_set(out: Path) -> str:
    """'complete' when the manifest's sha256s all verify; raises otherwise."""
    manifest = json.loads((out / "manifest.json").read_text())
    files = [(a["path"], a["sha256"]) for a in manifest["artifacts"]]
    if manifest.get("reference"):
        files.append((manifest["reference"]["path"], manifest["reference"]["sha256"]))
    for rel, want in files:
        assert sha256_file(out / rel) == want, f"{rel} does not match the manifest"
    return manifest["created"]


def _compress_cmd(digits_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgesdk.cli", "compress", f"{DIGITS_MODEL}:build",
            "--weights", str(digits_dir / "weights.safetensors"), "--input", "x:1x1x8x8",
            "--calib", str(digits_dir / "calib.npz"), "--eval-data", str(digits_dir / "eval.npz"),
            "--quantize", "int8", "--iterations", "20", "--warmup", "2", "--threads", "1", "-o", str(out)]


def test_kill_9_at_random_points_leaves_the_previous_complete_set(digits_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run(_compress_cmd(digits_dir, out), check=True, capture_output=True, env=env, cwd=tmp_path)
    full = time.perf_counter() - t0
    first = _verify_set(out)
    rng = random.Random(0)
    outcomes = {"previous set": 0, "new complete set": 0}
    kills = 24
    for i in range(kills):
        # spread the kill points over the whole run: start-up, export, quantize, parity, benchmark, the swap
        delay = rng.uniform(0.05, 1.05) * full
        proc = subprocess.Popen(_compress_cmd(digits_dir, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert out.is_dir(), f"kill {i} at {delay:.2f}s left no output directory"
        created = _verify_set(out)
        outcomes["previous set" if created == first else "new complete set"] += 1
        first = created
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".edgesdk-"))
    subprocess.run(_compress_cmd(digits_dir, out), check=True, capture_output=True, env=env, cwd=tmp_path)
    _verify_set(out)
    after = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".edgesdk-"))
    print(f"\nkill -9 during compress (full run {full:.1f} s): {kills} kills -> {outcomes}; "
          f"{len(leftovers)} stale temp dirs before the next run, {len(after)} after it")
    assert sum(outcomes.values()) == kills and outcomes["previous set"] >= kills // 2
    assert after == []


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
@pytest.mark.parametrize("where", ["artifact", "manifest", "swap"])
def test_disk_full_or_permission_denied_is_clear_and_writes_nothing(digits_dir, tmp_path, monkeypatch, err, where):
    from click.testing import CliRunner

    import edgesdk.atomic as atomic
    from edgesdk.cli import main

    out = tmp_path / "out"
    assert CliRunner().invoke(main, _compress_cmd(digits_dir, out)[3:] + ["--no-benchmark"]).exit_code == 0
    before = {p.name: sha256_file(p) for p in out.iterdir()}

    real_replace, real_write = os.replace, atomic.write_bytes

    def failing_write(path, data):
        name = Path(path).name
        if (where == "artifact" and name.endswith(".npz")) or (where == "manifest" and name == "manifest.json"):
            raise OSError(err, os.strerror(err), str(path))
        return real_write(path, data)

    def failing_replace(src, dst):
        if where == "swap" and Path(dst) == out.absolute() and ".edgesdk-stage-" in str(src):
            raise OSError(err, os.strerror(err), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic, "write_bytes", failing_write)
    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    res = CliRunner().invoke(main, _compress_cmd(digits_dir, out)[3:] + ["--no-benchmark"])
    monkeypatch.undo()
    assert res.exit_code == 5, res.output
    assert "Traceback" not in res.output
    assert ("disk is full" if err == errno.ENOSPC else "permission denied") in res.output
    assert "nothing was written" in res.output
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before  # the previous set, untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".edgesdk-")]
