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
    sessions = {"pytorch eager": ts, "edgesdk ORT FP32": ort}
    if importlib.util.find_spec("openvino"):  # a second optimised runtime on the same graph, for context
        sessions["edgesdk OpenVINO FP32"] = load(path, backend="openvino", threads=threads, device="cpu")
    feeds = {"x": example.numpy()}
    res = _alternate(sessions, feeds, rounds, iterations, warmup=5)
    for label, sess in sessions.items():
        if label != "pytorch eager":
            sess.close()
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


def _time_onnx(paths: dict[str, Path], feeds: dict[str, np.ndarray], threads: int, rounds: int,
               iterations: int) -> dict[str, dict[str, float]]:
    from edgesdk.runtimes import load

    sessions = {k: load(p, backend="onnxruntime", threads=threads, device="cpu") for k, p in paths.items()}
    try:
        return _alternate(sessions, feeds, rounds, iterations, warmup=5)
    finally:
        for s in sessions.values():
            s.close()


def resnet_compression(threads: int, rounds: int, workdir: Path) -> dict[str, object]:
    """ResNet-18-shaped: ORT FP32 vs static INT8 vs 50% channel-pruned FP32 vs pruned + INT8."""
    import copy

    from edgesdk.compress.export_onnx import export_onnx
    from edgesdk.compress.prune import prune_model
    from edgesdk.compress.quantize import quantize_onnx

    model = _factory("examples/resnet/model.py")()
    x = torch.rand(1, 3, 224, 224)
    calib = {"x": np.random.default_rng(0).random((32, 3, 224, 224), dtype=np.float32)}
    paths = {"fp32": workdir / "r.onnx", "int8": workdir / "r.int8.onnx", "pruned50 fp32": workdir / "rp.onnx",
             "pruned50 int8": workdir / "rp.int8.onnx"}
    export_onnx(model, {"x": x}, paths["fp32"])
    quantize_onnx(paths["fp32"], paths["int8"], mode="int8", calib=calib)
    pruned = copy.deepcopy(model)
    info = prune_model(pruned, {"x": x}, ratio=0.5)
    export_onnx(pruned, {"x": x}, paths["pruned50 fp32"])
    quantize_onnx(paths["pruned50 fp32"], paths["pruned50 int8"], mode="int8", calib=calib)
    res = _time_onnx(paths, {"x": x.numpy()}, threads, rounds, 20)
    return {"res": res, "sizes": {k: p.stat().st_size for k, p in paths.items()},
            "macs": (info.macs_before, info.macs_after)}


def bert_dynamic(threads: int, rounds: int, workdir: Path) -> dict[str, object]:
    """A small BERT encoder from a transformers config (random weights): ORT FP32 vs dynamic INT8."""
    from transformers import BertConfig, BertModel

    from edgesdk.compress.export_onnx import export_onnx
    from edgesdk.compress.quantize import quantize_onnx
    from edgesdk.parity import compare
    from edgesdk.runtimes import load

    cfg = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=128)
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(cfg, add_pooling_layer=False)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    enc = Encoder().eval()
    ids = torch.randint(0, 8000, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.int64)
    paths = {"fp32": workdir / "b.onnx", "int8-dynamic": workdir / "b.int8dyn.onnx"}
    export_onnx(enc, {"input_ids": ids, "attention_mask": mask}, paths["fp32"])
    quantize_onnx(paths["fp32"], paths["int8-dynamic"], mode="int8-dynamic")
    rng = np.random.default_rng(1)
    batches = [{"input_ids": rng.integers(0, 8000, (1, 128)), "attention_mask": np.ones((1, 128), np.int64)}
               for _ in range(8)]
    outs = {}
    for k, p in paths.items():
        with load(p) as s:
            outs[k] = [s.run(b) for b in batches]
    cos = compare(outs["fp32"], outs["int8-dynamic"], atol=None, rtol=None).to_dict()["cosine"]
    res = _time_onnx(paths, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, threads, rounds, 30)
    return {"res": res, "cosine": cos, "sizes": {k: p.stat().st_size for k, p in paths.items()}}


def litert_resnet(threads: int, rounds: int, workdir: Path) -> dict[str, object]:
    """ResNet-18-shaped on LiteRT with XNNPACK: FP32 vs full-integer INT8 (edgesdk's default route), plus FP32 error vs PyTorch."""
    from edgesdk.compress.export_tflite import export_tflite
    from edgesdk.runtimes import load

    model = _factory("examples/resnet/model.py")()
    x = torch.rand(1, 3, 224, 224)
    calib = {"x": np.random.default_rng(0).random((16, 3, 224, 224), dtype=np.float32)}
    paths = {"fp32": workdir / "r.tflite", "int8": workdir / "r.int8.tflite"}
    export_tflite(model, {"x": x}, paths["fp32"])
    export_tflite(model, {"x": x}, paths["int8"], precision="int8", calib=calib)
    with torch.no_grad():
        ref = model(x).numpy()
    sessions = {k: load(p, threads=threads) for k, p in paths.items()}
    err = float(np.abs(sessions["fp32"].run({"x": x.numpy()})["output"] - ref).max())
    res = _alternate(sessions, {"x": x.numpy()}, rounds, 20, warmup=3)
    for s in sessions.values():
        s.close()
    return {"res": res, "fp32_max_abs_err": err, "sizes": {k: p.stat().st_size for k, p in paths.items()}}


def digits_accuracy(workdir: Path) -> dict[str, float]:
    """Held-out accuracy on real digits: FP32, INT8, 50% pruned + recovery, pruned + INT8 (one compress run)."""
    import edgesdk

    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    import train  # examples/digits/train.py

    train.train(workdir / "digits", epochs=30, seed=0)
    from edgesdk.intake import build_model, load_weights

    model = build_model(f"{ROOT / 'examples/digits/model.py'}:build")
    load_weights(model, workdir / "digits" / "weights.safetensors")
    with np.load(workdir / "digits" / "eval.npz") as z:
        eval_data = {"x": z["x"], "labels": z["labels"]}
    out = {}
    for name, opts in (("int8", {"quantize": "int8", "targets": ["onnx", "tflite"]}),
                       ("pruned", {"prune": 0.5, "quantize": "int8"})):
        res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=workdir / f"d-{name}",
                               calib_data=workdir / "digits" / "calib.npz", eval_data=eval_data, benchmark=False,
                               **opts)
        out.update({a["name"]: a["accuracy"] for a in res.manifest["artifacts"] if a["format"] in ("onnx", "tflite")})
    return out


def lean_runtime(artifact_dir: Path, workdir: Path) -> dict[str, float]:
    """A fresh venv with only `edgesdk[onnx]`: its site-packages size, and cold start to first inference there."""
    import venv

    env = workdir / "lean-venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[onnx]"],
                   check=True, capture_output=True)
    (site,) = env.glob("lib/python*/site-packages")
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    code = ("import time; t=time.perf_counter(); import numpy as np; from edgesdk.runtimes import load; "
            f"s=load({str(artifact_dir)!r}); s.run({{'x': np.zeros((1,1,8,8), np.float32)}}); "
            "print(time.perf_counter()-t)")
    starts = [float(subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout)
              for _ in range(5)]
    has_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode == 0
    return {"site_packages_mb": size, "cold_start_s": statistics.median(starts), "torch": has_torch}


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
        rc = resnet_compression(args.threads, args.rounds, work)
        bert = bert_dynamic(args.threads, args.rounds, work)
        lite = litert_resnet(args.threads, args.rounds, work)
        acc = digits_accuracy(work)
        lean = lean_runtime(work / "d-int8", work)
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
        "| model | ONNX size | PyTorch eager p50 ms | ORT FP32 p50 ms | ORT p99 ms | speed-up | "
        "OpenVINO FP32 p50 ms (same graph) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ov = r.get("edgesdk OpenVINO FP32")
        ov_cell = f"{ov['p50']:.3f}" if ov else "not installed"
        lines.append(f"| {r['model']} | {r['size'] / 1e6:.2f} MB | {r['pytorch eager']['p50']:.3f} | "
                     f"{r['edgesdk ORT FP32']['p50']:.3f} | {r['edgesdk ORT FP32']['p99']:.3f} | "
                     f"**{r['speedup']:.2f}x** | {ov_cell} |")
    flops = 2 * rc["macs"][0]  # the ResNet-18-shaped model's MACs, counted in resnet_compression
    res18 = rows[1]
    lines += [
        "",
        "Target (foundation issue): ORT FP32 on the ResNet-18-shaped model at least 1.8x faster than PyTorch eager.",
        "",
        f"Achieved FP32 throughput on the ResNet-18-shaped model ({flops / 1e9:.2f} GFLOP per image): PyTorch eager "
        f"{flops / res18['pytorch eager']['p50'] / 1e6:.0f} GFLOP/s, ORT "
        f"{flops / res18['edgesdk ORT FP32']['p50'] / 1e6:.0f} GFLOP/s"
        + (f", OpenVINO {flops / res18['edgesdk OpenVINO FP32']['p50'] / 1e6:.0f} GFLOP/s"
           if "edgesdk OpenVINO FP32" in res18 else "") + f" on {args.threads} threads.",
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
        "## Compression on the ResNet-18-shaped model (ORT, batch 1)",
        "",
        "Static INT8 is QDQ with uint8 activations and per-channel int8 weights (calibrated on 32 random images: "
        "speed and size only, the weights are random); pruning removes 50% of channels with Torch-Pruning "
        f"(MACs {rc['macs'][0] / 1e9:.2f} G -> {rc['macs'][1] / 1e9:.2f} G).",
        "",
        "| artifact | size | size vs FP32 | p50 ms | p99 ms | speed-up vs ORT FP32 | target |",
        "|---|---|---|---|---|---|---|",
    ]
    targets = {"int8": ">= 3.0x, size <= 26%", "pruned50 fp32": ">= 2.5x", "pruned50 int8": ">= 7x"}
    base = rc["res"]["fp32"]["p50"]
    for k, v in rc["res"].items():
        lines.append(f"| {k} | {rc['sizes'][k] / 1e6:.1f} MB | {100 * rc['sizes'][k] / rc['sizes']['fp32']:.1f}% | "
                     f"{v['p50']:.2f} | {v['p99']:.2f} | **{base / v['p50']:.2f}x** | {targets.get(k, '')} |")
    lr = lite["res"]
    lines += [
        "",
        "## LiteRT (XNNPACK) on the ResNet-18-shaped model (batch 1)",
        "",
        "Full-integer INT8 is ai-edge-quantizer's static INT8 with per-channel weights, float I/O quantized in the "
        "graph (16 random calibration images: speed "
        "only). litert-torch cannot keep this graph's batch symbolic (flatten), so it is exported with batch 1.",
        "",
        "| artifact | size | p50 ms | p99 ms | speed-up vs LiteRT FP32 | target |",
        "|---|---|---|---|---|---|",
        f"| fp32 | {lite['sizes']['fp32'] / 1e6:.1f} MB | {lr['fp32']['p50']:.2f} | {lr['fp32']['p99']:.2f} | 1.00x | |",
        f"| int8 | {lite['sizes']['int8'] / 1e6:.1f} MB | {lr['int8']['p50']:.2f} | {lr['int8']['p99']:.2f} | "
        f"**{lr['fp32']['p50'] / lr['int8']['p50']:.2f}x** | >= 2.5x |",
        "",
        f"LiteRT FP32 max abs error vs PyTorch: **{lite['fp32_max_abs_err']:.1e}** (target <= 1e-4).",
    ]
    bb = bert["res"]
    lines += [
        "",
        "## Dynamic INT8 on a small BERT encoder (transformers config, random weights, seq 128)",
        "",
        "| artifact | size | p50 ms | speed-up vs FP32 | cosine vs FP32 |",
        "|---|---|---|---|---|",
        f"| fp32 | {bert['sizes']['fp32'] / 1e6:.1f} MB | {bb['fp32']['p50']:.2f} | 1.00x | 1 |",
        f"| int8-dynamic (per-channel) | {bert['sizes']['int8-dynamic'] / 1e6:.1f} MB | {bb['int8-dynamic']['p50']:.2f} | "
        f"**{bb['fp32']['p50'] / bb['int8-dynamic']['p50']:.2f}x** | **{bert['cosine']:.5f}** |",
        "",
        "Targets: cosine >= 0.99 and faster than FP32.",
        "",
        "## Digits: held-out accuracy (real data, 360 images)",
        "",
        "| artifact | accuracy | vs FP32 |",
        "|---|---|---|",
    ]
    for k, v in acc.items():
        lines.append(f"| {k} | {v:.2f}% | {v - acc['model.onnx']:+.2f} points |")
    lines += [
        "",
        "Targets: INT8 within 0.5 points of FP32 on every target (ONNX Runtime and LiteRT); 50% pruned + recovery "
        "within 1 point.",
        "",
        "## Import time",
        "",
        f"`import edgesdk.runtimes` in a fresh interpreter: **{imp * 1000:.0f} ms** (median of 5; target ≤ 300 ms).",
        "",
        "## Runtime-only install (`pip install 'edgesdk[onnx]'`, a fresh venv)",
        "",
        "| site-packages | torch installed | cold start to first inference (digits artifact dir) |",
        "|---|---|---|",
        f"| {lean['site_packages_mb']:.0f} MB (target ≤ 250 MB) | {'yes' if lean['torch'] else 'no'} | "
        f"{lean['cold_start_s'] * 1000:.0f} ms (median of 5, new process: import, load with sha256 check, run; "
        "target ≤ 500 ms) |",
        "",
        "## Reading these numbers",
        "",
        "The machine is a shared 2-core VM; each ratio comes from alternating rounds in one process, but whole runs "
        "still vary by about 10%. Across the runs made while building this (see the issue notes): ORT FP32 vs eager "
        "on ResNet-18 1.4-1.8x, ORT INT8 2.8-3.2x, pruned+INT8 6.5-9.4x, BERT dynamic INT8 1.3-2.5x.",
        "",
        "**The 1.8x ORT-vs-eager target on ResNet-18 is not met on these CPUs.** onnxruntime already applies its "
        "fastest CPU path to this graph (all 20 convolutions become NCHWc direct-convolution kernels with fused "
        "ReLU/Add; checked in the optimized graph), and session knobs (dynamic block base, denormals as zero, "
        "spinning) change p50 by under 1%. OpenVINO, run on the same graph in the same rounds, lands within a few "
        "percent of ORT, so FP32 convolution here is near what these two cores deliver; PyTorch 2.13 eager "
        "(oneDNN) is already within 1.5x of that. The 5-7x on the digits CNN is eager's per-op overhead, which "
        "dominates tiny models. For FP32 speed on x86, the INT8 and pruned artifacts above are where it is.",
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
