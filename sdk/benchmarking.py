"""Benchmark artifacts on this device, without PyTorch: the Python side of ``edgesdk benchmark``.

Example::

    report = benchmark_paths(["out/"], batches=(1, 8), threads=2)
    print(to_markdown(report))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError, FeedError
from .report import build_report


def _reference(path: Path, manifest: dict[str, Any]) -> Any:
    """The directory's reference set, after checking its sha256; None when compress stored none."""
    info = manifest.get("reference")
    if not info:
        return None
    from .manifest import verify_entry
    from .reference import load_reference_set

    return load_reference_set(verify_entry(path, info))


@dataclass
class _Dir:
    """What one path contributes: the files to time (with their manifest entries) and how to check them."""

    todo: list[tuple[Path, dict[str, Any]]]
    ref: Any = None
    metric: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)


def _plan(p: Path, backend: str, skipped: list[dict[str, Any]]) -> _Dir:
    """A file is timed as it is; a directory's artifacts are verified first (sha256), those no backend here
    runs are listed as skipped, and its reference set, metric and traced sizes come along."""
    from edgesdk.runtimes.registry import unrunnable_reason

    from .manifest import read_manifest, verify_entry

    if not p.is_dir():
        return _Dir([(p, {})])
    manifest = read_manifest(p)
    todo = []
    for e in manifest["artifacts"]:
        if not isinstance(e, dict):
            raise ArtifactError(f"{p / 'manifest.json'} has an artifact entry that is not an object",
                                found=repr(e)[:100], hint="copy the directory again or re-run compress")
        why = unrunnable_reason(e.get("format"), backend)
        if why:
            skipped.append({"artifact": e.get("name"), "path": str(p / str(e.get("path"))), "reason": why})
        else:
            todo.append((verify_entry(p, e), e))  # refuse changed files before timing anything
    model = manifest.get("model") or {}
    sizes = {sym: d["traced"] for sym, d in (model.get("dynamic_dims") or {}).items()
             if isinstance(d, dict) and isinstance(d.get("traced"), int)}  # timed at the traced size
    return _Dir(todo, _reference(p, manifest), model.get("metric"), sizes)


def benchmark_paths(paths: list[str | Path], *, backend: str = "auto", threads: int | None = None,
                    batches: tuple[int, ...] = (1,), warmup: int = 10, iterations: int = 100,
                    duration_s: float | None = None, device: str = "auto",
                    progress: Callable[[str], None] | None = None, isolate: bool = False,
                    rebuild: bool = False) -> dict[str, Any]:
    """Benchmark every artifact under ``paths`` at each batch size; return a report dict.

    ``isolate`` probes each file in a child process first; ``rebuild`` rebuilds TensorRT engines made for
    another GPU or TensorRT release from their ONNX.

    For an artifact directory, every file is checked against the manifest's sha256 first, and
    when compress stored a reference set, each artifact's parity and accuracy are re-checked on
    this device (``device_check`` in each result row). Artifacts no backend here can run are
    listed under ``skipped`` instead of failing the whole run. With ``backend="auto"`` an artifact runs on
    the backend compress recommended for it when that was measured on this machine (``as_made``).
    """
    from edgesdk.runtimes import detect_format, load
    from edgesdk.runtimes.fingerprint import device_fingerprint
    from edgesdk.runtimes.registry import as_made

    from .reference import check_artifact

    say = progress or (lambda _msg: None)
    results: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    timing = {"warmup": warmup, "iterations": iterations, "duration_s": duration_s,
              "on_progress": getattr(progress, "count", None)}
    for p in map(Path, paths):
        plan = _plan(p, backend, skipped)
        for file, entry in plan.todo:
            engine = {"rebuild": True} if rebuild and detect_format(file) == "engine" else {}
            on, opts = as_made(entry, backend, engine) if entry else (backend, engine)
            with load(file, backend=on, threads=threads, device=device, isolate=isolate, **opts) as sess:
                check = None
                if plan.ref is not None and entry:
                    say(f"checking {file.name} ({sess.backend}) against the stored reference set")
                    check = check_artifact(sess, plan.ref, entry, plan.metric)
                for batch in batches:
                    say(f"benchmarking {file.name} ({sess.backend}) at batch {batch}")
                    r = _time(sess, file, entry, batch, timing, plan.sizes, skipped)
                    if r is not None:
                        results.append(_with_check(r, check))
            if entry:
                artifacts.append(entry)
    report = build_report(device=device_fingerprint(), results=results, artifacts=artifacts)
    report["skipped"] = skipped
    return report


def _time(sess: Any, file: Path, entry: dict[str, Any], batch: int, timing: dict[str, Any], sizes: dict[str, int],
          skipped: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One result row (runtimes.bench's loop), or None with a skipped entry (a fixed-batch artifact at
    another batch: the rest still runs)."""
    from edgesdk.runtimes import benchmark

    try:
        r = benchmark(sess, batch=batch, sizes=sizes, **timing)
    except FeedError as e:
        skipped.append({"artifact": entry.get("name", file.name), "path": str(file), "batch": batch, "reason": e.what})
        return None
    r.update(artifact=entry.get("name", file.name), path=str(file), format=entry.get("format", file.suffix.lstrip(".")),
             precision=entry.get("precision", "unknown"), size_bytes=file.stat().st_size,
             accuracy=entry.get("accuracy"), parity_passed=(entry.get("parity") or {}).get("passed"),
             speedup_vs_baseline=None)
    return r


def _with_check(r: dict[str, Any], check: dict[str, Any] | None) -> dict[str, Any]:
    """The row with the on-device re-check: its parity and task metric replace the workstation's."""
    if check is not None:
        r["device_check"] = check
        if check["parity"] is not None:
            r["parity_passed"] = check["parity"]["passed"]
        if check["accuracy"] is not None:
            r["accuracy"] = check["accuracy"]
    return r
