"""Benchmark every artifact of a compress run next to the PyTorch eager baseline, and say when a
compressed artifact does not pay.

Example::

    rows = benchmark_artifacts(run, artifacts)
    for msg in slower_than_parent(artifacts, rows): log.warning(msg)
"""
from __future__ import annotations

from typing import Any

from .progress import counter


def benchmark_artifacts(run: Any, artifacts: list[Any]) -> list[dict[str, Any]]:
    """One row per (artifact, backend, batch) plus the eager baseline per batch (runtimes.bench timing)."""
    from edgesdk.runtimes import benchmark, load

    cfg = run.recipe.benchmark
    rows: list[dict[str, Any]] = []
    fixed = {a.name: _fixed_batch(a) for a in artifacts}
    batches = list(dict.fromkeys([*cfg.batches, *(f for f in fixed.values() if f and f not in cfg.batches)]))
    for batch in batches:
        run.say(f"benchmarking PyTorch eager at batch {batch}")
        base = benchmark(run.torch_session, batch=batch, warmup=cfg.warmup, iterations=cfg.iterations,
                         duration_s=cfg.duration_s, on_progress=counter(run.say), sizes=run.dims.sizes)
        base.update(artifact="pytorch", format="torch", precision="fp32", size_bytes=None,
                    accuracy=run.baseline_accuracy, parity_passed=None, speedup_vs_baseline=1.0)
        rows.append(base)
        for art in artifacts:
            if art.format == "torch" or fixed[art.name] not in (None, batch):
                continue  # a fixed-batch artifact is timed at its own batch only
            for backend in run.backends_for(art):
                with load(art.path, backend=backend, threads=cfg.threads) as sess:
                    run.say(f"benchmarking {art.name} on {sess.backend} at batch {batch}")
                    r = benchmark(sess, batch=batch, warmup=cfg.warmup, iterations=cfg.iterations,
                                  duration_s=cfg.duration_s, on_progress=counter(run.say), sizes=run.dims.sizes)
                other = (art.meta.get("parity_by_backend") or {}).get(r["backend"])
                r.update(artifact=art.name, format=art.format, precision=art.precision,
                         size_bytes=art.path.stat().st_size, accuracy=other["accuracy"] if other else art.accuracy,
                         parity_passed=other["passed"] if other else (art.parity or {}).get("passed"),
                         speedup_vs_baseline=round(base["latency_ms"]["p50"] / r["latency_ms"]["p50"], 3))
                rows.append(r)
    return rows


def _fixed_batch(art: Any) -> int | None:
    """The batch an artifact is fixed at (its inputs' dim 0 is a number), or None when it is dynamic."""
    dims = {i["shape"][0] for i in art.inputs if i.get("shape") and isinstance(i["shape"][0], int)}
    return dims.pop() if len(dims) == 1 else None


def slower_than_parent(artifacts: list[Any], results: list[dict[str, Any]]) -> list[str]:
    """Say when a compressed artifact runs slower than what it stands in for (INT8 that does not pay): the
    artifact its stage record names in ``compare_with`` (its parent, or the float TFLite of the same model)."""
    from .pipeline import STAGES

    p50 = {(r["artifact"], r.get("backend"), r["batch"]): r["latency_ms"]["p50"] for r in results}
    msgs = []
    for art in artifacts:
        rec = STAGES.get(art.stage)
        want = rec.compare_with if rec is not None else None
        if want is None:
            continue
        base = art.parent if want == "parent" else next(
            (a.name for a in artifacts if a.stage == want and a.meta.get("reference") == art.meta.get("reference")),
            None)
        for (name, backend, batch), t in p50.items():
            parent_t = p50.get((base, backend, batch))
            if name == art.name and parent_t is not None and t > parent_t * 1.05:
                msg = (f"{art.name} is {t / parent_t:.2f}x slower than {base} on {backend} at batch {batch} "
                       f"on this CPU: quantization does not pay for this model here; ship {base} for speed")
                art.meta.setdefault("warnings", []).append(msg)
                msgs.append(msg)
    return msgs
