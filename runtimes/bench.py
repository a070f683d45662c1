"""The one timing loop for every backend: warm-up, timed runs, percentiles, synchronize() before each stop.

Each result also keeps the timed runs (``samples_ms``, at most ``MAX_SAMPLES``) and 95% confidence intervals of
the p50 and of the mean (``latency_ms["p50_ci_low"]`` ... ``["mean_ci_high"]``), so that two runs can be told
apart from noise (``edgesdk report compare``).

Example::

    with load("model.onnx", threads=2) as sess:
        r = benchmark(sess, batch=8, iterations=200)
        print(r["latency_ms"]["p50"], r["latency_ms"]["p50_ci_low"], r["throughput"])
"""
from __future__ import annotations

import math
import resource
import sys
import time
from typing import Any, Callable

import numpy as np

from edgesdk.errors import InputError

from .base import TensorSpec


def make_feeds(inputs: list[TensorSpec], batch: int, seed: int = 0,
               shapes: dict[str, tuple[int, ...]] | None = None,
               sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random feeds for ``inputs`` at ``batch``: floats in [0, 1), integers 0, booleans False. A dynamic
    dimension besides the batch takes its size from ``sizes`` (symbol -> size, e.g. {"H": 224})."""
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
            dims[1:] = [(sizes or {}).get(d, d) if isinstance(d, str) else d for d in dims[1:]]
            free = [d for d in dims[1:] if not isinstance(d, int) or d < 0]
            if free:
                raise InputError(f"input {s.name!r} has dynamic dimensions {free} besides the batch",
                                 expected="concrete shapes for benchmarking",
                                 hint="pass sizes={symbol: size} or feeds=... (API); `benchmark DIR` takes them "
                                      "from the manifest")
            shape = tuple(dims)
        dtype = np.dtype("float32" if s.dtype == "bfloat16" else s.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[s.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            feeds[s.name] = np.zeros(shape, dtype)
    return feeds


CI_LEVEL = 0.95  # of the confidence intervals stored with each result
MIN_CI_SAMPLES = 6  # below this even [min, max] covers the median with less than 95% probability: no interval
MAX_SAMPLES = 1000  # timed runs kept in a result (evenly thinned beyond, in time order); intervals use all runs


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def quantile_ci(samples_ms: Any, q: float, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the ``q`` quantile: the order statistics at ranks
    n*q -+ z*sqrt(n*q*(1-q)) (normal approximation of the binomial). None with fewer than ``MIN_CI_SAMPLES``.

    Example::

        quantile_ci([1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.95, 1.05], 0.5)   # (0.9, 1.3)
    """
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = len(x)
    if n < MIN_CI_SAMPLES:
        return None
    half = _z(level) * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half) - 1)  # 1-based rank floor(n*q - half), as a 0-based index
    hi = min(n - 1, math.ceil(1 + n * q + half) - 1)
    return float(x[lo]), float(x[hi])


def median_ci(samples_ms: Any, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The confidence interval of the median (``quantile_ci`` at 0.5).

    Example::

        median_ci([1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.95, 1.05])   # (0.9, 1.3)
    """
    return quantile_ci(samples_ms, 0.5, level)


def mean_ci(samples_ms: Any, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Confidence interval of the mean (mean -+ z * sd / sqrt(n), kept within [min, max] of the samples: one
    long stall among fast runs would otherwise put the lower bound below zero); None with fewer than
    ``MIN_CI_SAMPLES``.

    Example::

        mean_ci([1.0, 1.2, 0.9, 1.1, 1.0, 1.3])   # about (0.97, 1.20)
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if len(x) < MIN_CI_SAMPLES:
        return None
    mean, half = float(x.mean()), _z(level) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return max(mean - half, float(x.min())), min(mean + half, float(x.max()))


def latency_stats(samples_ms: Any) -> dict[str, float]:
    """The ``latency_ms`` dict of a result: mean, std, min, p50, p90, p95, p99, max, and the 95% intervals
    ``p50_ci_low``/``p50_ci_high`` and ``mean_ci_low``/``mean_ci_high`` (absent below ``MIN_CI_SAMPLES`` runs).

    Example::

        latency_stats([1.0, 1.2, 0.9, 1.1, 1.0, 1.3])["p50"]   # 1.05
    """
    ms = np.asarray(samples_ms, dtype=np.float64)
    if ms.size == 0:
        raise InputError("no timed runs to summarise", expected="at least one latency sample")
    p = np.percentile(ms, [50, 90, 95, 99])
    stats = {"mean": float(ms.mean()), "std": float(ms.std()), "min": float(ms.min()), "p50": float(p[0]),
             "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]), "max": float(ms.max())}
    for key, ci in (("p50", median_ci(ms)), ("mean", mean_ci(ms))):
        if ci is not None:
            stats[f"{key}_ci_low"], stats[f"{key}_ci_high"] = ci
    return stats


def kept_samples(samples_ms: Any) -> list[float]:
    """At most ``MAX_SAMPLES`` of the timed runs in time order (evenly thinned), in ms rounded to the ns."""
    ms = np.asarray(samples_ms, dtype=np.float64)
    if len(ms) > MAX_SAMPLES:
        ms = ms[np.linspace(0, len(ms) - 1, MAX_SAMPLES).round().astype(int)]
    return [round(float(v), 6) for v in ms]


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def benchmark(session: Any, *, batch: int = 1, warmup: int = 10, iterations: int = 100,
              duration_s: float | None = None, feeds: dict[str, np.ndarray] | None = None,
              seed: int = 0, on_progress: Callable[[int, int], None] | None = None,
              sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Time ``session.run`` and return latency stats in ms, throughput (samples/s) and context.

    ``on_progress(done, total)`` is called now and then between timed runs (never inside one): runs
    done of ``iterations``, or milliseconds elapsed of ``duration_s`` when that is set.
    """
    if iterations < 1 or warmup < 0:
        raise InputError("benchmark needs iterations >= 1 and warmup >= 0", found=f"{iterations}, {warmup}")
    if feeds is None:
        feeds = make_feeds(session.inputs, batch, seed, sizes=sizes)
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
    lat = latency_stats(ms)
    mean = lat["mean"]
    row = {
        "backend": getattr(session, "backend", type(session).__name__),
        "batch": batch,
        "threads": getattr(session, "threads", None),
        "warmup": warmup,
        "iterations": n,
        "latency_ms": lat,
        "throughput": batch * 1000.0 / mean if mean > 0 else None,
        "samples_ms": kept_samples(ms),
        "load_time_s": getattr(session, "load_time_s", None),
        "peak_rss_mb": _peak_rss_mb(),
    }
    if getattr(session, "delegation", None) is not None:  # LiteRT: the share of the graph XNNPACK runs
        row["delegation"] = session.delegation
    return row
