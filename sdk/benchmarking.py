"""Benchmark artifacts on this device, without PyTorch: the Python side of ``edgesdk benchmark``.

Example::

    report = benchmark_paths(["out/"], batches=(1, 8), threads=2)
    print(to_markdown(report))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError, FeedError, InputError
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
    """What one path contributes: the files to time (with their manifest entries and the backends that run
    them) and how to check them."""

    todo: list[tuple[Path, dict[str, Any], tuple[str, ...]]]
    ref: Any = None
    metric: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)


def _runners(fmt: Any, backends: tuple[str, ...], name: Any, path: Path, skipped: list[dict[str, Any]]
             ) -> tuple[str, ...]:
    """The backends of ``backends`` that can run files of ``fmt``; each one that cannot is listed as skipped."""
    from edgesdk.runtimes.registry import unrunnable_reason

    runs = []
    for b in backends:
        why = unrunnable_reason(fmt, b)
        if why:
            skipped.append({"artifact": name, "path": str(path), "reason": why})
        else:
            runs.append(b)
    return tuple(runs)


def _plan(p: Path, backends: tuple[str, ...], skipped: list[dict[str, Any]]) -> _Dir:
    """A file is timed as it is (on each of several backends that can run it); a directory's artifacts are
    verified first (sha256), those no backend asked for runs here are listed as skipped, and its reference set,
    metric and traced sizes come along."""
    from edgesdk.runtimes import detect_format

    from .manifest import read_manifest, verify_entry

    if not p.is_dir():  # one backend: load() says why it cannot run the file, as before sweeps existed
        on = backends if len(backends) == 1 else _runners(detect_format(p), backends, p.name, p, skipped)
        return _Dir([(p, {}, on)] if on else [])
    manifest = read_manifest(p)
    todo = []
    for e in manifest["artifacts"]:
        if not isinstance(e, dict):
            raise ArtifactError(f"{p / 'manifest.json'} has an artifact entry that is not an object",
                                found=repr(e)[:100], hint="copy the directory again or re-run compress")
        on = _runners(e.get("format"), backends, e.get("name"), p / str(e.get("path")), skipped)
        if on:
            todo.append((verify_entry(p, e), e, on))  # refuse changed files before timing anything
    model = manifest.get("model") or {}
    sizes = {sym: d["traced"] for sym, d in (model.get("dynamic_dims") or {}).items()
             if isinstance(d, dict) and isinstance(d.get("traced"), int)}  # timed at the traced size
    return _Dir(todo, _reference(p, manifest), model.get("metric"), sizes)


@dataclass
class _Sweep:
    """What every (file, backend, threads) session of one run shares, and what the run collects."""

    batches: tuple[int, ...]
    threads: tuple[int | None, ...]
    timing: dict[str, Any]
    device: str
    isolate: bool
    rebuild: bool
    say: Callable[[str], None]
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _as_tuple(value: Any, what: str, example: str) -> tuple[Any, ...]:
    """``threads``/``backend`` as given to benchmark_paths (one value or a sequence) as a tuple without
    repeats."""
    values = tuple(dict.fromkeys(value if isinstance(value, (list, tuple)) else (value,)))
    if not values:
        raise InputError(f"no {what} to benchmark", expected=f"one value or a non-empty sequence, e.g. {example}",
                         found=repr(value))
    return values


def _thread_counts(threads: Any) -> tuple[int | None, ...]:
    """``threads`` (None, an int or a sequence of ints) as the tuple of thread counts to sweep."""
    counts = _as_tuple(threads, "thread counts", "threads=(1, 2)")
    if counts != (None,) and not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in counts):
        raise InputError("threads must be positive integers", expected="None, an int >= 1 or a tuple of them, "
                         "e.g. threads=(1, 2)", found=repr(threads), hint="leave it out to let the backend choose")
    return counts


def _backend_names(backend: Any) -> tuple[str, ...]:
    """``backend`` ("auto", a name, or a sequence of names) as a tuple; unknown names are refused up front."""
    from edgesdk.runtimes.registry import record

    names = _as_tuple(backend, "backends", "backend=('onnxruntime', 'openvino')")
    if len(names) > 1 and "auto" in names:
        raise InputError("backend 'auto' cannot be swept with named backends", expected="'auto' alone, or names "
                         "such as ('onnxruntime', 'openvino')", found=repr(backend))
    for name in names:
        if name != "auto":
            record(name)  # BackendUnavailableError listing the known names
    return names


def benchmark_paths(paths: list[str | Path], *, backend: str | tuple[str, ...] = "auto",
                    threads: int | tuple[int, ...] | None = None, batches: tuple[int, ...] = (1,),
                    warmup: int = 10, iterations: int = 100, duration_s: float | None = None, device: str = "auto",
                    progress: Callable[[str], None] | None = None, isolate: bool = False,
                    rebuild: bool = False) -> dict[str, Any]:
    """Benchmark every artifact under ``paths`` at each batch size; return a report dict.

    ``backend`` and ``threads`` take one value or a tuple to sweep: each (artifact, backend, threads) gets one
    session that times every batch, and ``report["sweep"]`` lists, per artifact and backend, the points and
    which are Pareto-optimal for latency vs throughput (edgesdk.report.sweep). ``isolate`` probes each file
    in a child process first; ``rebuild`` rebuilds TensorRT engines made for another GPU or TensorRT release
    from their ONNX.

    For an artifact directory, every file is checked against the manifest's sha256 first, and
    when compress stored a reference set, each artifact's parity and accuracy are re-checked on
    this device (``device_check`` in each result row). Artifacts no backend here can run are
    listed under ``skipped`` instead of failing the whole run. With ``backend="auto"`` an artifact runs on
    the backend compress recommended for it when that was measured on this machine (``as_made``).
    """
    from edgesdk.runtimes.fingerprint import device_fingerprint

    from .report.sweep import sweep_summary

    backends = _backend_names(backend)
    run = _Sweep(tuple(batches), _thread_counts(threads), {"warmup": warmup, "iterations": iterations,
                 "duration_s": duration_s, "on_progress": getattr(progress, "count", None)},
                 device, isolate, rebuild, progress or (lambda _msg: None))
    artifacts: list[dict[str, Any]] = []
    for p in map(Path, paths):
        plan = _plan(p, backends, run.skipped)
        for file, entry, on in plan.todo:
            _sweep_file(run, plan, file, entry, on)
            if entry:
                artifacts.append(entry)
    report = build_report(device=device_fingerprint(), results=run.results, artifacts=artifacts)
    report["sweep"] = sweep_summary(run.results)
    report["skipped"] = [dict(s) for s in dict.fromkeys(tuple(s.items()) for s in run.skipped)]  # once each
    return report


def _sweep_file(run: _Sweep, plan: _Dir, file: Path, entry: dict[str, Any], backends: tuple[str, ...]) -> None:
    """Time ``file`` on each backend and thread count: one session per pair, every batch size on it. The file
    is probed in a child (``isolate``) and re-checked against the reference set once per backend: thread
    counts do not change what a backend computes."""
    from edgesdk.runtimes import detect_format, load
    from edgesdk.runtimes.registry import as_made

    from .reference import check_artifact

    if entry.get("task") == "text-generation":  # a language model: tokens/s, not a forward pass per batch
        _generate_file(run, file, entry, backends)
        return
    engine = {"rebuild": True} if run.rebuild and detect_format(file) == "engine" else {}
    for backend in backends:
        on, opts = as_made(entry, backend, engine) if entry else (backend, engine)
        check, first = None, True
        for threads in run.threads:
            with load(file, backend=on, threads=threads, device=run.device, isolate=run.isolate and first,
                      **opts) as sess:
                if first and plan.ref is not None and entry:
                    run.say(f"checking {file.name} ({sess.backend}) against the stored reference set")
                    check = check_artifact(sess, plan.ref, entry, plan.metric)
                first = False
                on_threads = "" if threads is None else f", {threads} thread{'s' if threads != 1 else ''}"
                for batch in run.batches:
                    run.say(f"benchmarking {file.name} ({sess.backend}{on_threads}) at batch {batch}")
                    r = _time(sess, file, entry, batch, run.timing, plan.sizes, run.skipped)
                    if r is not None:
                        run.results.append(_with_check(r, check))


def _generate_file(run: _Sweep, file: Path, entry: dict[str, Any], backends: tuple[str, ...]) -> None:
    """Time a text-generation artifact with runtimes.llm_bench (time to first token, prefill and decode
    tokens/s, at the prompt and generation lengths compress measured it with, else 128/128) on each backend
    and thread count; its rows carry ``task`` and those figures instead of a per-batch latency."""
    from edgesdk.runtimes import load
    from edgesdk.runtimes.llm_bench import benchmark_generate
    from edgesdk.runtimes.registry import as_made

    lengths = _generation_lengths(file, entry)
    iterations = max(1, min(int(run.timing.get("iterations") or 3), 3))  # each run generates gen_len tokens
    name = entry.get("name", file.name)
    size = sum(f.stat().st_size for f in file.parent.glob(f"{file.name}*"))  # model.onnx and model.onnx.data
    for backend in backends:
        on, opts = as_made(entry, backend, {})
        for threads in run.threads:
            with load(file, backend=on, threads=threads, device=run.device, isolate=run.isolate, **opts) as sess:
                run.say(f"generating with {name} ({sess.backend}) to time it")
                try:
                    r = benchmark_generate(sess, iterations=iterations, **lengths)
                except InputError as e:  # this model cannot be timed so: the other artifacts still are
                    run.skipped.append({"artifact": name, "path": str(file), "reason": e.what})
                    continue
            r.update(task="text-generation", artifact=name, path=str(file), format="onnx", size_bytes=size,
                     precision=entry.get("precision", "unknown"), peak_rss_scope="process",
                     parity_passed=(entry.get("parity") or {}).get("passed"))
            run.results.append(r)


def _generation_lengths(file: Path, entry: dict[str, Any]) -> dict[str, int]:
    """The prompt and generation lengths compress timed ``entry`` with, else 128 + 128, fitted into the model's
    context (half of it each when 256 tokens do not fit)."""
    from edgesdk.runtimes.generation import lm_config

    made = entry.get("benchmark") if isinstance(entry.get("benchmark"), dict) else {}
    lengths = {k: made[k] if isinstance(made.get(k), int) else 128 for k in ("prompt_len", "gen_len")}
    context = lm_config(file.parent).context_length
    if context and lengths["prompt_len"] + lengths["gen_len"] > context:
        lengths = {"prompt_len": max(1, context // 2), "gen_len": max(1, context - max(1, context // 2) - 1)}
    return lengths

def _time(sess: Any, file: Path, entry: dict[str, Any], batch: int, timing: dict[str, Any], sizes: dict[str, int],
          skipped: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One result row (runtimes.bench's loop), or None with a skipped entry (a fixed-batch artifact at
    another batch: the rest still runs). Its ``peak_rss_mb`` covers this configuration alone where the OS lets
    the peak be reset (``peak_rss_scope``, see _reset_peak_rss)."""
    from edgesdk.runtimes import benchmark

    scoped = _reset_peak_rss()
    try:
        r = benchmark(sess, batch=batch, sizes=sizes, **timing)
    except FeedError as e:
        skipped.append({"artifact": entry.get("name", file.name), "path": str(file), "batch": batch, "reason": e.what})
        return None
    peak = _peak_rss_since_reset_mb() if scoped else None
    if peak is not None:
        r["peak_rss_mb"] = peak
    r["peak_rss_scope"] = "configuration" if peak is not None else "process"
    r.update(artifact=entry.get("name", file.name), path=str(file), format=entry.get("format", file.suffix.lstrip(".")),
             precision=entry.get("precision", "unknown"), size_bytes=file.stat().st_size,
             accuracy=entry.get("accuracy"), parity_passed=(entry.get("parity") or {}).get("passed"),
             speedup_vs_baseline=None)
    return r


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set to its current one, so the next reading covers one configuration.

    The timed runs happen in this process (``isolate`` only probes a file in a child first), and ru_maxrss, the
    figure runtimes.bench reports, only ever grows: after batch 32, batch 1 would show batch 32's peak. Linux
    (4.0+) resets the high-water mark when "5" is written to /proc/self/clear_refs; the peak then still counts
    what stays resident (the loaded model, memory allocators kept from earlier configurations), so it is the
    process's peak *while this configuration ran*. False where that is not possible (macOS, Windows, a kernel
    or sandbox that refuses): the row then keeps ru_maxrss, the high-water mark of the process so far.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_since_reset_mb() -> float | None:
    """VmHWM of /proc/self/status in MB (ru_maxrss may also hold a pre-exec parent's peak); None if unreadable."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _with_check(r: dict[str, Any], check: dict[str, Any] | None) -> dict[str, Any]:
    """The row with the on-device re-check: its parity and task metric replace the workstation's."""
    if check is not None:
        r["device_check"] = check
        if check["parity"] is not None:
            r["parity_passed"] = check["parity"]["passed"]
        if check["accuracy"] is not None:
            r["accuracy"] = check["accuracy"]
    return r
