"""Hardening, measured: concurrency on every CPU backend, memory under open/close churn and a long soak,
kill -9 during compress, and disk-full / permission failures. Each test prints its counts (run with -s);
docs/reliability.md summarises them."""
from __future__ import annotations

import errno
import json
import os
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


def _compress_cmd(digits_dir: Path, out: Path, *extra: str) -> list[str]:
    # the TorchScript exporter: these tests are about writes and kills, and a run with it takes 3 s less
    return [sys.executable, "-m", "edgesdk.cli", "compress", f"{DIGITS_MODEL}:build",
            "--weights", str(digits_dir / "weights.safetensors"), "--input", "x:1x1x8x8",
            "--calib", str(digits_dir / "calib.npz"), "--eval-data", str(digits_dir / "eval.npz"),
            "--quantize", "int8", "--iterations", "20", "--warmup", "2", "--threads", "1", "-o", str(out),
            "--exporter", "legacy", *extra]


# The child runs the real CLI with every filesystem step that places or removes files wrapped: it logs each
# step (counting run) or SIGKILLs itself at one chosen step, before or after it happens. Kill points are
# therefore chosen by what the run has reached, never by a clock.
_KILL_AT_STEP = r"""
import json, os, shutil, signal, sys
log_path, kill_at = os.environ["EDGESDK_TEST_STEPS"], os.environ.get("EDGESDK_TEST_KILL_AT")
steps = []
def wrap(name, fn):
    def step(*args, **kwargs):
        paths = [os.fspath(a) for a in args[:2] if isinstance(a, (str, os.PathLike))]
        steps.append([name, *paths])
        n = len(steps)
        if kill_at == f"before:{n}":
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            return fn(*args, **kwargs)
        finally:  # after the step, whether it succeeded or raised (mkdir(exist_ok=True) raises inside)
            if kill_at == f"after:{n}":
                os.kill(os.getpid(), signal.SIGKILL)
    return step
os.replace, os.rename, os.mkdir, os.unlink = (wrap(n, getattr(os, n)) for n in ("replace", "rename", "mkdir", "unlink"))
shutil.rmtree = wrap("rmtree", shutil.rmtree)
sys.argv = ["edgesdk", *sys.argv[1:]]
try:
    from edgesdk.cli import main
    main()
finally:
    with open(log_path, "w") as f:
        json.dump(steps, f)
"""


def _complete_set(out: Path) -> str:
    """The set's creation stamp when its manifest is present and every sha256 it lists verifies; raises
    otherwise (a partial or mixed set)."""
    assert (out / "manifest.json").is_file(), f"{out} has no manifest: {sorted(p.name for p in out.iterdir())}"
    return _verify_set(out)


def _state_after_kill(out: Path) -> str:
    """What must hold at every kill point: ``out`` is one complete set, or - killed between moving the previous
    set aside and moving the new one in - ``out`` is absent and exactly one complete previous set waits beside it
    (the next run puts it back). Returns the creation stamp of the set a user (or the next run) gets."""
    if out.is_dir():
        return _complete_set(out)
    olds = [p for p in out.parent.iterdir() if p.name.startswith(f".edgesdk-old-{out.name}-")]
    assert len(olds) == 1, f"no output set and {len(olds)} set-aside copies: {sorted(p.name for p in out.parent.iterdir())}"
    return _complete_set(olds[0])


def _run_until(cmd: list[str], env: dict[str, str], cwd: Path, kill_at: str | None, log: Path) -> tuple[int, list]:
    res = subprocess.run([sys.executable, "-c", _KILL_AT_STEP, *cmd[3:]], capture_output=True, text=True,
                         env={**env, "EDGESDK_TEST_STEPS": str(log), **({"EDGESDK_TEST_KILL_AT": kill_at} if kill_at else {})},
                         cwd=cwd, timeout=600)
    steps = json.loads(log.read_text()) if log.is_file() else []
    log.unlink(missing_ok=True)
    assert res.returncode in (0, -signal.SIGKILL), res.stderr[-3000:]
    return res.returncode, steps


def _touches(step: list, parent: Path) -> bool:
    return any(Path(p).absolute().is_relative_to(parent) for p in step[1:])


def test_kill_9_at_every_write_step_leaves_one_complete_set(digits_dir, tmp_path):
    """SIGKILL at each filesystem step that touches the output's folder (staging dir creation, each artifact,
    reference set, report views and manifest, the swap, the clean-up), before and after the step. After every
    kill the output is one complete verified set; the clean-up the next run starts with leaves exactly that set
    and no temporary directory; a last full run succeeds."""
    from edgesdk.atomic import clean_stale

    out, log = tmp_path / "work" / "out", tmp_path / "steps.json"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _compress_cmd(digits_dir, out, "--no-benchmark")
    assert _run_until(cmd, env, tmp_path, None, log)[0] == 0
    first = _complete_set(out)
    code, steps = _run_until(cmd, env, tmp_path, None, log)  # over an existing set, as every later run is
    assert code == 0
    first = _complete_set(out)
    ours = [i + 1 for i, s in enumerate(steps) if _touches(s, out.parent)]
    assert len(ours) >= 8, steps  # staging dir, artifacts, reference, report views, manifest, swap
    # every step of the swap (moving the previous set aside, moving the new one in, removing the old one) and
    # a spread of the writes before it, each before and after it happens
    swap = [i for i in ours if any(Path(p).name.startswith(".edgesdk-old-") or Path(p) == out for p in steps[i - 1][1:])]
    assert swap, "the run never swapped its set in"
    spread = ours[:: max(1, len(ours) // 4)]
    points = [f"{w}:{i}" for i in sorted(set(swap) | set(spread)) for w in ("before", "after")]
    seen: dict[str, str] = {}
    for point in points:
        code, _ = _run_until(cmd, env, tmp_path, point, log)
        assert code == -signal.SIGKILL, f"the run did not reach step {point}"  # same start state, same steps
        stamp = _state_after_kill(out)
        seen[point] = "previous set" if stamp == first else "new complete set"
        clean_stale(out.parent, out.name)  # what the next run does first
        assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
        assert _complete_set(out) == stamp
        first = stamp
    assert _run_until(cmd, env, tmp_path, None, log)[0] == 0
    _complete_set(out)
    print(f"\nkill -9 at {len(points)} points over {len(ours)} write steps ({len(swap)} in the swap): {seen}")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_kill_9_from_outside_at_each_stage(digits_dir, tmp_path):
    """A real kill -9 from another process as the run announces each stage (its progress lines): the output
    holds one complete set afterwards, whatever the stage."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_compress_cmd(digits_dir, out), check=True, capture_output=True, env=env, cwd=tmp_path)
    _complete_set(out)
    stages = ("exporting to ONNX", "quantizing", "checking model.int8", "benchmarking")
    killed = []
    for marker in stages:
        proc = subprocess.Popen(_compress_cmd(digits_dir, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env, cwd=tmp_path, text=True)
        reached = False
        for line in proc.stderr:  # wait on the run itself: its own announcement of the stage
            if marker in line:
                reached = True
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=600)
        proc.stderr.close()
        assert reached, f"the run never announced {marker!r}"
        killed.append(marker)
        _state_after_kill(out)
    subprocess.run(_compress_cmd(digits_dir, out), check=True, capture_output=True, env=env, cwd=tmp_path)
    _complete_set(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".edgesdk-")) == []
    print(f"\nkill -9 from outside at: {', '.join(killed)}")


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
