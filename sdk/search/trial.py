"""One trial: a real ``edgesdk.compress`` run of the trial's recipe (the same pipeline object, gate and
budgets as the ``compress`` command), then the measurement of its artifacts with the same benchmark loop
as ``edgesdk benchmark DIR`` (which re-checks parity and accuracy where it runs).

Both halves are plain functions of plain data (:class:`TrialJob`), so an engine can run them in this
process or as Ray tasks on other machines.

Example::

    record = compress_trial(job)            # {"status": "done", "artifacts": [...], ...}
    report = measure_trial(job.out_dir, MeasureSpec(("onnxruntime",), (None,), (1,)))
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import BudgetError, EdgeSDKError
from edgesdk.intake import ModelSource

from .space import BACKEND_TARGETS, FALLBACK, FALLBACK_TARGETS, PRECISIONS, SEARCH_RECOVER_STEPS, SearchSpace, Trial


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one trial: the model source, the recipe (a dict), the data files."""

    trial_id: str
    label: str
    source: ModelSource
    recipe: dict[str, Any]
    out_dir: str
    calib: str | None = None
    eval_data: str | None = None
    metric: str | None = None
    cache_dir: str | None = None
    attempts_dir: str | None = None  # one file per attempt (a Ray retry after a lost worker is a new attempt)


@dataclass(frozen=True)
class MeasureSpec:
    """What every trial's artifacts are timed on."""

    backends: tuple[str, ...]
    threads: tuple[int | None, ...] = (None,)
    batches: tuple[int, ...] = (1,)
    warmup: int = 10
    iterations: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


def trial_recipe(base: Any, trial: Trial, space: SearchSpace) -> Any:
    """The compress recipe of one trial: the base recipe with the trial's prune setting and precision, the
    targets its backends need, verified on those backends; benchmarking is left to the measurement step.
    Recovery runs a fixed number of steps so that ``best.yaml`` reproduces the artifact.

    An ``int8-fallback`` trial quantizes under the search's accuracy budget, judged as the search judges
    candidates, against the original model: compress keeps the layers INT8 hurts most in float until it
    holds, and the manifest lists each with its SQNR (``meta.budget``). When a pruned model already misses
    the budget in float, no fallback is tried and the trial fails saying so. The pruned model's own budget
    stays what a plain trial has (the recipe's, else compress's default), so the fallback changes the
    quantization only."""
    from edgesdk.recipe import apply_options

    options: dict[str, Any] = {"quantize": PRECISIONS[trial.precision], "targets": space.targets,
                               "backends": space.backends, "benchmark": False, "batches": space.batches}
    if trial.precision == FALLBACK:
        from edgesdk.run import DEFAULT_PRUNE_MAX_DROP

        b = space.budgets
        options.update(max_accuracy_drop=b.max_accuracy_drop, min_cosine=b.min_cosine,
                       targets=tuple(t for t in space.targets if t in FALLBACK_TARGETS),
                       backends=tuple(x for x in space.backends if BACKEND_TARGETS[x] in FALLBACK_TARGETS))
        if trial.prune and base.prune.max_accuracy_drop is None:  # else compress would judge pruning by it too
            options["prune_max_accuracy_drop"] = DEFAULT_PRUNE_MAX_DROP
    if trial.prune:
        options.update(prune=trial.prune, prune_method=trial.prune_method, prune_importance=trial.importance,
                       prune_max=None)
        p = base.prune
        if p.recover_steps is None and p.recover_time_s is None:
            options["recover_steps"] = SEARCH_RECOVER_STEPS
    else:
        options.update(prune=None, prune_max=None)
    return apply_options(base, **options).validate()


def trial_id(recipe: Any) -> str:
    """Same recipe, same id: what resume keys on."""
    import hashlib
    import json

    d = recipe.to_dict()
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _note_attempt(job: TrialJob) -> tuple[int, Path | None]:
    """Record this attempt (a file named by host, pid and start time, holding the pid) and return its number,
    counting earlier ones, with the file; ``<file>.done`` is written when the attempt ends."""
    if job.attempts_dir is None:
        return 1, None
    d = Path(job.attempts_dir) / job.trial_id
    d.mkdir(parents=True, exist_ok=True)
    mark = d / f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    mark.write_text(str(os.getpid()))
    return sum(1 for p in d.iterdir() if p.suffix != ".done"), mark


def compress_trial(job: TrialJob) -> dict[str, Any]:
    """Run the trial's compress; return its record: status done | failed (with the reason), the leaf
    artifacts with their gate results, accuracy, size and hashes. Never raises for a trial's own failure."""
    from edgesdk.api import compress
    from edgesdk.intake import load_npz
    from edgesdk.recipe import Recipe

    attempt, mark = _note_attempt(job)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"id": job.trial_id, "label": job.label, "attempt": attempt,
                              "host": socket.gethostname(), "pid": os.getpid(), "out_dir": job.out_dir}
    try:
        net = job.source.build()
        examples = job.source.examples(net)
        eval_arrays = load_npz(job.eval_data, what="eval data") if job.eval_data else None
        options: dict[str, Any] = {"cache_dir": job.cache_dir} if job.cache_dir else {}
        if job.metric:
            options["metric"] = job.metric
        result = compress(net, examples, Recipe.from_dict(job.recipe), out_dir=job.out_dir, calib_data=job.calib,
                          eval_data=eval_arrays, **options)
        record.update(status="done", manifest=_summary(result.manifest))
    except BudgetError as e:  # the artifacts were written (kept for the table) but a pruned one missed its budget
        record.update(status="failed", reason=e.one_line(), kind="budget")
        manifest = Path(job.out_dir) / "manifest.json"
        if manifest.is_file():
            import json

            record["manifest"] = _summary(json.loads(manifest.read_text()))
    except EdgeSDKError as e:
        record.update(status="failed", reason=e.one_line(), kind=type(e).__name__)
    except Exception as e:  # noqa: BLE001  (a trial's crash is its row in the table, not the search's end)
        record.update(status="failed", reason=f"{type(e).__name__}: {e}", kind="crash",
                      traceback=traceback.format_exc(limit=8))
    record["time_s"] = round(time.perf_counter() - t0, 3)
    if mark is not None:
        mark.with_name(mark.name + ".done").write_text(record["status"])
    return record


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the search reads of a trial's manifest."""
    arts = []
    for a in manifest.get("artifacts", []):
        if a.get("format") == "torch":
            continue
        meta = a.get("meta") or {}
        vs = meta.get("vs_original") or {}
        arts.append({"name": a["name"], "format": a["format"], "precision": a["precision"], "sha256": a["sha256"],
                     "size_bytes": a["size_bytes"], "status": a.get("status"),
                     "pruned": meta.get("reference", "pytorch") != "pytorch",
                     "parity_passed": (a.get("parity") or {}).get("passed"),
                     "accuracy": vs.get("accuracy", a.get("accuracy")), "accuracy_drop": vs.get("accuracy_drop"),
                     "cosine": vs.get("cosine"),
                     "float_nodes": len((meta.get("budget") or {}).get("float_nodes") or {})})
    cache = [{"artifact": a["name"], "stage": a.get("stage"), **(a.get("meta") or {})["cache"]}
             for a in manifest.get("artifacts", []) if (a.get("meta") or {}).get("cache")]
    return {"artifacts": arts, "stage_cache": cache, "baseline_accuracy": (manifest.get("model") or {}).get("accuracy"),
            "targets": manifest.get("targets")}


def measure_trial(out_dir: str, spec: MeasureSpec) -> dict[str, Any]:
    """Time every artifact of a trial's directory on the space's backends, threads and batches (the
    ``edgesdk benchmark DIR`` loop: hashes, parity and accuracy re-checked here first)."""
    from edgesdk.benchmarking import benchmark_paths

    return benchmark_paths([out_dir], backend=spec.backends, threads=spec.threads, batches=spec.batches,
                           warmup=spec.warmup, iterations=spec.iterations)
