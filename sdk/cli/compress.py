"""``edgesdk compress``: flags build a recipe (over ``--recipe FILE.yaml``), the API runs it."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgesdk.errors import InputError
from edgesdk.recipe import (CALIB_METHODS, EXPORTERS, PRUNE_IMPORTANCES, PRUNE_METHODS, QUANT_MODES, QUANT_TARGETS,
                            TRAIN_DEVICES)

from .common import _batches, _emit_report, _say
from .llm_compress import llm_options, run_llm, wants_llm


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


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _duration(text: str | None, flag: str) -> float | None:
    """Seconds in "90", "90s", "2m", "1.5h" (None: not given)."""
    if text is None:
        return None
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", text.lower())
    if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
        raise InputError(f"malformed {flag} {text!r}", expected="a positive duration: 90, 90s, 2m or 1.5h",
                         found=text)
    return float(m.group(1)) * _UNITS[m.group(2)]


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


@click.command()
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
@click.option("--exporter", type=click.Choice(EXPORTERS), help="ONNX exporter (default auto).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim graph simplification.")
@click.option("--static-batch", is_flag=True, help="Fix the batch dimension instead of making it dynamic.")
@click.option("--tflite-nhwc", is_flag=True,
              help="TFLite artifacts take image inputs channels-last (N,H,W,C) instead of N,C,H,W; "
                   "verification feeds them transposed.")
@click.option("--tflite-int8-io", is_flag=True,
              help="Full-integer INT8 TFLite keeps int8 inputs/outputs (scale and zero point in the file) for apps "
                   "that feed int8 themselves; by default it takes float32 and quantizes inside the graph.")
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
@click.option("--quantize", metavar="|".join(QUANT_MODES) + "|LLM:fp32,fp16,int4,int8",
              help="Quantize the ONNX artifact (int8 = static QDQ with --calib; int8-dynamic for transformers). "
                   "For a language model: a comma list of fp32, fp16 (builder route), int4, int8 (weight-only "
                   "MatMulNBits; fp32 is always made as the reference).")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), help="INT8 calibration.")
@click.option("--per-channel/--per-tensor", default=None, help="INT8 weight granularity (default per-channel).")
@click.option("--quant-target", type=click.Choice(QUANT_TARGETS),
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
@click.option("--prune-method", type=click.Choice(PRUNE_METHODS), help="Default channel.")
@click.option("--prune-target-macs", type=int, help="Prune channels until the model has at most this many MACs.")
@click.option("--prune-importance", type=click.Choice(PRUNE_IMPORTANCES), help="Default l1.")
@click.option("--prune-protect", multiple=True, metavar="MODULE", help="Module name never pruned (repeatable).")
@click.option("--no-recover", is_flag=True, help="Skip distillation after pruning.")
@click.option("--recover-steps", type=int,
              help="Distillation steps after pruning (default: as many as --recover-time allows, at most 1000).")
@click.option("--recover-time", "recover_time_text", metavar="DURATION",
              help="Time budget of the recovery, e.g. 2m, 90s or 90 (default 2m; none with --recover-steps alone). "
                   "The first steps are timed and the rest planned to fit.")
@click.option("--train-device", type=click.Choice(TRAIN_DEVICES),
              help="Where recovery and Taylor importance train (default auto: CUDA when torch sees one).")
@click.option("--recover-lr", type=float, help="Distillation learning rate (default 3e-3).")
@click.option("--unsafe-unpickle-model", is_flag=True,
              help="DANGER: MODEL is a pickled nn.Module (.pt) to unpickle; this runs any code in the file. "
                   "Only for files you created yourself.")
@click.option("--trt-batch", metavar="MIN:OPT:MAX", help="TensorRT batch profile (default 1:largest --batch:64+).")
@click.option("--trt-workspace", type=int, metavar="MB", help="TensorRT builder workspace (default 1024 MB).")
@click.option("--trt-sparse", is_flag=True, help="Let TensorRT use 2:4 sparse kernels (after --prune-method 2:4).")
@click.option("--trt-dla-core", type=int, help="Build for this Jetson DLA core (GPU fallback on).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Stage cache shared by runs (and processes): an export, pruned model or quantization made "
                   "before from the same model, data and settings is reused instead of recomputed (off by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@llm_options
@click.pass_context
def compress(ctx: click.Context, model: str, **o: Any) -> None:
    """Export MODEL (path/to/file.py:factory or package.module:factory), verify and benchmark it. A causal
    language model (a Hugging Face folder ./my-llm/, or --task text-generation) becomes KV-cache ONNX artifacts
    (fp32, int4, int8) checked on real text."""
    llm, built = wants_llm(model, o)
    if llm:
        return run_llm(ctx, model, o, built)
    from edgesdk.intake import parse_dim_sizes, parse_input_spec

    specs = [parse_input_spec(s, parse_dim_sizes(o["dim_sizes"])) for s in o["input_specs"]]
    recipe = _recipe(o, specs)
    if not specs and not o["example_inputs"]:
        raise InputError("no model inputs given", expected="--input NAME:1x3x224x224[:dtype] or --example-inputs FILE.npz",
                         hint="e.g. --input x:1x1x8x8")
    if specs and o["example_inputs"]:
        raise InputError("give either --input or --example-inputs, not both")
    if o["dry_run"]:
        click.echo(json.dumps({"model": model, "weights": o["weights"], "inputs": list(o["input_specs"]) or
                               o["example_inputs"], "calib": o["calib"], "eval_data": o["eval_data"],
                               "out": o["out_dir"], "recipe": recipe.to_dict()}, indent=2))
        return
    say = _say(ctx)
    net = _model(model, o, say)
    examples = _examples(net, specs, o["example_inputs"])
    from edgesdk.intake import load_npz

    eval_arrays = load_npz(o["eval_data"], what="eval data") if o["eval_data"] else None
    if eval_arrays is not None and "labels" not in eval_arrays and not o["metric"]:
        say("eval data has no `labels` array: the task metric will not be measured")
    from edgesdk.api import compress as run_compress

    # --calib: a .npz, a directory of NAME.npy or images, or "random"; checked by the API
    import time

    t0 = time.perf_counter()
    result = run_compress(net, examples, recipe, out_dir=o["out_dir"], calib_data=o["calib"], eval_data=eval_arrays,
                          output_names=list(o["output_names"]) or None, progress=say,
                          preprocess=o["preprocess_text"], cache_dir=o["cache_dir"])
    _emit_report(result.report, o["as_json"])
    if not o["as_json"] and not ctx.obj.get("quiet"):
        files = sorted(p.name for p in Path(result.out_dir).iterdir() if p.is_file())
        click.echo(f"wrote {result.out_dir} ({', '.join(files)}) in {time.perf_counter() - t0:.1f} s")
    if not result.passed:
        click.secho("warning: some artifacts failed the parity gate and were kept because of --allow-mismatch",
                    fg="yellow", err=True)
        sys.exit(3)


def _split(text: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def _recipe(o: dict[str, Any], specs: list[Any]) -> Any:
    """The recipe: ``--recipe FILE.yaml`` (or the defaults) with every given flag over it."""
    from edgesdk.recipe import Recipe, apply_options

    recipe = Recipe.from_yaml(o["recipe_file"]) if o["recipe_file"] else Recipe()
    off = {"simplify": "no_simplify", "dynamic_batch": "static_batch", "dynamic_sequence": "static_sequence",
           "benchmark": "no_benchmark", "recover": "no_recover"}  # --no-X flags: False when given
    on = {"tflite_channels_last": "tflite_nhwc", "tflite_int8_io": "tflite_int8_io", "allow_mismatch": "allow_mismatch",
          "trt_sparse": "trt_sparse"}
    same = ("opset", "exporter", "atol", "rtol", "threads", "warmup", "iterations", "quantize", "calib_method",
            "per_channel", "quant_target", "max_accuracy_drop", "prune_method", "prune_target_macs",
            "prune_importance", "recover_steps", "recover_lr", "trt_dla_core", "metric", "train_device")
    flags: dict[str, Any] = {k: o[k] for k in same}
    flags.update({k: False if o[v] else None for k, v in off.items()})
    flags.update({k: True if o[v] else None for k, v in on.items()})
    flags.update(dynamic_dims=_dynamic_dims(specs, o["dynamic_dims_text"]), targets=_split(o["targets"]),
                 batches=_batches(o["batch_text"]) if o["batch_text"] else None, min_cosine=o["min_cosine"],
                 prune_protect=tuple(o["prune_protect"]) or None, backends=_split(o["backends_text"]),
                 trt_batch=_ints(o["trt_batch"], "--trt-batch", 3) if o["trt_batch"] else None,
                 trt_workspace_mb=o["trt_workspace"], recover_time=_duration(o["recover_time_text"], "--recover-time"),
                 **_prune_range(o["prune_text"]))
    given = {k: v for k, v in flags.items() if v is not None}
    if o["prune_text"]:  # --prune 0.5 replaces a range from --recipe: its HIGH end goes too
        given["prune_max"] = flags.get("prune_max")
    return apply_options(recipe, **given).validate()


def _model(ref: str, o: dict[str, Any], say: Any) -> Any:
    from edgesdk.intake import build_model, load_weights, unpickle_model_unsafe

    say(f"building {ref}")
    if o["unsafe_unpickle_model"]:
        click.secho(f"WARNING: --unsafe-unpickle-model: unpickling {ref} runs any code it contains", fg="red",
                    err=True)
        net = unpickle_model_unsafe(ref)
    else:
        net = build_model(ref)
    if o["weights"]:
        load_weights(net, o["weights"])
    return net


def _examples(net: Any, specs: list[Any], npz: str | None) -> dict[str, Any]:
    """From --input specs: token ids within the model's vocabulary, masks of ones (edgesdk.synthetic);
    else the arrays of --example-inputs."""
    import torch

    from edgesdk.intake import load_npz
    from edgesdk.synthetic import example_inputs

    if specs:
        return example_inputs(net, specs)
    return {k: torch.from_numpy(v) for k, v in load_npz(npz, what="example inputs").items()}
