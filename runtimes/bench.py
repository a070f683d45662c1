"""The one timing loop for every backend: warm-up, timed runs, percentiles, synchronize() before each stop.

Example::

    with load("model.onnx", threads=2) as sess:
        r = benchmark(sess, batch=8, iterations=200)
        print(r["latency_ms"]["p50"], r["throughput"])
"""
from __future__ import annotations

import resource
import sys
import time
from typing import Any, Callable

import numpy as np

from edgesdk.errors import InputError

from .base import TensorSpec


def make_feeds(inputs: list[TensorSpec], batch: int, seed: int = 0,
               shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Random feeds for ``inputs`` at ``batch``: floats in [0, 1), integers 0, booleans False."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in inputs:
        if shapes and s.name in shapes:
            shape = tuple(shapes[s.name])
        else:
            dims = list(s.shape)
            if dims and not isinstance(dims[0], int):
                dims[0] = batch
            elif dims and isinstance(dims[0], int) and dims[0] != batch and dims[0] > 0:
                raise InputError(f"input {s.name!r} has a fixed batch of {dims[0]}; cannot benchmark batch {batch}",
                                 hint="re-export with a dynamic batch or benchmark this batch size only")
            free = [d for d in dims[1:] if not isinstance(d, int) or d < 0]
            if free:
                raise InputError(f"input {s.name!r} has dynamic dimensions {free} besides the batch",
                                 expected="concrete shapes for benchmarking",
                                 hint="pass feeds=... (API) or benchmark with example inputs")
            shape = tuple(dims)
        dtype = np.dtype("float32" if s.dtype == "bfloat16" else s.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[s.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            feeds[s.name] = np.zeros(shape, dtype)
    return feeds


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def benchmark(session: Any, *, batch: int = 1, warmup: int = 10, iterations: int = 100,
              duration_s: float | None = None, feeds: dict[str, np.ndarray] | None = None,
              seed: int = 0, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Time ``session.run`` and return latency stats in ms, throughput (samples/s) and context.

    ``on_progress(done, total)`` is called now and then between timed runs (never inside one): runs
    done of ``iterations``, or milliseconds elapsed of ``duration_s`` when that is set.
    """
    if iterations < 1 or warmup < 0:
        raise InputError("benchmark needs iterations >= 1 and warmup >= 0", found=f"{iterations}, {warmup}")
    if feeds is None:
        feeds = make_feeds(session.inputs, batch, seed)
    else:
        batch = len(next(iter(feeds.values()))) if feeds else batch
    run, sync, clock = session.run, session.synchronize, time.perf_counter_ns
    for _ in range(warmup):
        run(feeds)
    sync()
    times: list[int] = []
    start = clock()
    deadline = None if duration_s is None else start + int(duration_s * 1e9)
    every = max(1, iterations // 50)
    n = 0
    while True:
        t0 = clock()
        run(feeds)
        sync()
        times.append(clock() - t0)
        n += 1
        if on_progress is not None and n % every == 0:  # outside the timed region
            if deadline is None:
                on_progress(n, iterations)
            else:
                on_progress(int((clock() - start) / 1e6), int(duration_s * 1e3))
        if deadline is None:
            if n >= iterations:
                break
        elif clock() >= deadline:
            break
    ms = np.asarray(times, dtype=np.float64) / 1e6
    p = np.percentile(ms, [50, 90, 95, 99])
    mean = float(ms.mean())
    return {
        "backend": getattr(session, "backend", type(session).__name__),
        "batch": batch,
        "threads": getattr(session, "threads", None),
        "warmup": warmup,
        "iterations": n,
        "latency_ms": {"mean": mean, "std": float(ms.std()), "min": float(ms.min()), "p50": float(p[0]),
                       "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]), "max": float(ms.max())},
        "throughput": batch * 1000.0 / mean if mean > 0 else None,
        "load_time_s": getattr(session, "load_time_s", None),
        "peak_rss_mb": _peak_rss_mb(),
    }
