"""Do backends' thread pools disturb each other's timing in one process (compress times every backend one
after the other)? Each backend's p50 on a small ResNet (112x112, batch 1, 2 threads) measured alone in a fresh
process, and after the other backend has loaded, run and closed the same model in that process; twice each,
all in one run (only ratios mean anything on shared machines).

    python benchmarks/backend_interference.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
import numpy as np
from edgesdk.runtimes import load, benchmark
path, first, timed = sys.argv[1], sys.argv[2], sys.argv[3]
if first != "none":
    with load(path, backend=first, threads=2) as s:
        benchmark(s, batch=1, warmup=5, iterations=50)
with load(path, backend=timed, threads=2) as s:
    r = benchmark(s, batch=1, warmup=10, iterations=200)
print(json.dumps(r["latency_ms"]["p50"]))
"""


def main() -> None:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return torch.relu(x + self.b(torch.relu(self.a(x))))

    net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), *[Block(32) for _ in range(4)], nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, 10)).eval()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        torch.onnx.export(net, (torch.rand(1, 3, 112, 112),), str(path), input_names=["x"], dynamo=False)
        for timed, other in (("onnxruntime", "openvino"), ("openvino", "onnxruntime")):
            got: dict[str, float] = {}
            for label, first in (("alone", "none"), (f"after {other}", other), ("alone again", "none"),
                                 (f"after {other} again", other)):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), first, timed], capture_output=True,
                                     text=True, check=True)
                got[label] = json.loads(out.stdout.strip().splitlines()[-1])
            base = (got["alone"] + got["alone again"]) / 2
            for k, v in got.items():
                print(f"{timed:12s} {k:24s} p50 {v:.3f} ms  ({v / base:.2f}x of alone)")

if __name__ == "__main__":
    main()
