"""Benchmark artifacts on this device, without PyTorch: the Python side of ``edgesdk benchmark``.

Example::

    report = benchmark_paths(["out/"], batches=(1, 8), threads=2)
    print(to_markdown(report))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError
from .report import build_report


def _targets(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(file, manifest entry or {}) pairs for an artifact file or an artifact directory."""
    if path.is_dir():
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise ArtifactError(f"{path} is a directory without manifest.json",
                                expected="an artifact file or a directory written by `edgesdk compress`",
                                hint="pass the model file itself, or the -o directory of compress")
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{manifest} is not valid JSON", found=str(e)) from e
        from edgesdk.runtimes.registry import FORMAT_BACKENDS, verify_entry

        return [(verify_entry(path, a), a) for a in data.get("artifacts", []) if FORMAT_BACKENDS.get(a.get("format"))]
    return [(path, {})]


def benchmark_paths(paths: list[str | Path], *, backend: str = "auto", threads: int | None = None,
                    batches: tuple[int, ...] = (1,), warmup: int = 10, iterations: int = 100,
                    duration_s: float | None = None, device: str = "auto",
                    progress: Callable[[str], None] | None = None, **load_options: Any) -> dict[str, Any]:
    """Benchmark every artifact under ``paths`` at each batch size; return a report dict."""
    from edgesdk.runtimes import benchmark, load
    from edgesdk.runtimes.fingerprint import device_fingerprint

    results: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    for p in paths:
        for file, entry in _targets(Path(p)):
            with load(file, backend=backend, threads=threads, device=device, **load_options) as sess:
                for batch in batches:
                    if progress:
                        progress(f"benchmarking {file.name} ({sess.backend}) at batch {batch}")
                    r = benchmark(sess, batch=batch, warmup=warmup, iterations=iterations, duration_s=duration_s)
                    r.update(artifact=entry.get("name", file.name), path=str(file),
                             format=entry.get("format", file.suffix.lstrip(".")),
                             precision=entry.get("precision", "unknown"), size_bytes=file.stat().st_size,
                             accuracy=entry.get("accuracy"),
                             parity_passed=(entry.get("parity") or {}).get("passed"),
                             speedup_vs_baseline=None)
                    results.append(r)
            if entry:
                artifacts.append(entry)
    return build_report(device=device_fingerprint(), results=results, artifacts=artifacts)
