"""``edgesdk check``: a trial export per target before any compress; which targets convert, what blocks them
(by module path) and how much of the graph each runtime accelerates. Exit 0 when every asked target is fully
covered, 1 when something falls back or fails, 2 for bad input."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgesdk.errors import EdgeSDKError


def _outputs(out: str) -> tuple[Path, Path]:
    """(the JSON file, the Markdown file) for ``-o FILE``: FILE.md writes Markdown there and JSON beside it
    (FILE.json); any other name writes JSON there and Markdown beside it (same stem, .md)."""
    p = Path(out)
    if p.suffix.lower() == ".md":
        return p.with_suffix(".json"), p
    return p, p.with_suffix(".md") if p.suffix else Path(f"{p}.md")


@click.command("check")
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), help=".safetensors or a .pt/.pth state dict.")
@click.option("--input", "input_specs", multiple=True, metavar="NAME:1x3x224x224[:float32]",
              help="An input, as for compress (repeatable).")
@click.option("--dim", "dim_sizes", multiple=True, metavar="SYM=SIZE", help="Tracing size of a symbol in --input.")
@click.option("--example-inputs", type=click.Path(dir_okay=False), help=".npz of example inputs (instead of --input).")
@click.option("--targets", default="onnx,tflite,openvino,tensorrt", show_default=True,
              metavar="onnx,tflite,openvino,tensorrt", help="The targets to try.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset of the trial export.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "legacy"]), default="auto", show_default=True,
              help="ONNX exporter (auto: dynamo, then legacy).")
@click.option("--static-batch", is_flag=True, help="Try the export with a fixed batch (default: dynamic).")
@click.option("--providers", metavar="CUDAExecutionProvider,CPUExecutionProvider",
              help="onnxruntime execution providers, preferred first (default: those installed here).")
@click.option("--openvino-device", "openvino_devices", multiple=True, metavar="CPU",
              help="OpenVINO device to query (repeatable; default: every device OpenVINO sees).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False),
              help="Write the JSON report to FILE and the Markdown beside it (FILE.md: the other way round).")
@click.pass_context
def check(ctx: click.Context, model: str, **o: Any) -> None:
    """Try MODEL (path/to/file.py:factory) on every target before compressing it: does it convert, which module
    blocks it (path, class, file:line) and how much of the graph the runtime accelerates (onnxruntime's EP
    assignment, XNNPACK delegation, OpenVINO query_model, TensorRT's parser or its static op table)."""
    ctx.ensure_object(dict)
    try:
        code = _run(ctx, model, o)
    except EdgeSDKError as e:
        if ctx.find_root().obj.get("debug"):
            raise
        click.secho(f"error: {e.format()}", fg="red", err=True)
        sys.exit(e.exit_code)
    sys.exit(code)


def _run(ctx: click.Context, model: str, o: dict[str, Any]) -> int:
    from edgesdk.atomic import json_text, write_json, write_text
    from edgesdk.check import check as run_check, parse_targets
    from edgesdk.intake import ModelSource

    from .common import _save, _say

    targets = parse_targets(o["targets"])  # a bad name is refused before the model is built
    source = ModelSource(model, weights=o["weights"], inputs=tuple(o["input_specs"]), dims=tuple(o["dim_sizes"]),
                         example_inputs=o["example_inputs"])
    source.check()
    if o["out_file"]:
        from edgesdk.atomic import check_output_path

        for p in _outputs(o["out_file"]):
            check_output_path(p)
    providers = [p.strip() for p in o["providers"].split(",") if p.strip()] if o["providers"] else None
    root = ctx.find_root()
    root.obj.setdefault("quiet", False)
    report = run_check(source, targets=targets, opset=o["opset"], exporter=o["exporter"],
                       dynamic_batch=not o["static_batch"], providers=providers,
                       openvino_devices=list(o["openvino_devices"]) or None, progress=_say(ctx))
    data = report.to_dict()
    if o["out_file"]:
        json_path, md_path = _outputs(o["out_file"])
        _save(str(json_path), lambda p: write_json(p, data))
        _save(str(md_path), lambda p: write_text(p, report.to_markdown()))
    click.echo(json_text(data) if o["as_json"] else report.to_markdown())
    return report.exit_code
