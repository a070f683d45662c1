"""Benchmark one artifact directory on several devices of a Ray cluster at once.

Each device node joined with a ``device:NAME`` resource; one Ray task per device asks for that resource, so
it runs on that node only. The task unpacks the directory into a temporary folder there and runs
:func:`edgesdk.benchmarking.benchmark_paths` (sha256 checks, parity and accuracy re-checked against the
directory's reference set), so each report's ``device`` fingerprint is the device's own; it also carries
``fleet_resource`` (the resource it ran under), ``fleet_node_id`` and ``hostname``.

Example::

    reports = benchmark_on("out/", ["device:orin-01", "device:pi5-02"], batches=(1, 8))
    print(render_merged(merged(reports), "md"))
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError, EdgeSDKError, InputError

FLEET_ERROR = "edgesdk-fleet-error"


def _install_hint(path: Path) -> str:
    """The pip commands that install what the device needs to run this directory's artifacts."""
    from edgesdk.runtimes.registry import BACKENDS, format_backends

    from .manifest import read_manifest

    try:
        formats = {e.get("format") for e in read_manifest(path)["artifacts"] if isinstance(e, dict)}
    except EdgeSDKError:
        formats = set()
    hints = [BACKENDS[b[0]].install for f in sorted(map(str, formats)) if (b := format_backends(f))]
    return "; ".join(dict.fromkeys(hints)) or "pip install 'edgesdk[onnx]'"


def _device_task(blob: bytes, resource: str, dir_name: str, source: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What runs on the device node. Self-contained on purpose (imports inside; of this module only
    FLEET_ERROR): :func:`benchmark_on` ships a copy by value, so on a device without edgesdk it still runs far
    enough to say what is missing."""
    import json
    import os
    import socket
    import sys
    import tempfile
    import traceback

    def failure(kind: str, **info: Any) -> dict[str, Any]:
        return {"kind": FLEET_ERROR, "error": kind, "host": socket.gethostname(), "python": sys.executable, **info}

    try:
        import ray
        from edgesdk.benchmarking import benchmark_paths
        from edgesdk.cluster import unpack_dir
        from edgesdk.errors import EdgeSDKError
    except ImportError as e:
        return failure("import", module=e.name or str(e), message=str(e))
    with tempfile.TemporaryDirectory(prefix="edgesdk-fleet-") as tmp:
        here = os.path.join(tmp, dir_name)
        try:
            report = benchmark_paths([unpack_dir(blob, here)], **kwargs)
        except ImportError as e:
            return failure("import", module=e.name or str(e), message=str(e))
        except EdgeSDKError as e:  # rebuilt as the same class on the driver: plain data crosses any versions
            return failure("edgesdk", type=type(e).__name__, what=e.what, expected=e.expected, found=e.found,
                           hint=e.hint)
        except Exception as e:  # noqa: BLE001 - any other failure is reported with the device's traceback tail
            return failure("crash", type=type(e).__name__, message=str(e)[:500],
                           traceback=traceback.format_exc()[-2000:])
        # the report names files in this temporary folder; name the directory the caller passed instead
        report = json.loads(json.dumps(report).replace(json.dumps(here)[1:-1], json.dumps(source)[1:-1]))
    report["device"] = {**(report.get("device") or {}), "fleet_resource": resource, "hostname": socket.gethostname(),
                        "fleet_node_id": ray.get_runtime_context().get_node_id()}
    return report


def _raise_failure(resource: str, out: dict[str, Any], install: str) -> None:
    """Turn what a device task reported instead of a report into the error the caller sees."""
    from . import errors

    where = f"on {resource} ({out.get('host')})"
    if out["error"] == "import":
        raise BackendUnavailableError(f"edgesdk cannot run {where}: {out.get('module')} is not installed there",
                                      expected="edgesdk and the runtime for these artifacts in the device's Python "
                                               f"({out.get('python')})", found=str(out.get("message")),
                                      hint=f"on the device: {install} ray (the same Ray version as the head)")
    if out["error"] == "edgesdk":
        cls = getattr(errors, str(out.get("type")), None)
        cls = cls if isinstance(cls, type) and issubclass(cls, EdgeSDKError) else EdgeSDKError
        raise cls(f"{where}: {out.get('what')}", expected=out.get("expected"), found=out.get("found"),
                  hint=out.get("hint"))
    raise EdgeSDKError(f"the benchmark failed {where}", found=f"{out.get('type')}: {out.get('message')}",
                       hint="the device's traceback ends:\n" + str(out.get("traceback") or "").strip()[-800:])


def _collect(refs: dict[str, Any], install: str) -> list[dict[str, Any]]:
    """Each device's report, in the order asked; the first failure cancels the tasks still running."""
    import ray

    reports = []
    try:
        for resource, ref in refs.items():
            try:
                out = ray.get(ref)
            except ray.exceptions.RayError as e:  # the node died, the worker crashed, the task was cancelled
                raise EdgeSDKError(f"the benchmark task on {resource} failed in Ray",
                                   found=f"{type(e).__name__}: {str(e)[:500]}",
                                   hint="check the device node (`ray status` on the head) and try again") from None
            if isinstance(out, dict) and out.get("kind") == FLEET_ERROR:
                _raise_failure(resource, out, install)
            if not out.get("results"):  # e.g. the device lacks the runtime: every artifact was skipped there
                raise BackendUnavailableError(
                    f"nothing was benchmarked on {resource} ({out['device'].get('hostname')})",
                    found="; ".join(f"{s.get('artifact')}: {s.get('reason')}" for s in out.get("skipped") or [])
                    or "no artifacts", hint=f"on the device: {install}, or pick a backend it has "
                                            "(`edgesdk doctor` on the device lists them)")
            reports.append(out)
    except BaseException:
        for ref in refs.values():
            ray.cancel(ref, force=True)
        raise
    return reports


def benchmark_on(path: str | Path, devices: list[str], *, backend: str | tuple[str, ...] = "auto",
                 threads: int | tuple[int, ...] | None = None, batches: tuple[int, ...] = (1,), warmup: int = 10,
                 iterations: int = 100, duration_s: float | None = None, device: str = "auto",
                 rebuild: bool = False, isolate: bool = False) -> list[dict[str, Any]]:
    """Benchmark the artifact directory ``path`` on each ``device:NAME`` node, all at once; one report each.

    Connects to the cluster first when this process is not connected (``RAY_ADDRESS``, see
    :func:`edgesdk.cluster.connect`). The keyword arguments are :func:`edgesdk.benchmarking.benchmark_paths`'s.
    Each report's ``device`` gains ``fleet_resource``, ``fleet_node_id`` and ``hostname``.

    Example::

        [r["device"]["fleet_resource"] for r in benchmark_on("out/", ["device:orin-01"])]   # ['device:orin-01']
    """
    import ray

    from .cluster import connect, pack_dir, require_devices

    root = Path(path)
    if not (root / "manifest.json").is_file():
        raise InputError(f"{root} is not an artifact directory", expected="a directory with manifest.json, "
                         "written by `edgesdk compress -o DIR`", found="no manifest.json" if root.is_dir()
                         else "no such directory", hint="benchmark single files on the device itself")
    if not ray.is_initialized():
        connect()
    names = require_devices(devices)
    kwargs = {"backend": backend, "threads": threads, "batches": tuple(batches), "warmup": warmup,
              "iterations": iterations, "duration_s": duration_s, "device": device, "rebuild": rebuild, "isolate": isolate}
    blob = ray.put(pack_dir(root))  # once in the object store; each device pulls it
    # num_cpus=0: the device resource (1 per node) already gives the task the node alone, and a device that
    # joined with --num-cpus 0 (to keep other work off it) still runs it
    task = ray.remote(num_cpus=0, max_retries=0)(_by_value(_device_task))
    refs = {r: task.options(resources={r: 1}, name=f"edgesdk-benchmark {r}").remote(
        blob, r, root.name or "artifacts", str(path), kwargs) for r in names}
    return _collect(refs, _install_hint(root))


def _by_value(fn: Any) -> Any:
    """A copy of ``fn`` that cloudpickle ships by value (its module need not be importable on the device)."""
    import types

    copy = types.FunctionType(fn.__code__, {"__builtins__": __builtins__, "FLEET_ERROR": FLEET_ERROR},
                              fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = f"<fleet>.{fn.__name__}"  # not importable by name, so pickled by value
    copy.__module__ = "__main__"
    return copy


def merged(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The reports of :func:`benchmark_on` side by side (edgesdk.report.merge), one column per device resource.

    Example::

        print(render_merged(merged(reports), "md"))
    """
    from .atomic import json_text
    from .report.merge import device_label, merge_reports

    if not reports:
        raise InputError("no reports to merge", expected="the reports benchmark_on returned")
    with tempfile.TemporaryDirectory(prefix="edgesdk-merge-") as tmp:
        files = []
        for n, rep in enumerate(reports):  # merge_reports reads files: the checks and upgrades of report.json
            files.append(Path(tmp) / f"{n}.json")
            files[-1].write_text(json_text(rep), encoding="utf-8")
        out = merge_reports(files)
    renames = {}
    for d, rep in zip(out["devices"], reports):
        dev = rep.get("device") or {}
        resource = dev.get("fleet_resource")
        if resource:
            renames[d["label"]] = f"{resource} ({device_label(dev)})"
            d["label"], d["source"] = renames[d["label"]], resource
    for row in out["rows"]:
        row["cells"] = {renames.get(k, k): v for k, v in row["cells"].items()}
    return out
