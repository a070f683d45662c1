"""Format sniffing, clear errors for wrong files, the benchmark loop, fingerprint, inspect, import hygiene."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edgesdk.errors import ArtifactError
from edgesdk.runtimes import benchmark, detect_format, device_fingerprint, inspect_artifact, load


@pytest.mark.parametrize("content, needle", [
    (b"", "empty file"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:1234\nsize 99\n", "Git LFS pointer"),
    (b"\n  <!DOCTYPE html><html><head><title>Login</title>", "HTML page"),
    (b'{"error": "not found"}', "JSON"),
    (bytes(range(256)) * 4, "unknown format"),
])
def test_wrong_files_are_described(tmp_path, content, needle):
    f = tmp_path / "model.onnx"
    f.write_bytes(content)
    for fn in (detect_format, load, inspect_artifact):
        with pytest.raises(ArtifactError) as err:
            fn(f)
        assert needle in str(err.value) and "model.onnx" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load(tmp_path / "nope.onnx")


def test_truncated_onnx(tmp_path, mlp):
    data = mlp.read_bytes()
    for cut in (len(data) // 2, len(data) - 7):
        f = tmp_path / f"cut{cut}.onnx"
        f.write_bytes(data[:cut])
        with pytest.raises(ArtifactError) as err:
            load(f)
        assert f.name in str(err.value)


def test_benchmark_numbers(mlp):
    with load(mlp, threads=1) as sess:
        r = benchmark(sess, batch=4, warmup=3, iterations=50)
        assert r["iterations"] == 50 and r["batch"] == 4 and r["backend"] == "onnxruntime"
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["throughput"] == pytest.approx(4000 / lat["mean"])
        assert r["peak_rss_mb"] > 10
        timed = benchmark(sess, batch=1, warmup=0, duration_s=0.2)
        assert timed["iterations"] > 10


def test_fingerprint():
    fp = device_fingerprint()
    assert fp["cores"] >= 1 and fp["python"] and fp["os"]
    assert "numpy" in fp["versions"]
    assert isinstance(fp["isa"], list)


def test_inspect_histogram(mlp):
    info = inspect_artifact(mlp)
    assert info["format"] == "onnx" and info["opset"] == 18
    assert info["ops"] == {"MatMul": 2, "Add": 1, "Relu": 1}
    assert info["parameters"] == 4 * 8 + 8 + 8 * 3
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert len(info["sha256"]) == 64


def test_runtimes_import_without_torch(mlp):
    """Devices run the runtime without torch: block it and import + run an artifact."""
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np
        import edgesdk, edgesdk.runtimes
        from edgesdk.runtimes import load, benchmark
        with load({str(mlp)!r}) as s:
            y = s.run({{"x": np.ones((2, 4), np.float32)}})["y"]
            benchmark(s, iterations=3, warmup=1)
        assert y.shape == (2, 3)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_pool_gives_each_caller_its_own_item_and_caps():
    import threading
    import time

    from edgesdk.runtimes.pool import Pool

    made = []
    pool = Pool(lambda: made.append(object()) or made[-1], max_size=3)
    inside, peak, lock = [0], [0], threading.Lock()

    def worker() -> None:
        for _ in range(20):
            with pool.take() as item:
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                assert item in made
                time.sleep(0.001)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(made) <= 3 and peak[0] <= 3 and pool.created == len(made)

    def boom():
        raise RuntimeError("no more")

    failing = Pool(boom)
    with pytest.raises(RuntimeError):
        with failing.take():
            pass
    assert failing.created == 0


@pytest.mark.parametrize("model, release, want", [
    ("NVIDIA Jetson Orin Nano Developer Kit\x00", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic",
     {"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.4.3", "jetpack": "6.2"}),
    ("NVIDIA Jetson Xavier NX Developer Kit", "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref",
     {"model": "NVIDIA Jetson Xavier NX Developer Kit", "l4t": "35.4.1", "jetpack": "5.1.2"}),
    ("NVIDIA Jetson AGX Thor", None, {"model": "NVIDIA Jetson AGX Thor", "l4t": None, "jetpack": None}),
    ("NVIDIA Jetson Orin NX", "garbage\n", {"model": "NVIDIA Jetson Orin NX", "l4t": None, "jetpack": None}),
    ("Raspberry Pi 5 Model B Rev 1.0", "", None),
    (None, None, None),
])
def test_jetson_fingerprint_reads_board_l4t_and_jetpack(model, release, want):
    from edgesdk.runtimes.fingerprint import parse_jetson

    assert parse_jetson(model, release) == want
