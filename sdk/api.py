"""The one verb: ``compress(model, example_inputs, recipe) -> Result``.

Runs the recipe's stages, checks every artifact against PyTorch on the
reference inputs (the parity gate), measures accuracy when labelled eval data
is given, benchmarks each artifact next to the PyTorch eager baseline and
writes the output directory atomically (manifest last).

Example::

    import torch, edgesdk
    from examples.digits.model import build
    result = edgesdk.compress(build().eval(), {"x": torch.rand(1, 1, 8, 8)}, out_dir="out")
    print(result.report_markdown)
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import __version__
from .atomic import staged_output_dir, write_json
from .progress import counter
from .errors import BudgetError, EdgeSDKError, InputError, ParityError
from .intake import check_feeds_match, check_labels
from .parity import DEFAULT_TOLERANCES, compare
from .pipeline import Artifact, StageContext, run_stages
from .recipe import Recipe, apply_options
from .report import REPORT_SCHEMA_VERSION, REPORT_VIEWS, build_report, to_markdown, write_report_views

log = logging.getLogger(__name__)
MANIFEST_SCHEMA_VERSION = 1

Progress = Callable[[str], None]


@dataclass
class Result:
    """What ``compress`` returns: the output dir, the manifest and the report."""

    out_dir: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def report_markdown(self) -> str:
        return to_markdown(self.report)

    @property
    def passed(self) -> bool:
        return all(a.parity is None or a.parity.get("passed") for a in self.artifacts)


def compress(model: Any, example_inputs: Any, recipe: Recipe | None = None, *, out_dir: str | Path,
             calib_data: Any = None,
             eval_data: Mapping[str, np.ndarray] | None = None,
             output_names: list[str] | None = None, progress: Progress | None = None,
             recovery_hook: Callable[[Any, Mapping[str, np.ndarray]], Any] | None = None,
             preprocess: Any = None, **options: Any) -> Result:
    """Export ``model``, verify each artifact against it, benchmark, write ``out_dir``.

    ``example_inputs``: a tensor, a tuple of tensors, or a dict name -> tensor (batch first).
    ``calib_data``: a dict of arrays named like the inputs, an iterable of such dicts, a path
    (.npz or a directory of NAME.npy) or the string "random". ``eval_data``: a dict of arrays
    named like the inputs, with ``labels`` for task accuracy. ``options`` override recipe fields
    (``opset=17``, ``benchmark=False``, ``allow_mismatch=True``, ``quantize="int8"``, ``prune=0.5`` ...).
    ``recovery_hook(model, data)`` replaces the built-in distillation after pruning with your own loop.
    ``preprocess``: with ``calib_data`` a directory of images, an ImagePreprocess or its text form
    (``"size=224x224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225"``); stored in the manifest.

    >>> result = compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir="out", benchmark=False)
    """
    import torch

    from edgesdk.compress import stages as _stages  # noqa: F401  (registers the stages)

    say = progress or (lambda msg: log.info(msg))
    recipe = apply_options(recipe or Recipe(), **options).validate()
    if not isinstance(model, torch.nn.Module):
        raise InputError("compress() needs a torch.nn.Module", expected="torch.nn.Module",
                         found=type(model).__name__)
    model = model.eval()
    examples = _normalize_inputs(example_inputs)
    examples_np = {k: v.detach().cpu().numpy() for k, v in examples.items()}
    _check_model_runs(model, examples)
    if output_names:
        names = [str(n) for n in output_names]
        twice = sorted({n for n in names if names.count(n) > 1})
        clash = sorted(set(names) & set(examples))
        if twice or clash:
            raise InputError("output names must be distinct and differ from the input names",
                             found=(f"repeated: {', '.join(twice)}" if twice else "")
                             + ("; " if twice and clash else "") + (f"also inputs: {', '.join(clash)}" if clash else ""),
                             hint="give each --output-name once, e.g. --output-name logits --output-name embedding")
    from edgesdk.compress.calibration import image_preprocess, load_calibration

    calib_source = None
    preprocess = image_preprocess(calib_data, examples_np, preprocess)
    if calib_data is not None:
        calib_data, calib_source = load_calibration(calib_data, examples_np, seed=recipe.parity.seed,
                                                    preprocess=preprocess)
    if eval_data is not None:
        eval_data = dict(eval_data)
        check_feeds_match({k: v for k, v in eval_data.items() if k != "labels"}, examples_np, what="eval data")
        if "labels" in eval_data:
            check_labels(np.asarray(eval_data["labels"]), len(eval_data[next(iter(examples_np))]), what="eval data")
    q = recipe.quantize
    if q.mode == "int8" and calib_data is None:
        raise InputError("static INT8 needs calibration data", expected="--calib FILE.npz | DIR-of-.npy | random",
                         hint="pass representative inputs (100-500 samples); 'random' only to try the pipeline")
    labelled = eval_data is not None and "labels" in eval_data
    if q.max_accuracy_drop is not None and not labelled:
        raise InputError("--max-accuracy-drop needs labelled eval data",
                         expected="--eval-data FILE.npz with the inputs and a `labels` array",
                         hint="or use the label-free --min-cosine budget")
    if recipe.prune.ratio_max is not None and not labelled:  # checked now, not after the first export
        raise InputError("a pruning range (--prune LOW:HIGH) is searched on accuracy and needs labelled eval data",
                         expected="--eval-data FILE.npz with the inputs and a `labels` array",
                         found="no eval data" if eval_data is None else "eval data without `labels`",
                         hint="or give a single ratio, e.g. --prune 0.5")

    from edgesdk.runtimes.torch import TorchSession

    reference_inputs = _reference_inputs(examples_np, recipe, calib_data)
    torch_session = TorchSession.from_module(model, list(examples), output_names=output_names,
                                             example_inputs=examples_np, threads=recipe.benchmark.threads)
    torch_session.load()
    say(f"running PyTorch on {len(reference_inputs)} reference batches")
    reference_outputs = [torch_session.run(feeds) for feeds in reference_inputs]
    out_names = list(reference_outputs[0])

    baseline_accuracy = _accuracy(torch_session, eval_data, list(examples)) if eval_data is not None else None
    with staged_output_dir(out_dir) as stage:
        ctx = StageContext(model=model, example_inputs=examples, recipe=recipe, workdir=stage,
                           output_names=out_names, calib=calib_data, calib_source=calib_source,
                           models={"pytorch": model})
        ctx.records.update(say=say, baseline_accuracy=baseline_accuracy)
        _check_runtime_targets(recipe, ctx)
        if recovery_hook is not None:
            ctx.records["recovery_hook"] = recovery_hook
        if eval_data is not None and "labels" in eval_data:
            ctx.records["evaluate"] = lambda m: _accuracy(
                TorchSession.from_module(m, list(examples), output_names=out_names, example_inputs=examples_np),
                eval_data, list(examples))
        references = {"pytorch": reference_outputs}

        def reference(name: str) -> list[dict[str, np.ndarray]]:
            if name not in references:
                sess = TorchSession.from_module(ctx.models[name], list(examples), output_names=out_names,
                                                example_inputs=examples_np)
                references[name] = [sess.run(f) for f in reference_inputs]
            return references[name]
        if q.mode != "none" and (q.max_accuracy_drop is not None or q.min_cosine is not None):
            from edgesdk.compress.budget import AccuracyBudget

            ctx.records["budget"] = AccuracyBudget(recipe, _inputs_only(calib_data, examples), eval_data,
                                                   list(examples), baseline_accuracy, reference_inputs,
                                                   reference_outputs, say)
        failures: list[str] = []

        def check(art: Artifact) -> bool | None:
            if art.format == "torch":  # a pruned PyTorch model: not an export to verify, but say how far it moved
                art.meta["vs_original"] = _vs(reference_outputs, reference("pytorch.pruned"))
                return
            ref = art.meta.get("reference", "pytorch")
            say(f"checking {art.name} against PyTorch" + (" (pruned model)" if ref != "pytorch" else ""))
            target = art.meta.get("target")
            try:
                _gate(art, recipe, reference_inputs, reference(ref), eval_data, list(examples), failures)
            except EdgeSDKError as e:
                if target is None:  # the ONNX artifacts are the spine of the run: their failure is the run's
                    raise
                # a secondary target (TFLite) that cannot even be run here is reported, not fatal
                ctx.records.setdefault("targets", {})[target] = {
                    "status": "failed", "reason": f"{art.name} could not be verified: {e.one_line()}",
                    "install": None}
                log.warning("%s: not delivered - %s", target, e.one_line())
                return False
            if ref != "pytorch":
                art.meta["vs_original"] = _vs(reference_outputs, art.meta.pop("_outputs"))
            else:
                art.meta.pop("_outputs", None)

        artifacts = run_stages(recipe.stages, ctx, on_artifact=check)
        if failures and not recipe.parity.allow_mismatch:
            raise ParityError(
                "artifact outputs differ from PyTorch beyond tolerance; nothing was written",
                found="\n            ".join(failures),
                hint="inspect the op named by the exporter warnings, try another --opset or --exporter, "
                     "or keep the artifact anyway with --allow-mismatch (it is then marked in the manifest)")
        results: list[dict[str, Any]] = []
        if recipe.benchmark.enabled:
            results = _benchmark_all(torch_session, artifacts, recipe, baseline_accuracy, say)
            for msg in _slower_than_parent(artifacts, results):
                log.warning(msg)
        from edgesdk.runtimes.fingerprint import device_fingerprint

        report = build_report(device=device_fingerprint(), results=results, recipe=recipe.to_dict(),
                              artifacts=[a.to_manifest(stage) for a in artifacts],
                              baseline={"backend": "torch", "accuracy": baseline_accuracy},
                              calibration=calib_source)
        report["targets"] = ctx.records.get("targets", {})
        report["warnings"] = _input_warnings(reference_inputs, examples_np, calib_data)
        for msg in report["warnings"]:
            log.warning(msg)
        from .atomic import sha256_file
        from .reference import FILE_NAME, write_reference_set

        used = {"pytorch"} | {a.meta.get("reference", "pytorch") for a in artifacts if a.format != "torch"}
        ref_info = write_reference_set(stage / FILE_NAME, reference_inputs, {m: reference(m) for m in sorted(used)},
                                       eval_data)
        ref_info["sha256"] = sha256_file(stage / FILE_NAME)
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "edgesdk_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "recipe": recipe.to_dict(),
            "model": {"class": type(model).__name__, "inputs": _specs(examples_np),
                      "output_names": out_names, "accuracy": baseline_accuracy},
            "calibration": calib_source,
            "preprocess": preprocess.to_dict() if preprocess is not None else None,
            "targets": ctx.records.get("targets", {}),
            "warnings": report["warnings"],
            "artifacts": report["artifacts"],
            "reference": ref_info,
            "reports": ["report.json", *REPORT_VIEWS],
        }
        write_json(stage / "report.json", report)
        write_report_views(stage, report)  # report.md, report.html (charts), report.csv
        write_json(stage / "manifest.json", manifest)  # last: it vouches for the files above
    out = Path(out_dir).absolute()
    for art in artifacts:
        art.path = out / art.path.name
    missed = [a for a in artifacts if a.status == "budget_not_met"]
    if missed:
        raise BudgetError("the accuracy budget could not be met; the best artifact found was kept",
                          found="; ".join(f"{a.name}: {a.meta['budget']['shortfall']}" for a in missed),
                          hint=f"see {out / 'manifest.json'} for every try; loosen the budget, give more "
                               "representative --calib data, or try --calib-method entropy|percentile")
    return Result(out_dir=out, manifest=manifest, report=report, artifacts=artifacts)


def _check_runtime_targets(recipe: Recipe, ctx: StageContext) -> None:
    """Targets that are a runtime over the ONNX artifacts (openvino): skipped with the install command when absent."""
    from edgesdk.runtimes.registry import REQUIRES, backend_installed

    if "openvino" in recipe.targets:
        ok = backend_installed("openvino")
        ctx.records.setdefault("targets", {})["openvino"] = {
            "status": "ok" if ok else "skipped", "install": None if ok else REQUIRES["openvino"][1],
            "reason": None if ok else "openvino is not installed on this machine"}
        if not ok:
            ctx.records["say"](f"openvino: skipped - not installed ({REQUIRES['openvino'][1]})")


def _normalize_inputs(example_inputs: Any) -> dict[str, Any]:
    import torch

    if isinstance(example_inputs, torch.Tensor):
        items = {"input": example_inputs}
    elif isinstance(example_inputs, Mapping):
        items = dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        items = {f"input_{i}": t for i, t in enumerate(example_inputs)}
    else:
        raise InputError("example_inputs has an unsupported type",
                         expected="a tensor, a tuple of tensors, or a dict name -> tensor",
                         found=type(example_inputs).__name__)
    out = {}
    for name, value in items.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise InputError(f"example input {name!r} is not a tensor", expected="torch.Tensor or numpy array",
                             found=type(value).__name__)
        if value.ndim == 0:
            raise InputError(f"example input {name!r} is a scalar", expected="a tensor with a batch dimension",
                             found="shape ()")
        if value.dtype == torch.bfloat16:
            raise InputError(f"example input {name!r} is bfloat16, which the runtimes cannot be fed from numpy",
                             expected="float32, float16 or integer inputs",
                             hint="take float32 inputs and cast inside the model (x.to(torch.bfloat16))")
        out[str(name)] = value
    return out


def _specs(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"name": k, "dtype": str(v.dtype), "shape": ["batch", *v.shape[1:]]} for k, v in arrays.items()]


def _input_warnings(reference_inputs: list[dict[str, np.ndarray]], examples: Mapping[str, np.ndarray],
                    calib: Mapping[str, np.ndarray] | None) -> list[str]:
    """Say when the parity gate saw a single value for an integer input (token ids from --input x:1x8:int64
    are zeros): every artifact was then verified on one token only."""
    out = []
    for name, ex in examples.items():
        if ex.dtype.kind not in "iub":
            continue
        values = np.unique(np.concatenate([b[name].ravel() for b in reference_inputs if name in b]))
        if len(values) <= 1:
            out.append(f"integer input '{name}' was {values[0] if len(values) else 'empty'} in every reference batch: "
                       "parity was checked on that one value only; pass --calib (or --example-inputs) with real "
                       f"values for '{name}' (token ids, indices) to verify the artifacts properly")
    return out


def _inputs_only(data: Mapping[str, np.ndarray] | None, examples: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The model-input arrays of a data dict (``labels`` and the like are not fed to quantizers)."""
    return None if data is None else {k: data[k] for k in examples if k in data}


def _check_model_runs(model: Any, examples: Mapping[str, Any]) -> None:
    """Run the model once on the example inputs; a failure there is the user's input spec, not our bug."""
    import torch

    try:
        with torch.no_grad():
            out = model(*examples.values())
    except Exception as e:  # noqa: BLE001 - any error the user's forward raises is reported as bad input
        first = " ".join(str(e).split())[:300]
        spec = ", ".join(f"{k}: {str(v.dtype).replace('torch.', '')}[{'x'.join(map(str, v.shape))}]"
                         for k, v in examples.items())
        raise InputError("the model fails on the example inputs", expected="inputs the model's forward accepts",
                         found=f"{spec} -> {type(e).__name__}: {first}",
                         hint="fix the shapes or dtypes in --input NAME:1x3x224x224[:dtype] (or --example-inputs); "
                              "the order of --input follows forward()'s arguments") from e
    flat = list(out.values()) if isinstance(out, Mapping) else (list(out) if isinstance(out, (tuple, list)) else [out])
    bad = [type(o).__name__ for o in flat if not isinstance(o, torch.Tensor)]
    if bad or not flat:
        raise InputError("the model's outputs cannot be exported", expected="a tensor, or a flat tuple/list/dict of "
                         "tensors", found=f"{type(out).__name__} holding {', '.join(bad) or 'nothing'}",
                         hint="flatten nested outputs in forward() (return a, b, c rather than (a, (b, c)))")


def _reference_inputs(examples: dict[str, np.ndarray], recipe: Recipe,
                      data: Mapping[str, np.ndarray] | None) -> list[dict[str, np.ndarray]]:
    """The example inputs plus ``recipe.parity.batches`` more: from data when given, else generated."""
    batches = [examples]
    n, bs = recipe.parity.batches, recipe.parity.batch_size
    if not recipe.export.dynamic_batch:  # a fixed-batch artifact only takes batches of the examples' size
        bs = len(next(iter(examples.values())))
    if data is not None:
        total = min(len(data[next(iter(examples))]) if data else 0, n * bs)
        for start in range(0, total - bs + 1, bs):
            batches.append({k: np.ascontiguousarray(data[k][start:start + bs]) for k in examples})
    rng = np.random.default_rng(recipe.parity.seed)
    while len(batches) < n + 1:
        feeds = {}
        for name, ex in examples.items():
            shape = (bs, *ex.shape[1:])
            if np.issubdtype(ex.dtype, np.floating):
                lo, hi = (float(ex.min()), float(ex.max())) if ex.size else (0.0, 1.0)
                lo, hi = (0.0, 1.0) if hi <= lo else (lo, hi)
                feeds[name] = rng.uniform(lo, hi, size=shape).astype(ex.dtype)
            elif ex.dtype == np.bool_:
                feeds[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            else:
                lo, hi = (int(ex.min()), int(ex.max())) if ex.size else (0, 1)
                feeds[name] = rng.integers(lo, max(hi, lo) + 1, size=shape).astype(ex.dtype)
        batches.append(feeds)
    return batches


def _tolerance(recipe: Recipe, precision: str) -> tuple[float, float, float | None]:
    tol = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    # user atol/rtol apply to float artifacts; integer ones are judged on cosine and accuracy
    floating = tol.atol is not None
    atol = recipe.parity.atol if recipe.parity.atol is not None and floating else tol.atol
    rtol = recipe.parity.rtol if recipe.parity.rtol is not None and floating else tol.rtol
    min_cos = recipe.parity.min_cosine if recipe.parity.min_cosine is not None else getattr(tol, "min_cosine", None)
    return atol, rtol, min_cos


def _gate(art: Artifact, recipe: Recipe, ref_in: list[dict[str, np.ndarray]],
          ref_out: list[dict[str, np.ndarray]], eval_data: Mapping[str, np.ndarray] | None,
          input_names: list[str], failures: list[str]) -> None:
    from edgesdk.runtimes import load
    from edgesdk.runtimes.layout import adapt_layout

    atol, rtol, min_cos = _tolerance(recipe, art.precision)
    backends = _backends_for(art, recipe)
    if not backends:  # every artifact is verified: one the requested backends cannot run is an input error
        from edgesdk.runtimes.registry import FORMAT_BACKENDS

        raise InputError(f"none of the requested backends can run {art.name} ({art.format})",
                         expected=f"a backend for {art.format}: {', '.join(FORMAT_BACKENDS.get(art.format, []))}",
                         found=f"--backends {','.join(recipe.benchmark.backends)}",
                         hint="add 'auto' to --backends, or drop the target that makes this artifact")
    for i, backend in enumerate(backends):
        with load(art.path, backend=backend) as sess:
            # reference data is in PyTorch's terms: N,C,H,W, int64 ids, every forward() argument
            ref_layout = adapt_layout(sess, art.meta.get("input_layout"), drop_unknown=True)
            dropped = sorted(set(ref_in[0]) - {s.name for s in sess.inputs})
            if dropped and i == 0:
                art.meta.setdefault("warnings", []).append(
                    f"{art.name} has no input {', '.join(map(repr, dropped))}: the model never reads it, so the "
                    "exporter left it out; callers must not send it")
            got = [ref_layout.run(feeds) for feeds in ref_in]
            result = compare(ref_out, got, atol=atol, rtol=rtol, min_cosine=min_cos)
            accuracy = _accuracy(ref_layout, eval_data, input_names) if eval_data is not None else None
            if i == 0:  # the first backend's numbers are the artifact's; the others are recorded beside them
                art.inputs = [s.to_dict() for s in sess.inputs]
                art.outputs = [s.to_dict() for s in sess.outputs]
                art.meta["_outputs"] = got
                art.parity = {**result.to_dict(), "batches": len(ref_in), "backend": sess.backend}
                art.accuracy = accuracy
            else:
                d = result.to_dict()
                art.meta.setdefault("parity_by_backend", {})[sess.backend] = {
                    "passed": d["passed"], "max_abs_err": d["max_abs_err"], "cosine": d["cosine"],
                    "top1_agreement": d["top1_agreement"], "accuracy": accuracy}
        if not result.passed:
            art.status = "parity_mismatch"
            failures.append(f"{art.name} on {backend}: {result.failure_message()}")
            log.warning("parity failed for %s on %s: %s", art.name, backend, result.failure_message())


def _backends_for(art: Artifact, recipe: Recipe) -> list[str]:
    """The recipe's backends that can run this artifact's format ("auto" = the default one)."""
    from edgesdk.runtimes.registry import FORMAT_BACKENDS, backend_installed

    runnable = FORMAT_BACKENDS.get(art.format, [])
    wanted = list(recipe.benchmark.backends)
    if "openvino" in recipe.targets and backend_installed("openvino"):  # the target = OpenVINO runs the ONNX
        wanted.append("openvino")
    return list(dict.fromkeys(b for b in wanted if b == "auto" or b in runnable))


def _slower_than_parent(artifacts: list[Artifact], results: list[dict[str, Any]]) -> list[str]:
    """Say when a compressed artifact runs slower than the float artifact it stands in for (INT8 that does
    not pay): a quantized ONNX against its parent, a quantized TFLite against the float TFLite."""
    p50 = {(r["artifact"], r.get("backend"), r["batch"]): r["latency_ms"]["p50"] for r in results}
    float_tflite = {a.meta.get("reference"): a.name for a in artifacts if a.stage == "export_tflite"}
    msgs = []
    for art in artifacts:
        base = art.parent if art.stage == "quantize_onnx" else (
            float_tflite.get(art.meta.get("reference")) if art.stage == "quantize_tflite" else None)
        if base is None:
            continue
        for (name, backend, batch), t in p50.items():
            parent_t = p50.get((base, backend, batch))
            if name == art.name and parent_t is not None and t > parent_t * 1.05:
                msg = (f"{art.name} is {t / parent_t:.2f}x slower than {base} on {backend} at batch {batch} "
                       f"on this CPU: quantization does not pay for this model here; ship {base} for speed")
                art.meta.setdefault("warnings", []).append(msg)
                msgs.append(msg)
    return msgs


def _vs(original: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """How far a pruned model's outputs moved from the original model's (informational, not a gate)."""
    d = compare(original, got, atol=None, rtol=None).to_dict()
    return {"cosine": d["cosine"], "top1_agreement": d["top1_agreement"], "max_abs_err": d["max_abs_err"]}


def _accuracy(session: Any, eval_data: Mapping[str, np.ndarray], input_names: list[str]) -> float | None:
    from .reference import accuracy

    return accuracy(session, eval_data, input_names)


def _benchmark_all(torch_session: Any, artifacts: list[Artifact], recipe: Recipe,
                   baseline_accuracy: float | None, say: Progress) -> list[dict[str, Any]]:
    from edgesdk.runtimes import benchmark, load

    cfg = recipe.benchmark
    rows: list[dict[str, Any]] = []
    for batch in cfg.batches:
        say(f"benchmarking PyTorch eager at batch {batch}")
        base = benchmark(torch_session, batch=batch, warmup=cfg.warmup, iterations=cfg.iterations,
                         duration_s=cfg.duration_s, on_progress=counter(say))
        base.update(artifact="pytorch", format="torch", precision="fp32", size_bytes=None,
                    accuracy=baseline_accuracy, parity_passed=None, speedup_vs_baseline=1.0)
        rows.append(base)
        for art in artifacts:
            if art.format == "torch":
                continue
            for backend in _backends_for(art, recipe):
                with load(art.path, backend=backend, threads=cfg.threads) as sess:
                    say(f"benchmarking {art.name} on {sess.backend} at batch {batch}")
                    r = benchmark(sess, batch=batch, warmup=cfg.warmup, iterations=cfg.iterations,
                                  duration_s=cfg.duration_s, on_progress=counter(say))
                other = (art.meta.get("parity_by_backend") or {}).get(r["backend"])
                r.update(artifact=art.name, format=art.format, precision=art.precision,
                         size_bytes=art.path.stat().st_size, accuracy=other["accuracy"] if other else art.accuracy,
                         parity_passed=other["passed"] if other else (art.parity or {}).get("passed"),
                         speedup_vs_baseline=round(base["latency_ms"]["p50"] / r["latency_ms"]["p50"], 3))
                rows.append(r)
    return rows


__all__ = ["compress", "Result", "REPORT_SCHEMA_VERSION"]
