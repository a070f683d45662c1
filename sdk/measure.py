"""Benchmark every artifact of a compress run next to the PyTorch eager baseline, and say when a
compressed artifact does not pay.

Example::

    rows = benchmark_artifacts(run, artifacts)
    for msg in slower_than_parent(artifacts, rows): log.warning(msg)
    recommend_backends(artifacts, rows)   # artifact.recommended_backend: the fastest that passed parity
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
                if "error" in (art.meta.get("parity_by_backend") or {}).get(backend, {}):
                    continue  # an extra backend the artifact does not run or pass on: not timed, not recommended
                with load(art.path, backend=backend, threads=cfg.threads, **art.session_options) as sess:
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


RULE = ("lowest p50 at the smallest batch timed, among the backends on which the artifact passed parity; the "
        "format's default backend keeps the place unless another is faster beyond the noise (95% intervals of the "
        "p50s apart)")


def recommend_backends(artifacts: list[Any], rows: list[dict[str, Any]]) -> None:
    """Set each timed artifact's ``recommended_backend`` and record the choice in ``meta.backend_choice``:
    the p50 of every backend at the smallest batch timed, the threads, the rule and the machine it holds for
    (``runtimes.load(DIR)`` follows it on that machine only)."""
    from edgesdk.runtimes.fingerprint import machine_key

    for art in artifacts:
        mine = [r for r in rows if r.get("artifact") == art.name]
        if not mine:
            continue
        batch = min(r["batch"] for r in mine)
        at = [r for r in mine if r["batch"] == batch]
        p50 = {r["backend"]: r["latency_ms"]["p50"] for r in at}
        ok = [r for r in at if r.get("parity_passed") is not False]  # in backends_for's order: the default first
        best = None
        for r in ok:
            if best is None or _clearly_faster(r["latency_ms"], best["latency_ms"]):
                best = r
        best = best["backend"] if best is not None else None
        art.recommended_backend = best
        not_run = {b: d["error"] for b, d in (art.meta.get("parity_by_backend") or {}).items() if "error" in d}
        art.meta["backend_choice"] = {"recommended": best, "batch": batch, "threads": at[0].get("threads"),
                                      "p50_ms": p50, "failed_parity": sorted(set(p50) - {r["backend"] for r in ok}),
                                      "not_timed": not_run,
                                      "rule": RULE, "machine": machine_key()}


def _clearly_faster(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a``'s p50 is below ``b``'s beyond the noise: its interval's top under ``b``'s bottom (plain p50s when
    either has too few runs for an interval)."""
    hi, lo = a.get("p50_ci_high"), b.get("p50_ci_low")
    if hi is None or lo is None:
        return a["p50"] < b["p50"]
    return hi < lo


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
