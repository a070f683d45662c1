"""TFLite stages (litert-torch): the float TFLite, and the quantized one the recipe's mode asks for. A
conversion that fails is reported as a target not delivered; the other targets go on."""
from __future__ import annotations

from edgesdk.pipeline import Artifact, StageContext, register_stage

from .common import CALIB_READS, MODEL_READS, PRECISION, SUFFIX, axes_meta, calib_inputs, target_failed


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
    meta = {"exporter": "litert-torch", "target": target, "quantization": info.quantization,
            "warnings": info.warnings,
            "export_time_s": round(info.export_time_s, 3), "reference": reference,
            "dynamic_axes": axes_meta(info.dynamic_axes),
            "calibration": ctx.calib_source if precision == "int8" else None}
    if info.input_layout:
        meta["input_layout"] = info.input_layout  # the SDK transposes reference data for these inputs
    ctx.target(target, "ok")
    return Artifact(name=path.name, path=path, format="tflite", precision=PRECISION.get(precision, precision),
                    parent=parent.name if parent else "pytorch", meta=meta)


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
                key_with=_float_file_key)
def quantize_tflite_stage(parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """fp16, dynamic-range int8 or full-integer int8 TFLite, following the recipe's quantize mode."""
    return _tflite(ctx, parent, ctx.recipe.quantize.mode)
