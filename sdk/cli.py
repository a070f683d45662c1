"""The ``edgesdk`` command line. Each command parses flags, builds a recipe or call, runs the API, prints.

Errors from edgesdk print as plain sentences with a non-zero exit; a Python
traceback appears only with ``--debug``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .atomic import json_text
from .errors import EdgeSDKError, InputError

log = logging.getLogger("edgesdk")


class _Group(click.Group):
    """Turns EdgeSDKError into a clean message and exit code; other errors say how to get details.

    A reader that closes stdout early (``edgesdk inspect m.onnx | head``) ends the command quietly with exit 0.
    """

    @staticmethod
    def _stdout_broken() -> bool:
        """Whether stdout is a pipe whose reader has gone (POLLERR), so a BrokenPipeError was about stdout and
        not about a pipe to a child process. True where poll cannot tell (the common case)."""
        import select

        if not hasattr(select, "poll"):  # Windows: cannot tell
            return True
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError, AttributeError):  # not a real file (click's test runner): another pipe broke
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))

    @staticmethod
    def _stdout_gone() -> None:
        """Point stdout (and stderr when it is the same pipe) at /dev/null, so that the flush at interpreter
        exit cannot fail again on the closed pipe (Python docs, signal module, "Note on SIGPIPE")."""
        import os

        try:
            fd = sys.stdout.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):  # not a real file (click's test runner): nothing to do
            return
        try:
            same = os.path.sameopenfile(fd, sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            same = False
        os.dup2(devnull, fd)
        if same:  # `2>&1 | head`: the progress and error lines would hit the closed pipe too
            os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            rv = super().invoke(ctx)
            sys.stdout.flush()  # a reader that left shows up here, not as a failed flush at interpreter exit
            return rv
        except BrokenPipeError:
            if not self._stdout_broken():  # a pipe to a child process broke: a real failure
                return self._internal_error(ctx)
            self._stdout_gone()  # the reader of our stdout closed early, like `yes | head`: not an error
            sys.exit(0)
        except EdgeSDKError as e:
            if ctx.obj and ctx.obj.get("debug"):  # the traceback, then the same exit code as without --debug
                import traceback

                traceback.print_exc()
            click.secho(f"error: {e.format()}", fg="red", err=True)
            sys.exit(e.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.secho("interrupted; the output directory was left as it was", err=True)
            sys.exit(130)
        except Exception:  # an unexpected failure: short message unless --debug
            return self._internal_error(ctx)

    @staticmethod
    def _internal_error(ctx: click.Context) -> Any:
        """Report the exception being handled as an internal error (exit 1); re-raise it with --debug."""
        e = sys.exc_info()[1]
        if ctx.obj and ctx.obj.get("debug"):
            raise  # called from an except block: re-raises the exception being handled, for its traceback
        click.secho(f"internal error: {type(e).__name__}: {e}\n(re-run with --debug for the traceback, "
                    "and please report it)", fg="red", err=True)
        sys.exit(1)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.version_option(package_name="edgesdk")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """edgesdk: compress PyTorch models, export them verified, run and benchmark them on the device."""
    ctx.ensure_object(dict)
    ctx.obj.update(debug=debug, quiet=quiet)
    level = logging.DEBUG if debug else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


_NO_ISOLATE_HELP = ("Load the file in this process without first trying it in a child process (faster; only "
                    "for files you trust: a crafted file can crash native parsers).")


def _say(ctx: click.Context) -> Callable[[str], None]:
    """Step progress on stderr (rich spinners on a terminal), silenced by --quiet; closed with the command."""
    from .progress import StepProgress

    root = ctx.find_root()
    say = root.obj.get("progress")
    if say is None:
        say = root.obj["progress"] = StepProgress(quiet=bool(root.obj.get("quiet")))
        root.call_on_close(say.close)
    return say


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise InputError(f"bad --batch value {text!r}", expected="comma-separated integers, e.g. 1,8,32",
                         found=text) from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"bad --batch value {text!r}", expected="positive integers, e.g. 1,8,32", found=text)
    return values


def _ints(text: str, flag: str, n: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(":"))
    except ValueError:
        values = ()
    if len(values) != n:
        raise InputError(f"malformed {flag} {text!r}", expected=":".join(["N"] * n), found=text)
    return values


def _prune_range(text: str | None) -> dict[str, float | None]:
    if not text:
        return {}
    lo, sep, hi = text.partition(":")
    try:
        return {"prune": float(lo), "prune_max": float(hi) if sep else None}
    except ValueError:
        raise InputError(f"bad --prune value {text!r}", expected="a ratio like 0.5 or a range like 0.3:0.7",
                         found=text) from None


def _dynamic_dims(specs: list[Any], texts: tuple[str, ...]) -> dict[str, Any] | None:
    """--input symbols and --dynamic-dims NAME:AXES as the recipe's export.dynamic_dims (None: neither given)."""
    dims: dict[str, dict[str, Any]] = {s.name: {str(a): sym for a, sym in s.symbols} for s in specs if s.symbols}
    for text in texts:
        name, sep, axes = text.partition(":")
        if not sep or not name.strip() or not axes.strip():
            raise InputError(f"malformed --dynamic-dims {text!r}", expected="NAME:AXES, e.g. x:2,3", found=text)
        for axis in (a.strip() for a in axes.split(",") if a.strip()):
            dims.setdefault(name.strip(), {}).setdefault(axis, None)
    return dims or None


def _save(path: str, write: Callable[[str], Any]) -> None:
    """Run ``write(path)``; an OS error becomes one clear OutputWriteError (exit 5), not a traceback."""
    from .errors import OutputWriteError

    try:
        write(path)
    except OSError as e:
        raise OutputWriteError(f"cannot write {path}", found=f"{type(e).__name__}: {e.strerror or e}",
                               hint="choose another path (its folder must be writable and not a file)") from e


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An .npz of ``arrays`` under their exact names (np.savez(**arrays) drops or rejects names such as
    'file' or 'allow_pickle')."""
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def _emit_report(report: dict[str, Any], as_json: bool) -> None:
    from .report import to_markdown

    click.echo(json_text(report) if as_json else to_markdown(report))


@main.command()
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), help=".safetensors or a .pt/.pth state dict.")
@click.option("--input", "input_specs", multiple=True, metavar="NAME:1x3x224x224[:float32]",
              help="An input: the forward() parameter it feeds, example shape and dtype (repeatable). Batch is "
                   "dynamic by default; a symbol makes another axis dynamic: x:Nx3xHxW with --dim H=224.")
@click.option("--dim", "dim_sizes", multiple=True, metavar="SYM=SIZE",
              help="Tracing size of a symbol used in --input (repeatable, or H=224,W=224).")
@click.option("--dynamic-dims", "dynamic_dims_text", multiple=True, metavar="NAME:AXES",
              help="Keep these axes of an input dynamic, e.g. x:2,3 (repeatable; sizes from the examples).")
@click.option("--static-sequence", is_flag=True,
              help="Keep the sequence length of token-id inputs fixed (it is dynamic by default).")
@click.option("--example-inputs", type=click.Path(dir_okay=False), help=".npz of example inputs (instead of --input).")
@click.option("--calib", help="Calibration/reference data: FILE.npz, a DIR of NAME.npy (arrays named like the "
              "inputs), an IMAGE_DIR (see --preprocess), or 'random' (explicit; the report says so).")
@click.option("--preprocess", "preprocess_text", metavar="SPEC",
              help="With --calib IMAGE_DIR: size=HxW,channels=rgb|bgr|gray,layout=nchw|nhwc,resize=crop|stretch,"
                   "scale=S,mean=a:b:c,std=a:b:c (defaults from the input shape; pixels scaled to [0,1]). "
                   "Stored in the manifest so the device can replay it.")
@click.option("--eval-data", type=click.Path(dir_okay=False), help=".npz with the inputs plus `labels`: adds accuracy.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="edgesdk-out", show_default=True)
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), help="YAML recipe; flags override it.")
@click.option("--dry-run", is_flag=True, help="Print the resolved recipe and exit.")
@click.option("--targets", help="Comma-separated targets: onnx, tflite, tensorrt, openvino (default onnx). A target "
              "whose tool is missing here is reported as skipped, with its install command.")
@click.option("--opset", type=int, help="ONNX opset (default 18).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "legacy"]), help="ONNX exporter (default auto).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim graph simplification.")
@click.option("--static-batch", is_flag=True, help="Fix the batch dimension instead of making it dynamic.")
@click.option("--tflite-nhwc", is_flag=True,
              help="TFLite artifacts take image inputs channels-last (N,H,W,C) instead of N,C,H,W; "
                   "verification feeds them transposed.")
@click.option("--output-name", "output_names", multiple=True, help="Names for the model outputs (repeatable).")
@click.option("--atol", type=float, help="Parity absolute tolerance (default per precision; fp32 1e-4).")
@click.option("--rtol", type=float, help="Parity relative tolerance (default per precision; fp32 1e-4).")
@click.option("--allow-mismatch", is_flag=True, help="Keep artifacts that fail parity (marked in the manifest).")
@click.option("--no-benchmark", is_flag=True, help="Skip benchmarking the artifacts.")
@click.option("--batch", "batch_text", help="Benchmark batch sizes, e.g. 1,8,32 (default 1).")
@click.option("--threads", type=int, help="Threads for the runtimes and the PyTorch baseline.")
@click.option("--backends", "backends_text", help="Verify and time each artifact on these backends, e.g. "
              "onnxruntime,openvino (default: the default backend of each format).")
@click.option("--warmup", type=int, help="Warm-up runs per benchmark (default 10).")
@click.option("--iterations", type=int, help="Timed runs per benchmark (default 100).")
@click.option("--quantize", type=click.Choice(["none", "fp16", "int8", "int8-dynamic"]),
              help="Quantize the ONNX artifact (int8 = static QDQ with --calib; int8-dynamic for transformers).")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), help="INT8 calibration.")
@click.option("--per-channel/--per-tensor", default=None, help="INT8 weight granularity (default per-channel).")
@click.option("--quant-target", type=click.Choice(["auto", "cpu", "tensorrt"]),
              help="Chooses activation/weight types: cpu = uint8/int8, tensorrt = symmetric int8.")
@click.option("--max-accuracy-drop", "--max-metric-drop", "max_accuracy_drop", type=float,
              help="Budget in task-metric points (needs labelled --eval-data): what INT8, a pruning range or a "
                   "pruned model may lose against the original.")
@click.option("--metric", "metric", metavar="NAME|FILE.py:FN",
              help="Task metric on --eval-data: top1 (default with class-id labels), top5, cer (CTC text), miou "
                   "(segmentation), multilabel_f1, mae, rmse, or your fn(outputs, data) -> float.")
@click.option("--min-cosine", type=float, help="Label-free INT8 budget: cosine vs PyTorch on the reference inputs.")
@click.option("--prune", "prune_text", metavar="RATIO|LOW:HIGH",
              help="Prune before export: a ratio in (0, 1), or a range searched under --max-accuracy-drop.")
@click.option("--prune-method", type=click.Choice(["channel", "unstructured", "2:4"]), help="Default channel.")
@click.option("--prune-target-macs", type=int, help="Prune channels until the model has at most this many MACs.")
@click.option("--prune-importance", type=click.Choice(["l1", "l2", "bn", "taylor"]), help="Default l1.")
@click.option("--prune-protect", multiple=True, metavar="MODULE", help="Module name never pruned (repeatable).")
@click.option("--no-recover", is_flag=True, help="Skip distillation after pruning.")
@click.option("--recover-steps", type=int, help="Distillation steps after pruning (default 1000).")
@click.option("--recover-lr", type=float, help="Distillation learning rate (default 3e-3).")
@click.option("--unsafe-unpickle-model", is_flag=True,
              help="DANGER: MODEL is a pickled nn.Module (.pt) to unpickle; this runs any code in the file. "
                   "Only for files you created yourself.")
@click.option("--trt-batch", metavar="MIN:OPT:MAX", help="TensorRT batch profile (default 1:largest --batch:64+).")
@click.option("--trt-workspace", type=int, metavar="MB", help="TensorRT builder workspace (default 1024 MB).")
@click.option("--trt-sparse", is_flag=True, help="Let TensorRT use 2:4 sparse kernels (after --prune-method 2:4).")
@click.option("--trt-dla-core", type=int, help="Build for this Jetson DLA core (GPU fallback on).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def compress(ctx: click.Context, model: str, weights: str | None, input_specs: tuple[str, ...],
             dim_sizes: tuple[str, ...], dynamic_dims_text: tuple[str, ...], static_sequence: bool, metric: str | None,
             example_inputs: str | None, calib: str | None, preprocess_text: str | None, eval_data: str | None,
             out_dir: str,
             recipe_file: str | None, dry_run: bool, targets: str | None, opset: int | None, exporter: str | None,
             no_simplify: bool, static_batch: bool, tflite_nhwc: bool, output_names: tuple[str, ...], atol: float | None,
             rtol: float | None, allow_mismatch: bool, no_benchmark: bool, batch_text: str | None,
             threads: int | None, warmup: int | None, iterations: int | None, quantize: str | None,
             calib_method: str | None, per_channel: bool | None, quant_target: str | None,
             max_accuracy_drop: float | None, min_cosine: float | None, prune_text: str | None,
             prune_method: str | None, prune_target_macs: int | None, prune_importance: str | None,
             prune_protect: tuple[str, ...], no_recover: bool, recover_steps: int | None,
             recover_lr: float | None, backends_text: str | None, trt_batch: str | None, trt_workspace: int | None,
             trt_sparse: bool, trt_dla_core: int | None, unsafe_unpickle_model: bool, as_json: bool) -> None:
    """Export MODEL (path/to/file.py:factory or package.module:factory), verify and benchmark it."""
    from .recipe import Recipe, apply_options

    from .intake import parse_dim_sizes, parse_input_spec

    recipe = Recipe.from_yaml(recipe_file) if recipe_file else Recipe()
    specs = [parse_input_spec(s, parse_dim_sizes(dim_sizes)) for s in input_specs]
    flags: dict[str, Any] = {
        "dynamic_dims": _dynamic_dims(specs, dynamic_dims_text), "metric": metric,
        "dynamic_sequence": False if static_sequence else None,
        "targets": tuple(t.strip() for t in targets.split(",")) if targets else None,
        "opset": opset, "exporter": exporter, "simplify": False if no_simplify else None,
        "dynamic_batch": False if static_batch else None,
        "tflite_channels_last": True if tflite_nhwc else None, "atol": atol, "rtol": rtol,
        "allow_mismatch": True if allow_mismatch else None, "benchmark": False if no_benchmark else None,
        "batches": _batches(batch_text) if batch_text else None, "threads": threads, "warmup": warmup,
        "iterations": iterations, "quantize": quantize, "calib_method": calib_method, "per_channel": per_channel,
        "quant_target": quant_target, "max_accuracy_drop": max_accuracy_drop, "min_cosine_budget": min_cosine,
        "prune_method": prune_method, "prune_target_macs": prune_target_macs, "prune_importance": prune_importance,
        "prune_protect": tuple(prune_protect) or None, "recover": False if no_recover else None,
        "recover_steps": recover_steps, "recover_lr": recover_lr, **_prune_range(prune_text),
        "backends": tuple(b.strip() for b in backends_text.split(",") if b.strip()) if backends_text else None,
        "trt_batch": _ints(trt_batch, "--trt-batch", 3) if trt_batch else None, "trt_workspace_mb": trt_workspace,
        "trt_sparse": True if trt_sparse else None, "trt_dla_core": trt_dla_core,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if prune_text:  # --prune 0.5 replaces a range from --recipe: its HIGH end goes too
        given["prune_max"] = flags.get("prune_max")
    recipe = apply_options(recipe, **given).validate()
    if not input_specs and not example_inputs:
        raise InputError("no model inputs given", expected="--input NAME:1x3x224x224[:dtype] or --example-inputs FILE.npz",
                         hint="e.g. --input x:1x1x8x8")
    if input_specs and example_inputs:
        raise InputError("give either --input or --example-inputs, not both")
    if dry_run:
        click.echo(json.dumps({"model": model, "weights": weights, "inputs": list(input_specs) or example_inputs,
                               "calib": calib, "eval_data": eval_data, "out": out_dir, "recipe": recipe.to_dict()},
                              indent=2))
        return

    from .intake import build_model, load_npz, load_weights, unpickle_model_unsafe

    say = _say(ctx)
    say(f"building {model}")
    if unsafe_unpickle_model:
        click.secho(f"WARNING: --unsafe-unpickle-model: unpickling {model} runs any code it contains", fg="red",
                    err=True)
        net = unpickle_model_unsafe(model)
    else:
        net = build_model(model)
    if weights:
        load_weights(net, weights)
    import torch

    if specs:  # token ids within the model's vocabulary, masks of ones (edgesdk.synthetic)
        from .synthetic import example_inputs

        examples = example_inputs(net, specs)
    else:
        examples = {k: torch.from_numpy(v) for k, v in load_npz(example_inputs, what="example inputs").items()}
    calib_data = calib  # a .npz, a directory of NAME.npy, or "random"; checked by the API
    eval_arrays = load_npz(eval_data, what="eval data") if eval_data else None
    if eval_arrays is not None and "labels" not in eval_arrays:
        say("eval data has no `labels` array: accuracy will not be measured")
    from .api import compress as run_compress

    result = run_compress(net, examples, recipe, out_dir=out_dir, calib_data=calib_data, eval_data=eval_arrays,
                          output_names=list(output_names) or None, progress=say, preprocess=preprocess_text)
    _emit_report(result.report, as_json)
    if not as_json and not ctx.obj.get("quiet"):
        files = sorted(p.name for p in Path(result.out_dir).iterdir() if p.is_file())
        click.echo(f"wrote {result.out_dir} ({', '.join(files)})")
    if not result.passed:
        click.secho("warning: some artifacts failed the parity gate and were kept because of --allow-mismatch",
                    fg="yellow", err=True)
        sys.exit(3)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--backend", default="auto", show_default=True, help="Force a backend (onnxruntime, ...).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--threads", type=int, help="Intra-op threads.")
@click.option("--batch", "batch_text", default="1", show_default=True, help="Batch sizes, e.g. 1,8,32.")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--iterations", type=int, default=100, show_default=True)
@click.option("--duration", "duration_s", type=float, help="Run for S seconds instead of --iterations.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write report.json here.")
@click.option("--rebuild", is_flag=True, help="Rebuild TensorRT engines made for another GPU/TensorRT from their ONNX.")
@click.option("--no-isolate", is_flag=True, help=_NO_ISOLATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def benchmark(ctx: click.Context, paths: tuple[str, ...], backend: str, device: str, threads: int | None,
              batch_text: str, warmup: int, iterations: int, duration_s: float | None, output: str | None,
              rebuild: bool, no_isolate: bool, as_json: bool) -> None:
    """Benchmark artifact files or artifact directories on this device."""
    from .atomic import write_json
    from .benchmarking import benchmark_paths

    if iterations < 1 or warmup < 0:
        raise InputError("--iterations must be >= 1 and --warmup >= 0", found=f"{iterations}, {warmup}")
    if duration_s is not None and ctx.get_parameter_source("iterations") is click.core.ParameterSource.COMMANDLINE:
        raise InputError("give either --iterations or --duration, not both", found=f"--iterations {iterations} "
                         f"--duration {duration_s}", hint="--duration S runs for S seconds; --iterations N runs N times")
    if threads is not None and threads < 1:
        raise InputError("--threads must be at least 1", found=str(threads), hint="leave it out to let the backend choose")
    if duration_s is not None and not (duration_s > 0 and duration_s != float("inf")):
        raise InputError("--duration must be a positive number of seconds", found=str(duration_s))
    batches = tuple(dict.fromkeys(_batches(batch_text)))  # 1,1,8 -> 1,8: one row per batch size
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
    failed = [r["artifact"] for r in report["results"]
              if ((r.get("device_check") or {}).get("parity") or {}).get("passed") is False]
    if failed:
        click.secho(f"error: parity failed on this device for {', '.join(dict.fromkeys(failed))} (see the table)",
                    fg="red", err=True)
        sys.exit(3)


@main.command("run")
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

    from .atomic import write_bytes
    from .intake import load_npz
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


@main.command("inspect")
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


@main.command()
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


from .cli_report import report as report_cmd  # noqa: E402  (show/merge/compare live in their own file)

main.add_command(report_cmd, "report")


if __name__ == "__main__":  # pragma: no cover
    main()
