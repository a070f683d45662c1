"""``edgesdk debug``: which layer of an artifact diverges from its reference, traced to the PyTorch module."""
from __future__ import annotations

import sys
from typing import Any

import click

from edgesdk.errors import BudgetError, EdgeSDKError, InputError, ParityError


@click.command("debug")
@click.argument("artifact", type=click.Path())
@click.option("--against", metavar="OTHER.onnx|pytorch",
              help="The file to compare with (default: the artifact's parent in its directory's manifest), or "
                   "pytorch: the model's module outputs through forward hooks (needs --model).")
@click.option("--model", "model_ref", metavar="FILE.py:factory",
              help="With --against pytorch: the model, as given to compress (a pruned model in the directory is "
                   "loaded onto it).")
@click.option("--weights", type=click.Path(dir_okay=False), help="With --model: .safetensors or a .pt/.pth state dict.")
@click.option("--data", type=click.Path(dir_okay=False),
              help=".npz of inputs named like the model's (default: the directory's reference.npz).")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "openvino"]),
              help="The runtime the artifact runs on (the reference runs on onnxruntime).")
@click.option("-O", "--backend-option", "backend_options", multiple=True, metavar="KEY=VALUE",
              help="A session option of the backend, e.g. -O precision=bf16 on openvino (repeatable).")
@click.option("--fix", is_flag=True, help="Keep the worst layers of a quantized artifact in float, re-quantize from "
              "its FP32 parent and re-check until the budget holds (compress's accuracy budget).")
@click.option("--calib", type=click.Path(dir_okay=False), help="With --fix: the calibration .npz compress was given.")
@click.option("--min-cosine", type=float, help="With --fix: cosine vs the model the artifact was made from.")
@click.option("--max-accuracy-drop", type=float,
              help="With --fix: metric points vs the FP32 parent, on the reference set's labelled eval data.")
@click.option("--fix-out", type=click.Path(dir_okay=False), help="With --fix: the file to write "
              "(default: <stem>.fixed.onnx beside the artifact; a file in the artifact's directory is parity-checked "
              "and listed in its manifest).")
@click.option("--max-batches", type=int, default=8, show_default=True, help="Input batches to run.")
@click.option("--top", type=int, default=15, show_default=True, help="Layers shown in the table.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (every layer, worst first).")
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False),
              help="Write the report to FILE: .html (the per-layer chart and the module tree), .md, else JSON.")
@click.pass_context
def debug(ctx: click.Context, artifact: str, **o: Any) -> None:
    """Run ARTIFACT (an ONNX or TFLite file) and its reference on the same inputs with every intermediate tensor
    exposed, match the tensors (and the PyTorch modules that made them), and rank the layers by the noise each
    adds: cosine, SQNR, max error, SQNR lost against its inputs, own quantization noise; the first jump is named.
    --fix keeps the worst layers of an INT8 file in float until a budget holds and lists the fixed file, with
    each layer kept in float and its SQNR, in the directory's manifest. Exit 4: the budget was not met; 3: it
    was, but the fixed file fails the parity gate."""
    from edgesdk.atomic import check_output_path, json_text, write_json, write_text
    from edgesdk.debug import debug as run_debug, to_markdown
    from edgesdk.debug.html import to_html

    from .common import _save, _say, parse_backend_options

    fixing = o["fix"]
    try:
        if o["out_file"]:
            check_output_path(o["out_file"])
        fix_flags = [f for f in ("calib", "min_cosine", "max_accuracy_drop", "fix_out") if o[f] is not None]
        if fix_flags and not fixing:
            raise InputError(f"--{fix_flags[0].replace('_', '-')} is for --fix", hint="add --fix, or leave it out")
        not_for_fix = [f for f, given in (("against", o["against"]), ("model", o["model_ref"]),
                                          ("weights", o["weights"]), ("data", o["data"]),
                                          ("backend-option", o["backend_options"]),
                                          ("backend", o["backend"] != "onnxruntime")) if given]
        if fixing and not_for_fix:
            raise InputError(f"--{not_for_fix[0]} is not used with --fix", hint="--fix re-quantizes from the "
                             "FP32 parent and checks on the directory's reference set, on onnxruntime")
        result = None
        if fixing:
            from edgesdk.debug.fix import fix

            if not o["calib"]:
                raise InputError("--fix needs the calibration data", expected="--calib FILE.npz",
                                 hint="the --calib file compress was given")
            say = _say(ctx)
            result = fix(artifact, calib=o["calib"], out=o["fix_out"], min_cosine=o["min_cosine"],
                         max_accuracy_drop=o["max_accuracy_drop"], say=say)
            report = result.report
        else:
            report = run_debug(artifact, against=o["against"], data=o["data"], max_batches=o["max_batches"],
                               model=o["model_ref"], weights=o["weights"], backend=o["backend"],
                               options=parse_backend_options(o["backend_options"]))
        data = report.to_dict() if result is None else {"fix": result.to_dict(), **report.to_dict()}
        if o["out_file"]:
            suffix = o["out_file"].lower().rsplit(".", 1)[-1]
            view = {"html": to_html, "htm": to_html, "md": lambda r: to_markdown(r, top=len(r.layers))}.get(suffix)
            _save(o["out_file"], (lambda p: write_json(p, data)) if view is None else
                  (lambda p: write_text(p, view(report))))
    except EdgeSDKError as e:
        if ctx.find_root().obj.get("debug"):
            raise
        click.secho(f"error: {e.format()}", fg="red", err=True)
        sys.exit(e.exit_code)
    if o["as_json"]:
        click.echo(json_text(data))
    else:
        if result is not None:
            from edgesdk.debug.fix import fix_markdown

            click.echo(fix_markdown(result))
        click.echo(to_markdown(report, top=o["top"]))
    if result is not None and not result.met:
        sys.exit(BudgetError.exit_code)
    if result is not None and result.entry is not None and result.entry["status"] == "parity_mismatch":
        sys.exit(ParityError.exit_code)  # the budget held, the parity gate's tolerance did not
