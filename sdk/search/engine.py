"""Where trials run: in this process one at a time, or as Ray tasks on a local instance or a cluster.

Both engines take the same jobs and yield the same events, in the order things finish:
``("compressed", job, record)`` when a trial's compress ended (done or failed), ``("measured", job,
report)`` when its artifacts were timed. On Ray a trial compresses in a scratch folder on whatever node
has its ``trial_cpus`` free and sends its artifact directory back packed; the driver unpacks it into the
search directory whole (a trial folder is complete or absent). Each measurement is a task that takes a
node's every CPU (or the ``device:`` resource of ``measure_on`` and that node's CPUs), so timings are
only taken while nothing else of the search runs beside them. A worker lost mid-trial is retried by Ray
(``max_retries``), and each attempt is recorded.

Example::

    engine = make_engine("ray", address=None, trial_cpus=1)
    for kind, job, value in engine.run(jobs, spec, measure_only=[]): ...
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from edgesdk.errors import InputError

from .trial import MeasureSpec, TrialJob, compress_trial, measure_trial

Event = tuple[str, TrialJob, dict[str, Any]]
TASK_RETRIES = 3  # attempts after the first when a worker dies (Ray re-runs the task elsewhere)


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class LocalEngine:
    """The trials one after another in this process (no Ray needed)."""

    name = "in-process"

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "parallel_trials": 1}

    def run(self, jobs: list[TrialJob], spec: MeasureSpec, measure_only: list[TrialJob]) -> Iterator[Event]:
        for job in measure_only:
            yield "measured", job, measure_trial(job.out_dir, spec)
        for job in jobs:
            record = compress_trial(job)
            yield "compressed", job, record
            if record["status"] == "done":
                yield "measured", job, measure_trial(job.out_dir, spec)


def _compress_remote(job: TrialJob) -> tuple[dict[str, Any], bytes | None]:
    """On a worker: compress into a scratch folder, return the record and the packed artifact directory."""
    from edgesdk.cluster import pack_dir

    scratch = Path(tempfile.mkdtemp(prefix="edgesdk-trial-"))
    try:
        out = scratch / "out"
        record = compress_trial(replace(job, out_dir=str(out)))
        record["out_dir"] = job.out_dir
        record["ray_node"] = _node_id()
        return record, pack_dir(out) if (out / "manifest.json").is_file() else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _measure_remote(data: bytes, spec: MeasureSpec, device: str | None) -> dict[str, Any]:
    """On the measuring node: unpack the trial's directory and time it there (its fingerprint is that node's)."""
    from edgesdk.cluster import unpack_dir

    scratch = Path(tempfile.mkdtemp(prefix="edgesdk-measure-"))
    try:
        report = measure_trial(str(unpack_dir(data, scratch / "out")), spec)
        report.setdefault("device", {}).update(fleet_resource=device, ray_node=_node_id())
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _place(data: bytes, out_dir: str) -> None:
    """Unpack a trial's directory beside its place, then swap it in whole."""
    from edgesdk.cluster import unpack_dir

    dest = Path(out_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        unpack_dir(data, staging / "out")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging / "out", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class RayEngine:
    """Trials as Ray tasks: ``address`` None starts (or joins) a local instance, else joins that cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, *, trial_cpus: float = 1, trial_gpus: float = 0,
                 measure_on: str | None = None) -> None:
        from edgesdk.cluster import connect, require_devices

        if trial_cpus <= 0 or trial_gpus < 0:
            raise InputError("--trial-cpus must be > 0 and --trial-gpus >= 0", found=f"{trial_cpus}, {trial_gpus}")
        self.info = connect(address)
        self.trial_cpus, self.trial_gpus, self.measure_on = trial_cpus, trial_gpus, measure_on
        if measure_on is not None:
            require_devices([measure_on])

    def describe(self) -> dict[str, Any]:
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
        return {"engine": self.name, "address": self.info.get("address"), "nodes": len(nodes), "cpus": cpus,
                "trial_cpus": self.trial_cpus, "trial_gpus": self.trial_gpus, "measure_on": self.measure_on,
                "parallel_trials": max(1, int(cpus // self.trial_cpus))}

    def _measure_options(self) -> dict[str, Any]:
        """A measurement holds a whole node: every CPU of the biggest node, or of the device node."""
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if self.measure_on is None:
            return {"num_cpus": max(r.get("CPU", 1) for r in nodes)}
        device = [r for r in nodes if self.measure_on in r]
        return {"num_cpus": device[0].get("CPU", 0) if device else 0, "resources": {self.measure_on: 1}}

    def run(self, jobs: list[TrialJob], spec: MeasureSpec, measure_only: list[TrialJob]) -> Iterator[Event]:
        import ray

        compress = ray.remote(_compress_remote).options(num_cpus=self.trial_cpus, num_gpus=self.trial_gpus,
                                                        max_retries=TASK_RETRIES)
        measure = ray.remote(_measure_remote).options(max_retries=TASK_RETRIES, **self._measure_options())
        pending: dict[Any, tuple[str, TrialJob]] = {}
        for job in measure_only:
            from edgesdk.cluster import pack_dir

            pending[measure.remote(pack_dir(Path(job.out_dir)), spec, self.measure_on)] = ("measure", job)
        for job in jobs:
            pending[compress.remote(job)] = ("compress", job)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)  # blocks until one task ends
            kind, job = pending.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as e:  # retries spent, or the task raised
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                record = {"id": job.trial_id, "label": job.label, "status": "failed", "kind": "engine",
                          "reason": f"the Ray task did not finish after {TASK_RETRIES + 1} attempts: {reason}"}
                yield ("compressed", job, record) if kind == "compress" else ("measured", job, {"error": reason})
                continue
            if kind == "measure":
                yield "measured", job, value
                continue
            record, data = value
            if data is not None:
                _place(data, job.out_dir)
            yield "compressed", job, record
            if record["status"] == "done" and data is not None:
                pending[measure.remote(data, spec, self.measure_on)] = ("measure", job)


def make_engine(kind: str, *, address: str | None = None, trial_cpus: float = 1, trial_gpus: float = 0,
                measure_on: str | None = None, say: Any = None) -> LocalEngine | RayEngine:
    """``kind`` auto (Ray when installed or an address is given, else in-process), ray or local."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if kind not in ("auto", "ray", "local"):
        raise InputError(f"unknown engine {kind!r}", expected="auto, ray or local", found=kind)
    wants_ray = kind == "ray" or address is not None or measure_on is not None
    if kind == "local" and (address is not None or measure_on is not None):
        raise InputError("--engine local runs in this process: it cannot use a Ray cluster",
                         found=f"--ray-address {address}" if address else f"--measure-on {measure_on}",
                         hint="drop --engine local (Ray is the engine then)")
    if kind == "local" or (kind == "auto" and not wants_ray and not ray_installed()):
        if kind == "auto" and say is not None:
            say("Ray is not installed: the trials run in this process, one at a time "
                "(pip install 'edgesdk[search]' to run them in parallel or on a cluster)")
        return LocalEngine()
    if not ray_installed():
        raise InputError("the Ray engine needs Ray", expected="ray installed",
                         found="no ray module", hint="pip install 'edgesdk[search]'")
    return RayEngine(address, trial_cpus=trial_cpus, trial_gpus=trial_gpus, measure_on=measure_on)
