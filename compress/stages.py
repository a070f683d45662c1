"""Stage adapters: wrap the compress functions as pipeline stages (registered by name)."""
from __future__ import annotations

from typing import Any

from edgesdk.pipeline import Artifact, StageContext, register_stage
from edgesdk.progress import counter

from .export_onnx import export_onnx


@register_stage("export_onnx")
def export_onnx_stage(ctx: StageContext, parent: Artifact | None) -> Artifact:
    """Export the model to ``model.onnx`` in the staging dir; exporter facts go to ``meta``."""
    cfg = ctx.recipe.export
    path = ctx.workdir / f"model{ctx.variant}.onnx"
    info = export_onnx(ctx.model, ctx.example_inputs, path, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
                       simplify=cfg.simplify, exporter=cfg.exporter, output_names=ctx.output_names,
                       dynamic_axes=ctx.dynamic_axes, auto_axes=ctx.auto_axes)
    meta = {
        "exporter": info.exporter_used,
        "opset_requested": info.opset_requested,
        "opset": info.opset_written,
        "fallback_reason": info.fallback_reason,
        "simplified": info.simplified,
        "simplify_error": info.simplify_error,
        "warnings": list(info.warnings),
        "export_time_s": round(info.export_time_s, 3),
        "reference": ctx.reference,
        "dynamic_axes": {n: {str(a): sym for a, sym in ax.items()} for n, ax in info.dynamic_axes.items()},
    }
    meta.update(_size_of(ctx.model, ctx.example_inputs))
    return Artifact(name=path.name, path=path, format="onnx", precision="fp32",
                    parent=parent.name if parent else "pytorch", meta=meta)


def _size_of(model, example_inputs) -> dict:
    """Parameters and MACs of the PyTorch model behind an export (MACs need torch-pruning's counter)."""
    try:
        from .prune import count

        macs, params = count(model, example_inputs)
    except ImportError:
        macs, params = None, sum(p.numel() for p in model.parameters())
    return {"params": params, "macs": macs}


def _calib_inputs(ctx: StageContext) -> dict[str, Any] | None:
    """The calibration arrays the quantizers take: model inputs only (no labels), capped at calib_samples."""
    if not ctx.calib:
        return None
    n = ctx.recipe.quantize.calib_samples
    return {k: ctx.calib[k][:n] for k in ctx.example_inputs}


def _prune_and_recover(ctx: StageContext, ratio: float | None) -> tuple[Any, dict[str, Any]]:
    import copy

    from .prune import UNSTRUCTURED_NOTE, prune_model
    from .recover import recover

    p = ctx.recipe.prune
    teacher = ctx.models["pytorch"]
    student = copy.deepcopy(teacher).eval()
    # a keyword-call adapter holds the user's model as `model`: its module names gain that prefix
    prefix = "model." if getattr(student, "edgesdk_keyword_call", False) else ""
    info = prune_model(student, ctx.example_inputs, ratio=ratio, method=p.method, importance=p.importance,
                       target_macs=p.target_macs, protect=tuple(prefix + n for n in p.protect), round_to=p.round_to,
                       global_pruning=p.global_pruning, data=ctx.calib)
    evaluate = ctx.evaluate
    meta: dict[str, Any] = {"pruning": info.to_dict(), "params": info.params_after, "macs": info.macs_after,
                            "accuracy_before_recovery": evaluate(student) if evaluate else None}
    hook = ctx.recovery_hook
    unchanged = p.method == "channel" and info.params_after == info.params_before
    if unchanged:  # recovery would only move an unpruned model away from the original
        meta["recovery"] = {"method": "none", "reason": "nothing was pruned"}
        meta["warnings"] = [n for n in info.notes if n.startswith("nothing was pruned")] or [
            "nothing was pruned; the pruned artifacts are the original model"]
    elif p.recover and p.method == "channel" and (p.recover_steps > 0 or hook is not None):
        ctx.say(f"recovering the pruned model ({'your hook' if hook else f'{p.recover_steps} distillation steps'})")
        meta["recovery"] = recover(student, teacher, dict(ctx.calib or {}), list(ctx.example_inputs),
                                   steps=p.recover_steps, lr=p.recover_lr, hook=hook, seed=ctx.recipe.parity.seed,
                                   on_progress=counter(ctx.say))
    elif p.method != "channel":
        meta["recovery"] = {"method": "none", "reason": "recovery would refill the zeroed weights"}
        meta["warnings"] = [UNSTRUCTURED_NOTE]
    meta["accuracy_after_recovery"] = evaluate(student) if evaluate else None
    return student, meta


def _search_ratio(ctx: StageContext) -> tuple[Any, dict[str, Any]]:
    """Largest ratio in [ratio, ratio_max] whose accuracy drop after recovery stays within the budget."""
    from edgesdk.errors import InputError

    p = ctx.recipe.prune
    budget = p.max_accuracy_drop if p.max_accuracy_drop is not None else ctx.recipe.quantize.max_accuracy_drop
    base = ctx.baseline_accuracy
    if budget is None or base is None:
        raise InputError("a pruning range needs an accuracy budget",
                         expected="--prune LOW:HIGH with --max-accuracy-drop POINTS and labelled --eval-data",
                         hint="or give a single ratio, e.g. --prune 0.5")
    tries: list[dict[str, Any]] = []

    def attempt(r: float) -> tuple[Any, dict[str, Any], bool]:
        student, meta = _prune_and_recover(ctx, r)
        drop = round(base - meta["accuracy_after_recovery"], 3)
        ok = drop <= budget
        tries.append({"ratio": r, "accuracy": meta["accuracy_after_recovery"], "drop": drop, "met": ok})
        ctx.say(f"pruning ratio {r}: accuracy {meta['accuracy_after_recovery']:.2f}% (drop {drop:.2f}, "
                           f"budget {budget}) -> {'within budget' if ok else 'over budget'}")
        return student, meta, ok

    lo, hi = p.ratio, p.ratio_max
    best = attempt(hi)
    if not best[2]:
        best = attempt(lo)
        while best[2] and hi - lo > 0.02 and len(tries) < 5:  # bisect between lo (holds) and hi (fails)
            mid = round((lo + hi) / 2, 3)
            trial = attempt(mid)
            if trial[2]:
                lo, best = mid, trial
            else:
                hi = mid
    student, meta, ok = best
    meta["search"] = {"budget": budget, "tries": tries, "met": ok, "chosen": tries[-1]["ratio"] if not ok else
                      max(t["ratio"] for t in tries if t["met"])}
    return student, meta


@register_stage("prune")
def prune_stage(ctx: StageContext, parent: Artifact | None) -> Artifact:
    """Prune a copy of the model, recover it, persist it without pickle; later stages use the pruned model."""
    from edgesdk.atomic import sha256_file

    from .prune import save_pruned

    p = ctx.recipe.prune
    if p.ratio_max is not None:
        student, meta = _search_ratio(ctx)
    else:
        student, meta = _prune_and_recover(ctx, p.ratio)
    from edgesdk.binding import unwrap

    weights, shapes = save_pruned(unwrap(student), ctx.workdir / "model.pruned")  # keys as the user's model has them
    meta["shapes_file"] = {"path": shapes.name, "sha256": sha256_file(shapes)}
    ctx.models["pytorch.pruned"] = ctx.model = student
    ctx.variant, ctx.reference = ".pruned", "pytorch.pruned"
    art = Artifact(name=weights.name, path=weights, format="torch", precision="fp32",
                   parent=parent.name if parent else "pytorch", meta=meta)
    art.accuracy = meta["accuracy_after_recovery"]
    if meta.get("search", {}).get("met") is False:
        art.status = "budget_not_met"
        meta["budget"] = {"shortfall": f"no ratio in [{p.ratio}, {p.ratio_max}] kept the accuracy drop within "
                                       f"{meta['search']['budget']} points (tries: {meta['search']['tries']})"}
    return art


_SUFFIX = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8dyn"}
_PRECISION = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8"}


@register_stage("quantize_onnx")
def quantize_onnx_stage(ctx: StageContext, parent: Artifact | None) -> Artifact:
    """Quantize the parent ONNX artifact to ``<stem>.<mode>.onnx``; the accuracy budget wraps this stage."""
    from edgesdk.errors import InputError

    from .quantize import quantize_onnx

    if parent is None or parent.format != "onnx":
        raise InputError("quantize_onnx needs an ONNX artifact before it", hint="put export_onnx first in the recipe")
    q = ctx.recipe.quantize
    path = ctx.workdir / f"{parent.path.stem}.{_SUFFIX[q.mode]}.onnx"
    calib = _calib_inputs(ctx)
    budget = ctx.budget
    if budget is not None:
        info, budget_meta = budget(parent.path, path)
    else:
        info = quantize_onnx(parent.path, path, mode=q.mode, calib=calib, calib_method=q.calib_method,
                             per_channel=q.per_channel, target=q.target, nodes_to_exclude=q.exclude,
                             on_progress=counter(ctx.say))
        budget_meta = None
    meta = {"quantization": info.to_dict(), "calibration": ctx.calib_source, "warnings": list(info.warnings),
            "reference": parent.meta.get("reference", "pytorch")}
    if budget_meta is not None:
        meta["budget"] = budget_meta
    art = Artifact(name=path.name, path=path, format="onnx", precision=_PRECISION[q.mode], parent=parent.name,
                   meta=meta)
    if budget_meta is not None and not budget_meta["met"]:
        art.status = "budget_not_met"
    return art


_TFLITE_SUFFIX = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8dyn"}


def _target_failed(ctx: StageContext, target: str, status: str, err: Exception, install: str | None = None) -> None:
    from edgesdk.errors import EdgeSDKError

    reason = err.format() if isinstance(err, EdgeSDKError) else f"{type(err).__name__}: {err}"
    ctx.target(target, status, reason, install)
    ctx.say(f"{target}: {status} - {reason.splitlines()[0]}" + (f" ({install})" if install else ""))


def _tflite(ctx: StageContext, parent: Artifact | None, precision: str) -> Artifact | None:
    from edgesdk.errors import BackendUnavailableError, ExportError

    from .export_tflite import INSTALL, available, export_tflite

    target = "tflite" if precision == "fp32" else f"tflite-{precision}"
    if not available():
        _target_failed(ctx, target, "skipped", BackendUnavailableError("litert-torch is not installed"), INSTALL)
        return None
    if precision != "fp32" and ctx.targets.get("tflite", {}).get("status") == "failed":
        _target_failed(ctx, target, "skipped", ExportError("the float TFLite conversion failed"))
        return None
    variant = ctx.variant
    suffix = "" if precision == "fp32" else f".{_TFLITE_SUFFIX[precision]}"
    path = ctx.workdir / f"model{variant}{suffix}.tflite"
    q = ctx.recipe.quantize
    calib = _calib_inputs(ctx)
    try:
        info = export_tflite(ctx.model, ctx.example_inputs, path, precision=precision, calib=calib,
                             output_names=ctx.output_names, dynamic_batch=ctx.recipe.export.dynamic_batch,
                             channels_last=ctx.recipe.export.tflite_channels_last, dynamic_axes=ctx.dynamic_axes)
    except ExportError as e:  # one target failing must not abort the others
        _target_failed(ctx, target, "failed", e)
        return None
    meta = {"exporter": "litert-torch", "target": target, "quantization": info.quantization,
            "warnings": info.warnings,
            "export_time_s": round(info.export_time_s, 3), "reference": ctx.reference,
            "dynamic_axes": {n: {str(a): sym for a, sym in ax.items()} for n, ax in info.dynamic_axes.items()},
            "calibration": ctx.calib_source if precision == "int8" else None}
    if info.input_layout:
        meta["input_layout"] = info.input_layout  # the SDK transposes reference data for these inputs
    ctx.target(target, "ok")
    return Artifact(name=path.name, path=path, format="tflite", precision=_PRECISION.get(precision, precision),
                    parent=ctx.reference, meta=meta)


@register_stage("export_tflite")
def export_tflite_stage(ctx: StageContext, parent: Artifact | None) -> Artifact | None:
    """Float32 TFLite of the current model (pruned when a prune stage ran); a failure is reported, not raised."""
    return _tflite(ctx, parent, "fp32")


@register_stage("quantize_tflite")
def quantize_tflite_stage(ctx: StageContext, parent: Artifact | None) -> Artifact | None:
    """fp16, dynamic-range int8 or full-integer int8 TFLite, following the recipe's quantize mode."""
    return _tflite(ctx, parent, ctx.recipe.quantize.mode)


_ENGINE_SUFFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}


def _engine_settings(ctx: StageContext, onnx_art: Artifact, precision: str) -> Any:
    from .export_tensorrt import EngineSettings, compute_profiles

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

    from .export_tensorrt import build_engine, record_path, timing_cache_path

    path = ctx.workdir / f"{onnx_art.path.name.split('.')[0]}{ctx.variant}" \
                         f"{_ENGINE_SUFFIX[precision]}.engine"
    ctx.say(f"building TensorRT {precision} engine {path.name} from {onnx_art.name}")
    try:
        info = build_engine(onnx_art.path, path, _engine_settings(ctx, onnx_art, precision))
    except EdgeSDKError as e:  # no GPU, an op TensorRT cannot parse...: this target fails, the others go on
        _target_failed(ctx, target, "failed", e)
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

    from .export_tensorrt import available
    from edgesdk.runtimes.tensorrt import INSTALL

    if available():
        return True
    _target_failed(ctx, target, "skipped", BackendUnavailableError("TensorRT is not installed on this machine"),
                   INSTALL)
    return False


def _last_onnx(ctx: StageContext, precision: str) -> Artifact | None:
    found = [a for a in ctx.artifacts if a.format == "onnx" and a.precision == precision]
    return found[-1] if found else None


@register_stage("export_tensorrt")
def export_tensorrt_stage(ctx: StageContext, parent: Artifact | None) -> Artifact | None:
    """A float32 engine from the latest float32 ONNX artifact (pruned when a prune stage ran)."""
    if not _tensorrt_ready(ctx, "tensorrt"):
        return None
    src = _last_onnx(ctx, "fp32")
    return _engine(ctx, src, "fp32", "tensorrt") if src is not None else None


@register_stage("quantize_tensorrt")
def quantize_tensorrt_stage(ctx: StageContext, parent: Artifact | None) -> Artifact | None:
    """fp16: the float ONNX built with FP16 kernels; int8: explicit quantization from a symmetric QDQ ONNX."""
    from edgesdk.errors import InputError

    mode = ctx.recipe.quantize.mode
    target = f"tensorrt-{mode}"
    if mode == "int8-dynamic":
        _target_failed(ctx, target, "skipped", InputError(
            "dynamic INT8 is an onnxruntime CPU technique; TensorRT has no equivalent",
            hint="use --quantize int8 (static, calibrated) or fp16 for TensorRT"))
        return None
    if not _tensorrt_ready(ctx, target):
        return None
    float_src = _last_onnx(ctx, "fp32")
    if float_src is None:
        return None
    if mode == "fp16":
        return _engine(ctx, float_src, "fp16", target)
    qdq = _last_onnx(ctx, "int8")
    if qdq is None or not (qdq.meta.get("quantization") or {}).get("symmetric_activations"):
        # the CPU recipe uses uint8 activations with zero points; TensorRT needs symmetric int8 QDQ
        from .quantize import quantize_onnx

        q = ctx.recipe.quantize
        path = ctx.workdir / f"{float_src.path.stem}.int8.trt.onnx"
        calib = _calib_inputs(ctx)
        quantize_onnx(float_src.path, path, mode="int8", calib=calib, calib_method=q.calib_method,
                      per_channel=q.per_channel, target="tensorrt", nodes_to_exclude=q.exclude)
        qdq = Artifact(name=path.name, path=path, format="onnx", precision="int8", parent=float_src.name,
                       inputs=float_src.inputs, meta={"reference": float_src.meta.get("reference", "pytorch")})
    return _engine(ctx, qdq, "int8", target)
