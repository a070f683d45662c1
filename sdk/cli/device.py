"""Device-side commands: ``benchmark``, ``run``, ``inspect``, ``doctor`` (no torch needed)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from edgesdk.atomic import json_text
from edgesdk.errors import InputError

from .common import _NO_ISOLATE_HELP, _backends, _batches, _emit_report, _npz_bytes, _save, _say, _threads

@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--backend", "backend_text", default="auto", show_default=True,
              help="Force a backend (onnxruntime, ...), or sweep several: onnxruntime,openvino.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--threads", "threads_text", help="Intra-op threads, or a sweep: 1,2,4 (each with every --batch).")
@click.option("--batch", "batch_text", default="1", show_default=True, help="Batch sizes, e.g. 1,8,32.")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--iterations", type=int, default=100, show_default=True)
@click.option("--duration", "duration_s", type=float, help="Run for S seconds instead of --iterations.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write report.json here.")
@click.option("--rebuild", is_flag=True, help="Rebuild TensorRT engines made for another GPU/TensorRT from their ONNX.")
@click.option("--no-isolate", is_flag=True, help=_NO_ISOLATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--on", "on_text", metavar="device:A,device:B",
              help="Run on these devices of a Ray cluster instead of here (one artifact directory; each device "
                   "node joined with --resources '{\"device:NAME\": 1}'). Prints the devices side by side; "
                   "-o FILE writes the merged report and FILE-stem.NAME.json per device.")
@click.option("--ray-address", metavar="HOST:PORT", help="The Ray head for --on (default: RAY_ADDRESS, else the "
              "head started on this machine with `ray start --head`).")
@click.pass_context
def benchmark(ctx: click.Context, paths: tuple[str, ...], backend_text: str, device: str, threads_text: str | None,
              batch_text: str, warmup: int, iterations: int, duration_s: float | None, output: str | None,
              rebuild: bool, no_isolate: bool, as_json: bool, on_text: str | None, ray_address: str | None) -> None:
    """Benchmark artifact files or artifact directories on this device (or, with --on, on devices of a Ray
    cluster: see docs/fleet.md).

    Comma lists sweep: every backend x thread count x batch size is timed (one session per backend and thread
    count), and the report marks the Pareto points of latency vs throughput (its ``sweep`` key).
    """
    from edgesdk.atomic import write_json
    from edgesdk.benchmarking import benchmark_paths

    if iterations < 1 or warmup < 0:
        raise InputError("--iterations must be >= 1 and --warmup >= 0", found=f"{iterations}, {warmup}")
    if duration_s is not None and ctx.get_parameter_source("iterations") is click.core.ParameterSource.COMMANDLINE:
        raise InputError("give either --iterations or --duration, not both", found=f"--iterations {iterations} "
                         f"--duration {duration_s}", hint="--duration S runs for S seconds; --iterations N runs N times")
    if duration_s is not None and not (duration_s > 0 and duration_s != float("inf")):
        raise InputError("--duration must be a positive number of seconds", found=str(duration_s))
    batches = tuple(dict.fromkeys(_batches(batch_text)))  # 1,1,8 -> 1,8: one row per batch size
    threads, backend = _threads(threads_text), _backends(backend_text)
    if ray_address and not on_text:
        raise InputError("--ray-address needs --on", hint="add --on device:NAME[,device:NAME...]")
    if on_text:
        _benchmark_fleet(paths, on_text, ray_address, output, as_json, backend=backend, threads=threads,
                         batches=batches, warmup=warmup, iterations=iterations, duration_s=duration_s,
                         device=device, rebuild=rebuild, isolate=not no_isolate)
        return
    report = benchmark_paths(list(paths), backend=backend, threads=threads, batches=batches,
                             warmup=warmup, iterations=iterations, duration_s=duration_s, device=device,
                             progress=_say(ctx), isolate=not no_isolate, rebuild=rebuild)
    _emit_report(report, as_json)  # printed first: a failing -o write must not lose the measurements
    if output:
        _save(output, lambda p: write_json(p, report))
    if not report.get("results"):
        raise InputError("nothing was benchmarked", found="; ".join(
            f"{s.get('artifact')}: {s.get('reason')}" for s in report.get("skipped") or []) or "no artifacts",
            hint="install the backend these artifacts need (`edgesdk doctor`) or pass other files")
    failed = _parity_failures(report)
    if failed:
        click.secho(f"error: parity failed on this device for {', '.join(failed)} (see the table)",
                    fg="red", err=True)
        sys.exit(3)

def _parity_failures(report: dict[str, Any]) -> list[str]:
    """The artifacts whose parity re-check on the device failed, once each."""
    return list(dict.fromkeys(r["artifact"] for r in report.get("results") or []
                              if ((r.get("device_check") or {}).get("parity") or {}).get("passed") is False))

def _benchmark_fleet(paths: tuple[str, ...], on_text: str, ray_address: str | None, output: str | None,
                     as_json: bool, **kwargs: Any) -> None:
    """``benchmark DIR --on device:A,device:B``: each device benchmarks DIR; print the devices side by side
    (``--json``: {"reports": [...], "merged": {...}}); exit 3 when parity failed on any of them."""
    from edgesdk.atomic import write_json
    from edgesdk.cluster import connect
    from edgesdk.fleet import benchmark_on, merged
    from edgesdk.report.merge import render_merged

    if len(paths) != 1 or not Path(paths[0]).is_dir():
        raise InputError("--on benchmarks one artifact directory", expected="one DIR written by `edgesdk compress`",
                         found=" ".join(paths), hint="run one command per directory")
    devices = [d for d in on_text.split(",") if d.strip()]
    # without an address: RAY_ADDRESS, else the head `ray start --head` started here (never a new local
    # instance: it would have no devices)
    connect(ray_address or os.environ.get("RAY_ADDRESS") or "auto")
    reports = benchmark_on(paths[0], devices, **kwargs)
    table = merged(reports)
    click.echo(json_text({"reports": reports, "merged": table}) if as_json else render_merged(table, "md"))
    if output:  # the merged report, and each device's own report.json (for `report show` and `compare`)
        out = Path(output)
        _save(output, lambda p: write_json(p, table))
        for rep in reports:
            name = str(rep["device"]["fleet_resource"]).split(":", 1)[-1]
            _save(str(out.with_name(f"{out.stem}.{name}.json")), lambda p, rep=rep: write_json(p, rep))
    failed = {r["device"]["fleet_resource"]: _parity_failures(r) for r in reports}
    failed = {k: v for k, v in failed.items() if v}
    if failed:
        click.secho("error: parity failed on " + "; ".join(f"{k} for {', '.join(v)}" for k, v in failed.items())
                    + " (see the reports)", fg="red", err=True)
        sys.exit(3)

@click.command("run")
@click.argument("artifact", type=click.Path())
@click.option("--inputs", "inputs_file", required=True, type=click.Path(dir_okay=False), help=".npz of named inputs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write outputs to this .npz.")
@click.option("--backend", default="auto", show_default=True)
@click.option("--no-isolate", is_flag=True, help=_NO_ISOLATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print output summaries as JSON.")
def run_cmd(artifact: str, inputs_file: str, output: str | None, backend: str, no_isolate: bool,
            as_json: bool) -> None:
    """Run ARTIFACT on the arrays in --inputs and print (or save) the outputs.

    Each output is summarised by its shape: the per-row argmax for classifier-shaped outputs (a float (N, C)
    with C >= 2 that is the only output or is named like logits/probs/scores), else min/mean/max. ``--json``
    keys: shape, dtype, min, mean, max, argmax (null when not classifier-shaped).
    """
    import re

    import numpy as np

    from edgesdk.atomic import write_bytes
    from edgesdk.intake import load_npz
    from edgesdk.runtimes import load

    feeds = load_npz(inputs_file, what="inputs")
    with load(artifact, backend=backend, isolate=not no_isolate) as sess:
        outputs = sess.run(feeds)
    if output:
        _save(output, lambda p: write_bytes(p, _npz_bytes(outputs)))
    class_like = re.compile(r"logit|prob|score|class|softmax|pred", re.IGNORECASE)
    box_like = re.compile(r"box|anchor|coord|landmark|keypoint|mask", re.IGNORECASE)

    def classifier(name: str, a: np.ndarray) -> bool:  # (N, C) class scores, not (N, 4) boxes of a detector
        shaped = a.ndim == 2 and a.shape[1] >= 2 and a.size > 0 and np.issubdtype(a.dtype, np.floating)
        return shaped and not box_like.search(name) and (len(outputs) == 1 or bool(class_like.search(name)))

    def stat(a: np.ndarray, fn: Callable[..., Any]) -> float | None:
        return float(fn(a)) if a.size and a.dtype.kind in "biuf" else None  # bool, int, float; not str/complex

    summary = {name: {"shape": list(a.shape), "dtype": str(a.dtype), "min": stat(a, np.min), "mean": stat(a, np.mean),
                      "max": stat(a, np.max), "argmax": a.argmax(-1).tolist() if classifier(name, a) else None}
               for name, a in outputs.items()}
    if as_json:
        click.echo(json_text(summary))
    else:
        for name, s in summary.items():
            head = f"{name}: {s['dtype']} {tuple(s['shape'])}"
            if s["argmax"] is not None:
                click.echo(f"{head} argmax={s['argmax']}")
            elif s["mean"] is not None:
                click.echo(f"{head} min={s['min']:.4g} mean={s['mean']:.4g} max={s['max']:.4g}")
            else:
                click.echo(head)
        if output:
            click.echo(f"wrote {output}")

@click.command("inspect")
@click.argument("artifact", type=click.Path())
@click.option("--no-isolate", is_flag=True, help=_NO_ISOLATE_HELP)
@click.option("--json", "as_json", is_flag=True)
def inspect_cmd(artifact: str, no_isolate: bool, as_json: bool) -> None:
    """Show an artifact's format, inputs/outputs, opset, size and op histogram."""
    from edgesdk.errors import BackendUnavailableError
    from edgesdk.runtimes import inspect_artifact
    from edgesdk.runtimes.safety import probe

    if not no_isolate and Path(artifact).is_file():
        err = probe([artifact], run=False)[0].to_error()
        if err is not None and not isinstance(err, BackendUnavailableError):  # no backend here is not a fault
            raise err

    info = inspect_artifact(artifact)
    if as_json:
        click.echo(json_text(info))
        return
    for key in ("path", "format", "size_bytes", "sha256", "opset", "ir_version", "producer", "node_count",
                "parameters"):
        if info.get(key) is not None:
            click.echo(f"{key:12} {info[key]}")
    for kind in ("inputs", "outputs"):
        for t in info.get(kind, []):
            click.echo(f"{kind[:-1]:12} {t['name']}: {t['dtype']} {list(t['shape'])}")
    ops = info.get("ops") or {}
    if ops:
        click.echo("ops         " + ", ".join(f"{k}×{v}" for k, v in ops.items()))

@click.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """List the runtime backends usable here, their versions, devices and CPU features."""
    from edgesdk.runtimes import backend_status, device_fingerprint

    status, fp = backend_status(), device_fingerprint()
    if as_json:
        click.echo(json_text({"backends": status, "device": fp}))
        return
    click.echo(f"CPU: {fp.get('cpu_model')} ({fp.get('cores')} cores); ISA: {', '.join(fp.get('isa') or []) or '-'}")
    jetson = fp.get("jetson") or {}
    board = (f"; Jetson: {jetson.get('model')}, L4T {jetson.get('l4t') or '?'}, JetPack {jetson.get('jetpack') or '?'}"
             if jetson else "")
    click.echo(f"GPU: {fp.get('gpu') or 'none found'}{board}")
    click.echo(f"OS: {fp.get('os')}; Python {fp.get('python')}")
    for b in status:
        mark = click.style("ok", fg="green") if b.get("available") else click.style("missing", fg="yellow")
        extra = b.get("detail") or ""
        line = f"  {b['name']:12} {mark:>8}  {b.get('version') or ''}  {extra}"
        if not b.get("available") and b.get("install"):
            line += f"  -> {b['install']}"
        click.echo(line.rstrip())
