"""The prune stage: channel (or unstructured / 2:4) pruning of the original model, recovery by
distillation, or the largest ratio of a range that keeps the accuracy budget."""
from __future__ import annotations

from typing import Any

from edgesdk.pipeline import Artifact, StageContext, register_stage
from edgesdk.progress import counter

from .common import EVAL_READS, MODEL_READS

MAX_RECOVER_STEPS = 1000  # without --recover-steps: at most this many, within the time budget
DEFAULT_RECOVER_TIME_S = 120.0  # without --recover-steps or --recover-time


def recovery_limits(p: Any) -> tuple[int, float | None]:
    """(the most steps, the time budget in seconds or None) of the recipe's prune section: --recover-steps N
    alone runs N steps; otherwise the budget (2 minutes by default) bounds at most 1000."""
    steps = p.recover_steps if p.recover_steps is not None else MAX_RECOVER_STEPS
    if p.recover_time_s is not None:
        return steps, p.recover_time_s
    return steps, DEFAULT_RECOVER_TIME_S if p.recover_steps is None else None


def _cosine_to(teacher: Any, ctx: StageContext, n: int = 32) -> Any:
    """A function: the cosine of a model's primary output to the teacher's on the first ``n`` calibration
    samples (what recovery is after, measured without labels); None without calibration data."""
    import numpy as np
    import torch

    from edgesdk.compress.outputs import primary_output

    if not ctx.calib:
        return lambda _model: None
    batch = [torch.from_numpy(np.ascontiguousarray(ctx.calib[k][:n])) for k in ctx.example_inputs]
    with torch.no_grad():
        ref = primary_output(teacher(*batch))[0].double().flatten()

    def cosine(model: Any) -> float:
        with torch.no_grad():
            got = primary_output(model(*batch))[0].double().flatten()
        return round(float(torch.nn.functional.cosine_similarity(ref, got, dim=0)), 6)
    return cosine


def _prune_and_recover(ctx: StageContext, ratio: float | None) -> tuple[Any, dict[str, Any]]:
    import copy

    from edgesdk.compress.prune import UNSTRUCTURED_NOTE, prune_model
    from edgesdk.compress.recover import train_device

    p = ctx.recipe.prune
    teacher = ctx.model
    student = copy.deepcopy(teacher).eval()
    # a keyword-call adapter holds the user's model as `model`: its module names gain that prefix
    prefix = "model." if getattr(student, "edgesdk_keyword_call", False) else ""
    info = prune_model(student, ctx.example_inputs, ratio=ratio, method=p.method, importance=p.importance,
                       target_macs=p.target_macs, protect=tuple(prefix + n for n in p.protect), round_to=p.round_to,
                       global_pruning=p.global_pruning, data=ctx.calib,
                       device=train_device(p.train_device) if p.importance == "taylor" else "cpu")
    evaluate = ctx.evaluate
    meta: dict[str, Any] = {"pruning": info.to_dict(), "params": info.params_after, "macs": info.macs_after,
                            "accuracy_before_recovery": evaluate(student) if evaluate else None}
    hook = ctx.recovery_hook
    unchanged = p.method == "channel" and info.params_after == info.params_before
    if unchanged:  # recovery would only move an unpruned model away from the original
        meta["recovery"] = {"method": "none", "reason": "nothing was pruned"}
        meta["warnings"] = [n for n in info.notes if n.startswith("nothing was pruned")] or [
            "nothing was pruned; the pruned artifacts are the original model"]
    elif p.recover and p.method == "channel" and (recovery_limits(p)[0] > 0 or hook is not None):
        meta["recovery"] = _recover(ctx, teacher, student)
        if "warning" in meta["recovery"]:
            meta.setdefault("warnings", []).append(meta["recovery"].pop("warning"))
    elif p.method != "channel":
        meta["recovery"] = {"method": "none", "reason": "recovery would refill the zeroed weights"}
        meta["warnings"] = [UNSTRUCTURED_NOTE]
    meta["accuracy_after_recovery"] = evaluate(student) if evaluate else None
    return student, meta


def _recover(ctx: StageContext, teacher: Any, student: Any) -> dict[str, Any]:
    """Distil ``student`` towards ``teacher`` within the recipe's limits; the record gains the cosine to the
    teacher before and after (what the steps bought) and says when random calibration data was all it had."""
    from edgesdk.compress.recover import recover, train_device

    p, hook = ctx.recipe.prune, ctx.recovery_hook
    steps, budget = recovery_limits(p)
    device = train_device(p.train_device)
    limit = f"at most {steps} distillation steps" + (f" or {budget:g} s" if budget is not None else "")
    ctx.say(f"recovering the pruned model ({'your hook' if hook else limit} on {device})")
    cosine = _cosine_to(teacher, ctx)
    before = cosine(student)
    info = recover(student, teacher, dict(ctx.calib or {}), list(ctx.example_inputs), steps=steps,
                   lr=p.recover_lr, hook=hook, seed=ctx.recipe.parity.seed, time_budget_s=budget, device=device,
                   on_progress=counter(ctx.say))
    info.update(cosine_before=before, cosine_after=cosine(student))
    if hook is None:
        ran = f"{info['steps']} of {steps} steps" + (f" ({info['stopped_by']})" if info.get("stopped_by") else "")
        ctx.say(f"recovery: {ran} in {info['time_s']:.1f} s, cosine to the original {_fmt(before)} -> "
                f"{_fmt(info['cosine_after'])}")
    if (ctx.calib_source or "").startswith("RANDOM") and hook is None:
        info["warning"] = ("recovery distilled on random inputs (--calib random): it recovers little of what "
                           "pruning lost on real data; give --calib with real samples (labels optional)")
    return info


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


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


def _train_device_key(parent: Artifact | None, ctx: StageContext) -> dict[str, Any]:
    """"auto" trains on CUDA when there is one, and the recovered weights differ from a CPU run's."""
    from edgesdk.compress.recover import train_device

    return {"train_device": train_device(ctx.recipe.prune.train_device)}


def _restore_pruned(art: Artifact, ctx: StageContext) -> None:
    """The pruned module of a cached artifact: a copy of the original reshaped and loaded from its files."""
    import copy

    from edgesdk.binding import unwrap
    from edgesdk.compress.prune import load_pruned

    student = copy.deepcopy(ctx.model).eval()
    load_pruned(unwrap(student), art.path.parent / art.path.name.removesuffix(".safetensors"))
    art.module = student


# the search budget falls back to quantize.max_accuracy_drop; recovery is seeded by parity.seed; a recovery
# hook is a callable, so a run with one is never cached
@register_stage("prune", text="pruning", takes="model", yields="torch",
                reads=("prune", "parity.seed", "quantize.max_accuracy_drop", "ctx.model", *MODEL_READS,
                       "ctx.calib", "ctx.calib_source", *EVAL_READS, "ctx.recovery_hook"),
                key_with=_train_device_key, restore=_restore_pruned)
def prune_stage(parent: Artifact | None, ctx: StageContext) -> Artifact:
    """Prune a copy of the original model, recover it, persist it without pickle; the artifact carries the
    pruned module to the stages after it."""
    from edgesdk.atomic import sha256_file
    from edgesdk.binding import unwrap
    from edgesdk.compress.prune import save_pruned

    p = ctx.recipe.prune
    if p.ratio_max is not None:
        student, meta = _search_ratio(ctx)
    else:
        student, meta = _prune_and_recover(ctx, p.ratio)
    weights, shapes = save_pruned(unwrap(student), ctx.workdir / "model.pruned")  # keys as the user's model has them
    meta["shapes_file"] = {"path": shapes.name, "sha256": sha256_file(shapes)}
    meta["reference"] = "pytorch.pruned"  # the name later stages and the reference set know it by
    art = Artifact(name=weights.name, path=weights, format="torch", precision="fp32", parent="pytorch", meta=meta,
                   module=student)
    art.accuracy = meta["accuracy_after_recovery"]
    if meta.get("search", {}).get("met") is False:
        art.status = "budget_not_met"
        meta["budget"] = {"shortfall": f"no ratio in [{p.ratio}, {p.ratio_max}] kept the accuracy drop within "
                                       f"{meta['search']['budget']} points (tries: {meta['search']['tries']})"}
    return art
