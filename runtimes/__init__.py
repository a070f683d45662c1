"""edgesdk.runtimes: load, run and benchmark artifacts with one API. Never imports torch at import time.

Example::

    from edgesdk.runtimes import load, benchmark
    with load("out/model.onnx", threads=2) as sess:
        y = sess.run({"x": x})
        print(benchmark(sess, batch=1)["latency_ms"]["p50"])
"""
from __future__ import annotations

from .base import Session, TensorSpec
from .bench import benchmark, make_feeds
from .fingerprint import device_fingerprint
from .formats import detect_format
from .inspect import inspect_artifact
from .registry import backend_status, load

__all__ = ["Session", "TensorSpec", "load", "benchmark", "make_feeds", "device_fingerprint", "detect_format",
           "inspect_artifact", "backend_status"]
