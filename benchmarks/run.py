"""Side-by-side benchmarks, measured in one run, written to docs/benchmarks.md.

    python benchmarks/run.py --out docs/benchmarks.md [--threads 2] [--rounds 5]

Every latency comes from edgesdk.runtimes.benchmark (the one timing loop). Pairs that are
compared are measured in alternating rounds in the same process, and the ratio is taken
from the medians of the per-round p50s, so machine noise hits both sides alike.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _factory(rel: str):
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build


def _alternate(sessions: dict[str, object], feeds: dict[str, np.ndarray], rounds: int, iterations: int,
               warmup: int) -> dict[str, dict[str, float]]:
    from edgesdk.runtimes import benchmark

    p50s: dict[str, list[float]] = {k: [] for k in sessions}
    p99s: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            r = benchmark(sess, batch=len(next(iter(feeds.values()))), warmup=warmup, iterations=iterations,
                          feeds=feeds)
            p50s[name].append(r["latency_ms"]["p50"])
            p99s[name].append(r["latency_ms"]["p99"])
    return {k: {"p50": statistics.median(p50s[k]), "p99": statistics.median(p99s[k])} for k in sessions}


def torch_vs_ort(name: str, model: torch.nn.Module, example: torch.Tensor, threads: int, rounds: int,
                 iterations: int, workdir: Path) -> dict[str, object]:
    from edgesdk.compress.export_onnx import export_onnx
    from edgesdk.runtimes import load
    from edgesdk.runtimes.torch import TorchSession

    path = workdir / f"{name}.onnx"
    export_onnx(model, {"x": example}, path)
    torch.set_num_threads(threads)
    ts = TorchSession.from_module(model, ["x"], example_inputs={"x": example.numpy()})
    ts.load()
    ort = load(path, backend="onnxruntime", threads=threads, device="cpu")
    feeds = {"x": example.numpy()}
    res = _alternate({"pytorch eager": ts, "edgesdk ORT FP32": ort}, feeds, rounds, iterations, warmup=5)
    ort.close()
    return {"model": name, "size": path.stat().st_size, **{k: v for k, v in res.items()},
            "speedup": res["pytorch eager"]["p50"] / res["edgesdk ORT FP32"]["p50"]}


class _RawOrt:
    """A bare onnxruntime.InferenceSession behind the same run(feeds) call, for the overhead number."""

    backend = "raw onnxruntime"
    load_time_s = 0.0

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.threads = threads

    def run(self, feeds):
        return self.sess.run(None, feeds)

    def synchronize(self) -> None:
        pass


def session_overhead(threads: int, rounds: int, workdir: Path) -> dict[str, float]:
    """Per-call overhead of Session.run over InferenceSession.run on a tiny model, in microseconds."""
    import onnx
    from onnx import TensorProto, helper

    from edgesdk.runtimes import load

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = workdir / "tiny.onnx"
    onnx.save(model, str(path))
    feeds = {"x": np.ones((1, 4), np.float32)}
    ours = load(path, backend="onnxruntime", threads=threads, device="cpu")
    raw = _RawOrt(path, threads)
    res = _alternate({"raw": raw, "edgesdk": ours}, feeds, rounds * 2, iterations=20000, warmup=2000)
    return {"raw_us": res["raw"]["p50"] * 1000, "edgesdk_us": res["edgesdk"]["p50"] * 1000,
            "overhead_us": (res["edgesdk"]["p50"] - res["raw"]["p50"]) * 1000}


def import_time() -> float:
    """Seconds to import edgesdk.runtimes in a fresh interpreter (median of 5)."""
    code = "import time; t=time.perf_counter(); import edgesdk.runtimes; print(time.perf_counter()-t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(5)]
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    from edgesdk.runtimes.fingerprint import device_fingerprint

    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows.append(torch_vs_ort("digits CNN (1x1x8x8)", _factory("examples/digits/model.py")().eval(),
                                 torch.rand(1, 1, 8, 8), args.threads, args.rounds, 300, work))
        rows.append(torch_vs_ort("ResNet-18-shaped (1x3x224x224)", _factory("examples/resnet/model.py")(),
                                 torch.rand(1, 3, 224, 224), args.threads, args.rounds, 20, work))
        overhead = session_overhead(args.threads, args.rounds, work)
    imp = import_time()
    fp = device_fingerprint()
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `python benchmarks/run.py` (`make bench`) in one run, batch 1, {args.threads} threads, "
        f"{args.rounds} alternating rounds per pair (ratios from the medians of per-round p50s).",
        "",
        f"Device: {fp.get('cpu_model')}, {fp.get('cores')} cores, ISA {', '.join(fp.get('isa') or [])}; "
        f"{fp.get('os')}; versions {fp.get('versions')}.",
        "",
        "## PyTorch eager vs edgesdk ONNX Runtime FP32",
        "",
        "| model | ONNX size | PyTorch eager p50 ms | ORT FP32 p50 ms | ORT p99 ms | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size'] / 1e6:.2f} MB | {r['pytorch eager']['p50']:.3f} | "
                     f"{r['edgesdk ORT FP32']['p50']:.3f} | {r['edgesdk ORT FP32']['p99']:.3f} | "
                     f"**{r['speedup']:.2f}x** |")
    lines += [
        "",
        "Target (foundation issue): ORT FP32 on the ResNet-18-shaped model at least 1.8x faster than PyTorch eager.",
        "",
        "## Session.run overhead over raw onnxruntime",
        "",
        "Tiny model (one Relu on 1x4), p50 per call, alternating blocks of 20,000 calls.",
        "",
        "| raw InferenceSession.run | edgesdk Session.run | overhead |",
        "|---|---|---|",
        f"| {overhead['raw_us']:.2f} µs | {overhead['edgesdk_us']:.2f} µs | **{overhead['overhead_us']:.2f} µs** |",
        "",
        "Target: at most 2 µs per call.",
        "",
        "## Import time",
        "",
        f"`import edgesdk.runtimes` in a fresh interpreter: **{imp * 1000:.0f} ms** (median of 5; target ≤ 300 ms).",
        "",
        f"_Total benchmark time: {time.time() - t0:.0f} s._",
        "",
    ]
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
