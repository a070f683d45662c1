"""TensorRT stages: engines built from the ONNX artifacts (FP32, FP16, INT8 from a symmetric QDQ ONNX).
Without TensorRT on this machine each is reported as skipped with its install command."""
from __future__ import annotations

from typing import Any

from edgesdk.pipeline import Artifact, StageContext, register_stage

from .common import calib_inputs, target_failed


_ENGINE_SUFFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}


def _engine_settings(ctx: StageContext, onnx_art: Artifact, precision: str) -> Any:
    from edgesdk.runtimes.tensorrt_build import EngineSettings, compute_profiles

    t, b = ctx.recipe.tensorrt, ctx.recipe.benchmark
    opt = max(b.batches)
    batch = tuple(t.batch) or (1, opt, max(opt, ctx.recipe.parity.batch_size, 64))
    examples = {k: tuple(v.shape) for k, v in ctx.example_inputs.items()}
    shapes = {k: tuple(tuple(s) for s in v) for k, v in (t.shapes or {}).items()}
    profiles = compute_profiles(onnx_art.inputs, batch=batch, example_shapes=examples, overrides=shapes)
    return EngineSettings(precision=precision, profiles=profiles, workspace_mb=t.workspace_mb,
                          sparse_weights=t.sparse_weights, dla_core=t.dla_core,
                          optimization_level=t.optimization_level, version_compatible=t.version_compatible,
                          hardware_compatibility=t.hardware_compatibility)


def _engine(ctx: StageContext, onnx_art: Artifact, precision: str, target: str) -> Artifact | None:
    from edgesdk.errors import EdgeSDKError

    from edgesdk.runtimes.tensorrt_build import build_engine, record_path, timing_cache_path

    variant = ".pruned" if onnx_art.meta.get("reference", "pytorch") != "pytorch" else ""
    path = ctx.workdir / f"{onnx_art.path.name.split('.')[0]}{variant}{_ENGINE_SUFFIX[precision]}.engine"
    ctx.say(f"building TensorRT {precision} engine {path.name} from {onnx_art.name}")
    try:
        info = build_engine(onnx_art.path, path, _engine_settings(ctx, onnx_art, precision))
    except EdgeSDKError as e:  # no GPU, an op TensorRT cannot parse...: this target fails, the others go on
        target_failed(ctx, target, "failed", e)
        return None
    from edgesdk.atomic import sha256_file

    meta = {"builder": f"tensorrt {info.record['tensorrt']}", "engine": info.record,
            "build_time_s": round(info.build_time_s, 3), "warnings": info.warnings,
            "reference": onnx_art.meta.get("reference", "pytorch"),
            "files": {p.name: sha256_file(p) for p in (record_path(path), timing_cache_path(path)) if p.is_file()}}
    ctx.target(target, "ok")
    return Artifact(name=path.name, path=path, format="engine", precision=precision, parent=onnx_art.name,
                    meta=meta)


def _tensorrt_ready(ctx: StageContext, target: str) -> bool:
    from edgesdk.errors import BackendUnavailableError

    from edgesdk.runtimes.tensorrt_build import available
    from edgesdk.runtimes.registry import install_hint

    if available():
        return True
    target_failed(ctx, target, "skipped", BackendUnavailableError("TensorRT is not installed on this machine"),
                  install_hint("tensorrt"))
    return False


def _symmetric_int8(made: list[Artifact], ctx: StageContext) -> Artifact | None:
    """What the INT8 engine is built from: the latest symmetric-int8 QDQ ONNX (fp16: the float ONNX)."""
    if ctx.recipe.quantize.mode == "fp16":
        return next((a for a in reversed(made) if a.format == "onnx" and a.precision == "fp32"), None)
    return next((a for a in reversed(made) if a.format == "onnx" and a.precision == "int8"
                 and (a.meta.get("quantization") or {}).get("symmetric_activations")), None)


@register_stage("export_tensorrt", text="building a TensorRT engine", takes="onnx:fp32", yields="engine")
def export_tensorrt_stage(parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """A float32 engine from the latest float32 ONNX artifact (pruned when a prune stage ran)."""
    if parent is None or not _tensorrt_ready(ctx, "tensorrt"):
        return None
    return _engine(ctx, parent, "fp32", "tensorrt")


@register_stage("quantize_onnx_trt", text="quantizing the ONNX model for TensorRT (symmetric int8)",
                takes="onnx:fp32", yields="onnx")
def quantize_onnx_trt_stage(parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """The symmetric int8 QDQ ONNX TensorRT builds INT8 engines from, when the CPU recipe made uint8 ones."""
    from edgesdk.compress.quantize import quantize_onnx

    if parent is None or not _tensorrt_ready(ctx, "tensorrt-int8"):
        return None
    q = ctx.recipe.quantize
    path = ctx.workdir / f"{parent.path.stem}.int8.trt.onnx"
    info = quantize_onnx(parent.path, path, mode="int8", calib=calib_inputs(ctx), calib_method=q.calib_method,
                         per_channel=q.per_channel, target="tensorrt", nodes_to_exclude=q.exclude)
    meta = {"quantization": info.to_dict(), "calibration": ctx.calib_source, "warnings": list(info.warnings),
            "reference": parent.meta.get("reference", "pytorch"), "target": "tensorrt-int8"}
    return Artifact(name=path.name, path=path, format="onnx", precision="int8", parent=parent.name, meta=meta)


@register_stage("quantize_tensorrt", text="building a quantized TensorRT engine", takes="onnx", yields="engine",
                picker=_symmetric_int8)
def quantize_tensorrt_stage(parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """fp16: the float ONNX built with FP16 kernels; int8: explicit quantization from the symmetric QDQ ONNX."""
    from edgesdk.errors import InputError

    mode = ctx.recipe.quantize.mode
    target = f"tensorrt-{mode}"
    if mode == "int8-dynamic":
        target_failed(ctx, target, "skipped", InputError(
            "dynamic INT8 is an onnxruntime CPU technique; TensorRT has no equivalent",
            hint="use --quantize int8 (static, calibrated) or fp16 for TensorRT"))
        return None
    if parent is None or not _tensorrt_ready(ctx, target):
        return None
    return _engine(ctx, parent, "fp16" if mode == "fp16" else "int8", target)
