"""TFLite stages (litert-torch): the float TFLite, and the quantized one the recipe's mode asks for. A
conversion that fails is reported as a target not delivered; the other targets go on."""
from __future__ import annotations

from pathlib import Path

from edgesdk.pipeline import Artifact, StageContext, register_stage

from .common import CALIB_READS, MODEL_READS, PRECISION, SUFFIX, axes_meta, budget_key, calib_inputs, target_failed


def _tflite(ctx: StageContext, parent: Artifact | None, precision: str) -> Artifact | None:
    from edgesdk.errors import BackendUnavailableError, ExportError

    from edgesdk.compress.export_tflite import INSTALL, available, export_tflite

    target = "tflite" if precision == "fp32" else f"tflite-{precision}"
    if not available():
        target_failed(ctx, target, "skipped", BackendUnavailableError("litert-torch is not installed"), INSTALL)
        return None
    if precision != "fp32" and ctx.targets.get("tflite", {}).get("status") == "failed":
        target_failed(ctx, target, "skipped", ExportError("the float TFLite conversion failed"))
        return None
    model, reference, variant = ctx.pytorch(parent)
    suffix = "" if precision == "fp32" else f".{SUFFIX[precision]}"
    path = ctx.workdir / f"model{variant}{suffix}.tflite"
    calib = calib_inputs(ctx)
    made = ctx.workdir / f"model{variant}.tflite"  # the float file of this model, made by export_tflite
    float_file = made if precision != "fp32" and ctx.targets.get("tflite", {}).get("status") == "ok" \
        and made.is_file() else None
    try:
        info = export_tflite(model, ctx.example_inputs, path, precision=precision, calib=calib,
                             output_names=ctx.output_names, dynamic_batch=ctx.recipe.export.dynamic_batch,
                             channels_last=ctx.recipe.export.tflite_channels_last, dynamic_axes=ctx.dynamic_axes,
                             int8_io=ctx.recipe.export.tflite_int8_io, float_file=float_file)
    except ExportError as e:  # one target failing must not abort the others
        target_failed(ctx, target, "failed", e)
        return None
    budget_meta = _budgeted(ctx, info, path, float_file) if precision != "fp32" else None
    meta = {"exporter": "litert-torch", "target": target, "quantization": info.quantization,
            "warnings": info.warnings,
            "export_time_s": round(info.export_time_s, 3), "reference": reference,
            "dynamic_axes": axes_meta(info.dynamic_axes),
            "calibration": ctx.calib_source if precision == "int8" else None}
    if info.input_layout:
        meta["input_layout"] = info.input_layout  # the SDK transposes reference data for these inputs
    if budget_meta is not None:
        meta["budget"] = budget_meta
    ctx.target(target, "ok")
    art = Artifact(name=path.name, path=path, format="tflite", precision=PRECISION.get(precision, precision),
                   parent=parent.name if parent else "pytorch", meta=meta)
    if budget_meta is not None and not budget_meta["met"]:
        art.status = "budget_not_met"
    return art


def _budgeted(ctx: StageContext, info: object, path: Path, float_file: Path | None) -> dict | None:
    """Full-integer INT8 under the run's accuracy budget (--max-accuracy-drop / --min-cosine), as the ONNX INT8
    artifact is: the ops INT8 hurts most stay float32 until it holds (AccuracyBudget.tflite, ranked by the
    per-op comparison against the float file). It re-quantizes that float file, so a file made without one
    (the float conversion failed) or by litert-torch's PT2E fallback is left as made, with a warning."""
    if ctx.budget is None:
        return None
    q = info.quantization
    if ctx.recipe.quantize.mode != "int8":
        info.warnings.append(f"the accuracy budget was not applied to this file: it holds full-integer INT8 "
                             f"TFLite only, this is {ctx.recipe.quantize.mode} (the parity gate judges it)")
        return None
    if float_file is None or q.get("route") != "ai-edge-quantizer":
        why = "no float TFLite file to re-quantize" if float_file is None else f"it was made by {q.get('route')}"
        info.warnings.append(f"the accuracy budget was not applied to this file: {why} (only ai-edge-quantizer's "
                             "route re-quantizes with ops kept in float)")
        return None
    record, budget_meta = ctx.budget.tflite(
        float_file, path, list(ctx.example_inputs), list(ctx.output_names), int8_io=ctx.recipe.export.tflite_int8_io,
        layout=info.input_layout)
    info.quantization = {**q, **record}
    return budget_meta


def _float_file_key(parent: Artifact | None, ctx: StageContext) -> dict:
    """The quantized TFLite is converted from the float file export_tflite made when there is one, and skipped
    when that conversion failed: both are part of what it depends on."""
    variant = ctx.pytorch(parent)[2]
    made = ctx.workdir / f"model{variant}.tflite"
    status = ctx.targets.get("tflite", {}).get("status")
    used = status == "ok" and made.is_file()
    return {"tflite_status": status, "float_file": ctx.cache.file_digest(made) if used else None}


@register_stage("export_tflite", text="exporting to TFLite", takes="model", yields="tflite",
                reads=("export", *MODEL_READS))
def export_tflite_stage(parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """Float32 TFLite of the current model (pruned when a prune stage ran); a failure is reported, not raised."""
    return _tflite(ctx, parent, "fp32")


@register_stage("quantize_tflite", text="quantizing for TFLite", takes="model", yields="tflite",
                compare_with="export_tflite", reads=("export", "quantize", *MODEL_READS, *CALIB_READS),
                key_with=lambda parent, ctx: {**_float_file_key(parent, ctx), "budget": budget_key(parent, ctx)})
def quantize_tflite_stage(parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """fp16, dynamic-range int8 or full-integer int8 TFLite, following the recipe's quantize mode."""
    return _tflite(ctx, parent, ctx.recipe.quantize.mode)
