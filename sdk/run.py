"""The compress run as an object: prepare -> reference -> stages (each artifact gated) -> budgets ->
benchmark -> write. ``edgesdk.compress`` builds one and runs it.

Example::

    run = CompressRun(model, {"x": torch.rand(1, 3, 32, 32)}, Recipe(), out_dir="out")
    result = run.run()
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .atomic import staged_output_dir
from .binding import InputBinding, bind_inputs, keyword_adapter
from .dims import DynamicDims, parse_axes, resolve
from .errors import BudgetError, EdgeSDKError, InputError, ParityError
from .inputs import (check_model_runs, check_output_names, input_warnings, keep_runnable, normalize_inputs,
                     reference_batches)
from .pipeline import Artifact, StageContext, run_stages
from .recipe import Recipe
from .report import to_markdown

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
Feeds = dict[str, np.ndarray]

DEFAULT_PRUNE_MIN_COSINE = 0.95  # label-free: a pruned model whose outputs moved further is not the same model
DEFAULT_PRUNE_MAX_DROP = 2.0  # with labels: metric points


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


class CompressRun:
    """One compress run; each step is a method and the state it builds is named on the object."""

    def __init__(self, model: Any, example_inputs: Any, recipe: Recipe, *, out_dir: str | Path,
                 calib_data: Any = None, eval_data: Mapping[str, np.ndarray] | None = None,
                 output_names: list[str] | None = None, progress: Progress | None = None,
                 recovery_hook: Callable[..., Any] | None = None, preprocess: Any = None, metric: Any = None,
                 cache_dir: str | Path | None = None) -> None:
        self.model, self.example_inputs, self.recipe = model, example_inputs, recipe.validate()
        self.out_dir, self.cache_dir = out_dir, cache_dir
        self.cache: Any = None  # a StageCache over cache_dir (made in prepare)
        self.calib_data, self.eval_data, self.preprocess = calib_data, eval_data, preprocess
        self.output_names, self.recovery_hook, self.metric_spec = output_names, recovery_hook, metric
        self.say: Progress = progress or (lambda msg: log.info(msg))
        self.binding: InputBinding | None = None
        self.dims = DynamicDims()
        self.calib_source: str | None = None
        self.metric: Any = None
        self.warnings: list[str] = []
        self.failures: list[str] = []
        self.references: dict[str, list[Feeds]] = {}

    # -- the steps ---------------------------------------------------------------------------------------------
    def run(self) -> Result:
        from .writer import write_outputs

        self.prepare()
        self.reference()
        with staged_output_dir(self.out_dir) as stage:
            ctx = self.context(stage)
            artifacts = run_stages(self.recipe.stages, ctx, on_artifact=lambda a: self.check(a, ctx))
            self.raise_on_parity_failures()
            self.judge_against_original(artifacts)
            results = self.benchmark(artifacts) if self.recipe.benchmark.enabled else []
            manifest, report = write_outputs(self, stage, artifacts, results, ctx.targets)
        for msg in report["warnings"]:
            log.warning(msg)
        out = Path(self.out_dir).absolute()
        for art in artifacts:
            art.path = out / art.path.name
        self.raise_on_missed_budgets(artifacts, out)
        return Result(out_dir=out, manifest=manifest, report=report, artifacts=artifacts)

    def prepare(self) -> None:
        """Check the model and inputs, bind them to forward() by name, choose the dynamic axes, load the data."""
        import torch

        import edgesdk.compress.stages  # noqa: F401  (registers the stages)

        from .atomic import check_output_path

        check_output_path(self.out_dir)  # an -o the filesystem cannot take fails now, not after the work
        if self.cache_dir is not None:
            from .stage_cache import StageCache

            self.cache = StageCache(self.cache_dir)
        self._check_precision_here()

        if not isinstance(self.model, torch.nn.Module):
            raise InputError("compress() needs a torch.nn.Module", expected="torch.nn.Module",
                             found=type(self.model).__name__)
        self.model = self.model.eval()
        examples, named = normalize_inputs(self.example_inputs)
        self.binding = bind_inputs(self.model, examples, named=named)
        examples = dict(zip(self.binding.names, examples.values())) if not named else self.binding.order(examples)
        if self.binding.note:
            self.say(self.binding.note)
        if self.binding.keyword:  # a skipped parameter keeps its default: call the model with keywords
            self.model = keyword_adapter(self.model, self.binding.names)
        self.examples = examples
        self.examples_np = {k: v.detach().cpu().numpy() for k, v in examples.items()}
        check_model_runs(self.model, examples)
        self.output_names = check_output_names(self.output_names, examples)
        self._resolve_dims()
        self._load_data()

    def _check_precision_here(self) -> None:
        """A precision this machine cannot run is refused before any work (bf16 without bf16 arithmetic)."""
        if self.recipe.quantize.mode == "bf16":
            from edgesdk.compress.stages.openvino import require_bf16

            require_bf16()

    def _resolve_dims(self) -> None:
        ex = self.recipe.export
        shapes = {k: tuple(v.shape) for k, v in self.examples_np.items()}
        asked = parse_axes(ex.dynamic_dims, shapes) if ex.dynamic_dims else {}
        self.dims = resolve(shapes, asked, dtypes={k: str(v.dtype) for k, v in self.examples_np.items()},
                            dynamic_batch=ex.dynamic_batch, dynamic_sequence=ex.dynamic_sequence)
        self.auto_axes = frozenset((n, a) for n, ax in self.dims.axes.items() for a in ax
                                   if a > 0 and a not in asked.get(n, {}))
        self._asked_axes = [(n, a) for n, ax in asked.items() for a in ax]

    def _load_data(self) -> None:
        from edgesdk.compress.calibration import image_preprocess, load_calibration

        from .metrics import load_metric
        from .synthetic import input_roles

        self.roles = input_roles(self.model, self.examples)
        self.preprocess = image_preprocess(self.calib_data, self.examples_np, self.preprocess)
        if self.calib_data is not None:
            self.calib_data, self.calib_source = load_calibration(
                self.calib_data, self.examples_np, seed=self.recipe.parity.seed, preprocess=self.preprocess,
                roles=self.roles)
        q = self.recipe.quantize
        if q.mode == "int8" and self.calib_data is None:
            raise InputError("static INT8 needs calibration data", expected="--calib FILE.npz | DIR-of-.npy | random",
                             hint="pass representative inputs (100-500 samples); 'random' only to try the pipeline")
        spec = self.metric_spec if self.metric_spec is not None else self.recipe.eval.metric
        if self.eval_data is not None:
            from .intake import check_feeds_match

            self.eval_data = dict(self.eval_data)
            check_feeds_match({k: v for k, v in self.eval_data.items() if k in self.examples_np}, self.examples_np,
                              what="eval data")
            first = next(iter(self.examples_np))
            if first not in self.eval_data:
                raise InputError("eval data do not match the model inputs", found=f"no {first!r} array",
                                 expected=", ".join(self.examples_np), hint="name the arrays like the inputs")
            auto = spec == "auto"
            # auto: labels mean class ids (top-1); labels of another kind need the metric named
            self.metric = load_metric("top1") if auto and "labels" in self.eval_data else (
                None if auto else load_metric(spec))
            if self.metric is not None:
                try:
                    self.metric.check_data(self.eval_data, len(self.eval_data[first]))
                except InputError as e:
                    if not auto:
                        raise
                    raise InputError(f"eval data: {e.what}", expected=e.expected, found=e.found,
                                     hint=f"{e.hint + '; ' if e.hint else ''}labels that are not class ids need "
                                          "their metric: --metric cer | miou | multilabel_f1 | file.py:fn") from e
        elif spec != "auto":
            load_metric(spec)  # a bad spec is an error even before there is data to use it on
        self._check_budget_inputs()

    def _check_budget_inputs(self) -> None:
        q, p = self.recipe.quantize, self.recipe.prune
        labelled = self.metric is not None
        if q.max_accuracy_drop is not None and not labelled:
            raise InputError("--max-accuracy-drop needs labelled eval data",
                             expected="--eval-data FILE.npz with the inputs and a `labels` array",
                             hint="or use the label-free --min-cosine budget")
        if p.ratio_max is not None and not labelled:  # checked now, not after the first export
            raise InputError("a pruning range (--prune LOW:HIGH) is searched on accuracy and needs labelled eval data",
                             expected="--eval-data FILE.npz with the inputs and a `labels` array",
                             found="no eval data" if self.eval_data is None else "eval data without `labels`",
                             hint="or give a single ratio, e.g. --prune 0.5")

    def reference(self) -> None:
        """The reference inputs (examples, data, generated; every dynamic size) and PyTorch's outputs on them."""

        r = self.recipe
        batches = reference_batches(self.examples_np, self.roles, self.dims, data=self.calib_data,
                                    batches=r.parity.batches, batch_size=r.parity.batch_size, seed=r.parity.seed,
                                    fixed_batch=not r.export.dynamic_batch)
        self.torch_session = self.torch_session_for(self.model, threads=r.benchmark.threads)
        self.torch_session.load()
        self.say(f"running PyTorch on {len(batches)} reference batches")
        asked = {self.dims.axes[n][a] for n, a in self._asked_axes}  # the symbols the user made dynamic
        self.reference_inputs, outputs, notes = keep_runnable(batches, self.dims, self.torch_session.run, asked=asked)
        self.references["pytorch"] = outputs
        self.warnings += notes + self._fix_single_sized()
        self.out_names = list(outputs[0])
        self.generated = self.calib_data is None
        self.baseline_accuracy = self.evaluate_model(self.torch_session) if self.metric else None
        self.input_warnings = input_warnings(self.reference_inputs, self.examples_np, self.roles)

    def _fix_single_sized(self) -> list[str]:
        """Automatic dynamic axes (token sequences) the model takes at its traced size only are exported fixed:
        declaring them dynamic would promise sizes the artifact cannot run."""
        notes = []
        for sym in list(self.dims.symbols()):
            where = self.dims.where(sym)
            if not all((n, a) in self.auto_axes for n, a in where) or len(self.dims.checked.get(sym, [])) > 1:
                continue
            for n, a in where:
                del self.dims.axes[n][a]
            self.auto_axes = self.auto_axes - set(where)
            self.dims.checked.pop(sym, None)
            notes.append(f"{', '.join(f'{n}:{a}' for n, a in where)} ({sym}) is exported fixed at "
                         f"{self.dims.sizes.pop(sym)}: the model runs no other size")
        return notes

    # -- helpers the steps share ------------------------------------------------------------------------------
    def torch_session_for(self, module: Any, threads: int | None = None) -> Any:
        from edgesdk.runtimes.torch import TorchSession

        return TorchSession.from_module(module, list(self.examples), output_names=self.output_names or
                                        getattr(self, "out_names", None), example_inputs=self.examples_np,
                                        threads=threads, dynamic_axes=self.dims.axes)

    def evaluate_model(self, session: Any) -> float | None:
        """The task metric of a session (or an adapted artifact session) on the labelled eval data."""
        from .metrics import evaluate

        if self.metric is None or self.eval_data is None:
            return None
        return evaluate(session, self.eval_data, [n for n in self.examples if n in self.eval_data], self.metric)

    def outputs_of(self, name: str, module: Any) -> list[Feeds]:
        """A PyTorch model's outputs on the reference inputs (cached by name)."""
        if name not in self.references:
            sess = self.torch_session_for(module)
            self.references[name] = [sess.run(f) for f in self.reference_inputs]
        return self.references[name]

    def context(self, stage: Path) -> StageContext:
        from edgesdk.compress.budget import AccuracyBudget

        q = self.recipe.quantize
        ctx = StageContext(model=self.model, example_inputs=self.examples, recipe=self.recipe, workdir=stage,
                           output_names=self.out_names, calib=self.calib_data, calib_source=self.calib_source,
                           models={"pytorch": self.model}, say=self.say, baseline_accuracy=self.baseline_accuracy,
                           metric=self.metric, recovery_hook=self.recovery_hook,
                           dynamic_axes={n: dict(a) for n, a in self.dims.axes.items()}, auto_axes=self.auto_axes,
                           eval_data=self.eval_data, cache=self.cache)
        if self.metric is not None:
            ctx.evaluate = lambda m: self.evaluate_model(self.torch_session_for(m))
        if q.mode != "none" and (q.max_accuracy_drop is not None or q.min_cosine is not None):
            calib = None if self.calib_data is None else {k: self.calib_data[k] for k in self.examples}
            ctx.budget = AccuracyBudget(self.recipe, calib, self.reference_inputs, self.references["pytorch"],
                                        self.say, evaluate=self.evaluate_model if self.metric else None,
                                        baseline=self.baseline_accuracy, metric=self.metric)
        self._check_runtime_targets(ctx)
        return ctx

    def _check_runtime_targets(self, ctx: StageContext) -> None:
        """Targets that are a runtime over the ONNX artifacts (openvino): skipped with the install command."""
        from edgesdk.runtimes.registry import backend_installed, install_hint

        if "openvino" in self.recipe.targets:
            ok = backend_installed("openvino")
            ctx.target("openvino", "ok" if ok else "skipped", None if ok else "openvino is not installed on this machine",
                       None if ok else install_hint("openvino"))
            if not ok:
                self.say(f"openvino: skipped - not installed ({install_hint('openvino')})")

    # -- the gate ---------------------------------------------------------------------------------------------
    def check(self, art: Artifact, ctx: StageContext) -> bool | None:
        """Gate one artifact as it is made; False drops a secondary target that cannot even run here."""
        from .gate import agreement

        ref = art.meta.get("reference", "pytorch")
        if art.format == "torch":  # a pruned PyTorch model: not an export to verify, but how far it moved
            art.meta["vs_original"] = self._vs_original(self.outputs_of(ref, ctx.models[ref]), art.accuracy)
            return None
        self.say(f"checking {art.name} against PyTorch" + (" (pruned model)" if ref != "pytorch" else ""))
        try:
            got = self._gate(art, self.outputs_of(ref, ctx.models[ref]), ctx.models[ref], ctx.artifacts)
        except EdgeSDKError as e:
            target = art.meta.get("target")
            if target is None:  # the ONNX artifacts are the spine of the run: their failure is the run's
                raise
            # a secondary target (TFLite) that cannot even be run here is reported, not fatal
            ctx.target(target, "failed", f"{art.name} could not be verified: {e.one_line()}")
            log.warning("%s: not delivered - %s", target, e.one_line())
            return False
        art.meta["vs_original"] = self._vs_original(got, art.accuracy) if ref != "pytorch" else {
            **agreement(self.references["pytorch"], got), "accuracy": art.accuracy,
            "accuracy_drop": self._drop(art.accuracy)}
        return None

    def _vs_original(self, got: list[Feeds | None], accuracy: float | None) -> dict[str, Any]:
        from .gate import agreement

        return {**agreement(self.references["pytorch"], got), "accuracy": accuracy,
                "accuracy_drop": self._drop(accuracy)}

    def _drop(self, accuracy: float | None) -> float | None:
        from .metrics import drop

        if accuracy is None or self.baseline_accuracy is None or self.metric is None:
            return None
        return round(drop(self.metric, self.baseline_accuracy, accuracy), 3)

    def _gate(self, art: Artifact, ref_out: list[Feeds], ref_model: Any, made: list[Artifact]) -> list[Feeds | None]:
        """Run the gate on every backend the artifact is checked on; the first backend's record is the
        artifact's, the others sit beside it. Returns the first backend's outputs. A failure names the first
        diverging module of ``ref_model`` (the PyTorch model it was checked against; ``made``: the artifacts
        before it, for the FP32 export it descends from)."""
        from .gate import check
        from .parity import tolerance_for

        p = self.recipe.parity
        tol = tolerance_for(art.precision, atol=p.atol, rtol=p.rtol, min_cosine=p.min_cosine)
        backends = self.backends_for(art)
        first: list[Feeds | None] = []
        for i, backend in enumerate(backends):
            advisory = i > 0 and self.advisory(art, backend)
            try:
                rec = check(art.path, backend, self.reference_inputs, ref_out, tol, layout=art.meta.get("input_layout"),
                            eval_data=self.eval_data, metric=self.metric, input_names=list(self.examples),
                            options=art.session_options)
            except EdgeSDKError as e:
                if not advisory:
                    raise
                self._not_on(art, backend, f"it does not run there ({e.what})")
                continue
            if i == 0:
                first = rec.outputs_got
                art.inputs, art.outputs, art.accuracy = rec.inputs, rec.outputs, rec.accuracy
                art.parity = rec.parity
                if rec.dropped_inputs:
                    art.meta.setdefault("warnings", []).append(
                        f"{art.name} has no input {', '.join(map(repr, rec.dropped_inputs))}: the model never reads "
                        "it, so the exporter left it out; callers must not send it")
                if rec.notes:
                    art.meta.setdefault("warnings", []).append(
                        f"{art.name} was checked on {rec.parity['batches']} of {len(self.reference_inputs)} reference "
                        f"batches: {'; '.join(rec.notes[:3])}")
            else:
                d = rec.parity
                art.meta.setdefault("parity_by_backend", {})[rec.backend] = {
                    "passed": d["passed"], "max_abs_err": d["max_abs_err"], "cosine": d["cosine"],
                    "centered_cosine": d.get("centered_cosine"), "top1_agreement": d["top1_agreement"],
                    "accuracy": rec.accuracy}
            if not rec.passed and advisory:  # a backend nobody asked for by name: it is just not recommended
                self._not_on(art, backend, f"its outputs fail parity there ({rec.result.failure_message()})")
            elif not rec.passed:
                art.status = "parity_mismatch"
                pointer = self._culprit(art, backend, ref_model, made)
                self.failures.append(f"{art.name} on {backend}: {rec.result.failure_message()}; {pointer}")
                log.warning("parity failed for %s on %s: %s; %s", art.name, backend, rec.result.failure_message(),
                            pointer)
        return first

    def _culprit(self, art: Artifact, backend: str, ref_model: Any, made: list[Artifact]) -> str:
        """The first diverging module of a failed artifact from a quick debug pass (edgesdk.debug), recorded in
        its meta (the manifest has it under --allow-mismatch); the sentence for the parity error."""
        from edgesdk.debug import ONNX_BACKENDS, culprit
        from edgesdk.debug.torch_ref import lineage

        if art.format not in ("onnx", "tflite") or (art.format == "onnx" and backend not in ONNX_BACKENDS):
            return f"no per-layer pass for {art.format} on {backend}"
        self.say(f"tracing {art.name}'s divergence to a module")
        entries = [{"path": a.name, "format": a.format, "parent": a.parent} for a in [*made, art]]
        bridge, _pruned = lineage(art.path.parent, {"artifacts": entries}, art.name)
        found = culprit.culprit(art.path, ref_model, self.reference_inputs, bridge=bridge, backend=backend,
                                options=art.session_options, layout=art.meta.get("input_layout"))
        art.meta.setdefault("culprit", {})[backend] = found.to_dict()
        return found.sentence

    def advisory(self, art: Artifact, backend: str) -> bool:
        """True for a backend only "auto" brought in (not named in --backends, not the OpenVINO target): the
        artifact need not run or pass there; it is then left out of the timing and the recommendation."""
        named = set(self.recipe.benchmark.backends) | ({"openvino"} if "openvino" in self.recipe.targets else set())
        return backend not in named

    def _not_on(self, art: Artifact, backend: str, why: str) -> None:
        art.meta.setdefault("parity_by_backend", {})[backend] = {"passed": False, "error": why}

    def backends_for(self, art: Artifact) -> list[str]:
        """The recipe's backends that can run this artifact's format, the format's default first; "auto" is
        every installed backend for it that compress verifies on (left as "auto" when none is installed, so
        that loading says what to install). None of the requested ones is an input error: every artifact is
        verified."""
        from edgesdk.runtimes.registry import auto_backends, backend_installed, format_backends

        runnable = format_backends(art.format)
        here = auto_backends(art.format)
        wanted = [b for spec in self.recipe.benchmark.backends for b in ((here or ["auto"]) if spec == "auto"
                                                                         else [spec])]
        if "openvino" in self.recipe.targets and backend_installed("openvino"):  # the target = OpenVINO runs ONNX
            wanted.append("openvino")
        found = list(dict.fromkeys(b for b in wanted if b == "auto" or b in runnable))
        if not found:
            raise InputError(f"none of the requested backends can run {art.name} ({art.format})",
                             expected=f"a backend for {art.format}: {', '.join(runnable)}",
                             found=f"--backends {','.join(self.recipe.benchmark.backends)}",
                             hint="add 'auto' to --backends, or drop the target that makes this artifact")
        return found

    def raise_on_parity_failures(self) -> None:
        if not self.failures or self.recipe.parity.allow_mismatch:
            return
        on = ("on generated inputs (no --calib data: random values"
              + ("; " + "; ".join(self.input_warnings) if self.input_warnings else "") + ")") if self.generated else ""
        raise ParityError(
            f"artifact outputs differ from PyTorch beyond tolerance{' ' + on if on else ''}; nothing was written",
            found="\n            ".join(self.failures),
            hint=("check with real inputs first (--calib FILE.npz): generated values may be outside what the model "
                  "was trained on; " if self.generated else "")
            + "inspect the module named above and the op named by the exporter warnings, try another --opset or "
              "--exporter, or keep the artifact anyway with --allow-mismatch (it is then marked in the manifest) "
              "and see every layer with `edgesdk debug DIR/FILE --against pytorch --model ...`")

    # -- budgets against the original model -------------------------------------------------------------------
    def judge_against_original(self, artifacts: list[Artifact]) -> None:
        """Pruned artifacts must stay close to the ORIGINAL model, not just to the pruned one they came from:
        the user's budget, or by default cosine >= 0.95 (label-free) or a drop <= 2 points (labelled)."""
        p = self.recipe.prune
        if p.ratio_max is not None:
            return  # a searched range has its own budget, applied while searching
        for art in artifacts:
            if art.meta.get("reference", "pytorch") == "pytorch" and art.format != "torch":
                continue
            vs = art.meta.get("vs_original") or {}
            why = self._prune_shortfall(vs)
            if why is None or art.status != "ok":
                continue
            art.status = "budget_not_met"
            art.meta["budget"] = {"shortfall": why, "against": "the original model"}

    def _prune_shortfall(self, vs: Mapping[str, Any]) -> str | None:
        p, q = self.recipe.prune, self.recipe.quantize
        if vs.get("accuracy_drop") is not None:
            budget = p.max_accuracy_drop if p.max_accuracy_drop is not None else (
                q.max_accuracy_drop if q.max_accuracy_drop is not None else DEFAULT_PRUNE_MAX_DROP)
            if vs["accuracy_drop"] > budget:
                return (f"{self.metric.name} {vs['accuracy']:.2f} is {vs['accuracy_drop']:.2f} points worse than the "
                        f"original model's {self.baseline_accuracy:.2f} (budget {budget} points)")
            return None
        floor = p.min_cosine if p.min_cosine is not None else DEFAULT_PRUNE_MIN_COSINE
        cos = vs.get("cosine")
        if cos is not None and cos < floor:
            return f"cosine vs the original model {cos:.4f}, below {floor}"
        return None

    def raise_on_missed_budgets(self, artifacts: list[Artifact], out: Path) -> None:
        missed = [a for a in artifacts if a.status == "budget_not_met"]
        if not missed:
            return
        pruned = any((a.meta.get("budget") or {}).get("against") for a in missed)
        hint = (f"see {out / 'manifest.json'} for every try; loosen the budget, give more representative --calib "
                "data, or try --calib-method entropy|percentile")
        if pruned:
            hint = ("pruning moved the model too far from the original: prune less (a lower --prune ratio), recover "
                    "longer (--recover-steps), give real --calib data and labelled --eval-data, or set the budget "
                    "(--max-accuracy-drop POINTS, recipe prune.min_cosine); " + hint)
        raise BudgetError("the accuracy budget could not be met; the best artifact found was kept",
                          found="; ".join(f"{a.name}: {a.meta['budget']['shortfall']}" for a in missed), hint=hint)

    # -- benchmark ---------------------------------------------------------------------------------------------
    def benchmark(self, artifacts: list[Artifact]) -> list[dict[str, Any]]:
        from .measure import benchmark_artifacts, recommend_backends, slower_than_parent

        rows = benchmark_artifacts(self, artifacts)
        for msg in slower_than_parent(artifacts, rows):
            log.warning(msg)
        recommend_backends(artifacts, rows)
        return rows
