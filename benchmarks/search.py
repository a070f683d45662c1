"""The search of issue 14's done-when, one run, written to docs/benchmarks-search.md: the digits model
(trained here on scikit-learn's digits), prune 0-0.7 x {fp32, int8} x {onnxruntime, openvino, litert}
with --max-accuracy-drop 1, in this process and then on a two-node Ray cluster on 127.0.0.1 (a head and
a ``device:`` node started with ``ray start``); the wall time of each, the stage computations the cache
saved, the fronts side by side, and whether the knee re-makes its artifact from best.yaml.

    python benchmarks/search.py --out docs/benchmarks-search.md [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = f"{ROOT / 'examples' / 'digits' / 'model.py'}:build"


def _run(cmd: list[str]) -> None:
    """Run an edgesdk command; on failure, stop with its own error output (not just the exit status)."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[2:6])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def _search(data: Path, out: Path, steps: int, extra: list[str]) -> tuple[float, dict]:
    t0 = time.time()
    cmd = [sys.executable, "-m", "edgesdk.cli", "-q", "search", MODEL, "--weights", str(data / "weights.safetensors"),
           "--input", "x:1x1x8x8", "--calib", str(data / "calib.npz"), "--eval-data", str(data / "eval.npz"),
           "--prune", "0:0.7", "--prune-steps", str(steps), "--quantize", "fp32,int8",
           "--backends", "onnxruntime,openvino,litert", "--max-accuracy-drop", "1", "-o", str(out), *extra]
    _run(cmd)
    return time.time() - t0, json.loads((out / "search.json").read_text())


def _reproduces(data: Path, st: dict, root: Path, work: Path) -> str:
    knee = next(c for c in st["candidates"] if c["knee"])
    out = work / "again"
    _run([sys.executable, "-m", "edgesdk.cli", "-q", "compress", MODEL, "--weights",
                    str(data / "weights.safetensors"), "--input", "x:1x1x8x8", "--calib", str(data / "calib.npz"),
                    "--eval-data", str(data / "eval.npz"), "--recipe", str(root / knee["best_yaml"]), "-o", str(out)])
    made = {a["name"]: a["sha256"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    return "same sha256" if made.get(knee["artifact"]) == knee["sha256"] else "different sha256"


def _front(st: dict) -> list[str]:
    return [f"{c['label']} on {c['backend']}" + (" (knee)" if c["knee"] else "")
            for c in st["candidates"] if c["on_front"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/benchmarks-search.md")
    ap.add_argument("--steps", type=int, default=4, help="points of the prune range 0:0.7")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgesdk-bench-search-") as tmp:
        work = Path(tmp)
        data = work / "digits"
        subprocess.run([sys.executable, str(ROOT / "examples" / "digits" / "train.py"), "--out", str(data),
                        "--epochs", "15"], check=True, capture_output=True)
        local_s, local = _search(data, work / "local", args.steps, ["--engine", "local"])
        repro = _reproduces(data, local, work / "local", work)
        sys.path.insert(0, str(ROOT))
        from tests.ray_cluster import local_cluster  # the same two-node cluster the tests start

        with local_cluster() as cluster:
            ray_s, ray_st = _search(data, work / "ray-search", args.steps,
                                    ["--engine", "ray", "--ray-address", cluster.address])
    rows = []
    for name, wall, st in (("in-process", local_s, local), (f"Ray, {ray_st['engine'].get('nodes')} nodes", ray_s,
                                                             ray_st)):
        c = st["cache"]
        rows.append(f"| {name} | {len(st['plan'])} | {len(st['candidates'])} | {wall:.0f} s | {c['hits']} "
                    f"({c['saved_s']:.0f} s) | {c['computed']} | {', '.join(_front(st))} |")
    same = sorted(_front(local)) == sorted(_front(ray_st))
    text = "\n".join([
        "# Search benchmark (issue 14)", "",
        "One run of `python benchmarks/search.py`: the digits model trained here, `edgesdk search --prune 0:0.7 "
        f"--prune-steps {args.steps} --quantize fp32,int8 --backends onnxruntime,openvino,litert "
        "--max-accuracy-drop 1`, in this process and then on a two-node Ray cluster on 127.0.0.1 (both nodes "
        "share this machine's cores, so the Ray run shows the engine, not a speed-up).", "",
        "| engine | trials | candidates | wall time | stage computations reused (their time) | computed | "
        "front |", "|---|---|---|---|---|---|---|", *rows, "",
        f"- The two fronts {'are the same' if same else 'differ'} "
        "(latencies are distributions: a candidate within noise of another can change places between runs).",
        f"- The in-process knee re-made from its best.yaml with `edgesdk compress --recipe`: {repro}.", ""])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
