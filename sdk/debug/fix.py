"""``edgesdk debug --fix``: keep the layers that hurt a quantized ONNX artifact most in float, re-quantize from
its FP32 parent, re-check, until a budget holds; then debug the fixed file.

It is compress's accuracy budget (:class:`edgesdk.compress.budget.AccuracyBudget`) run on an existing artifact
directory, so there is one implementation: the layers are ranked by the noise each adds (the debug command's
per-layer comparison), the worst 1, 2, 4, ... are kept in float (an activation with the Conv/Gemm/MatMul that
feeds it), and each try is scored on the directory's reference set: cosine against the outputs of the model the
artifact was made from (``--min-cosine``), and the task metric on the reference set's labelled eval data against
the FP32 parent's (``--max-accuracy-drop``). The quantization settings are the manifest's recipe; the
calibration data is given again (``--calib``: the manifest records where it came from, not the samples).

The fixed file is written beside the artifact (``<stem>.fixed.onnx``, or ``out``), whole or not at all; the
directory's manifest is left as compress wrote it: to have the fixed artifact in a directory with its manifest,
run ``edgesdk compress`` with the same budget (``--min-cosine`` / ``--max-accuracy-drop``), which takes the
same steps.

Example::

    result = fix("out/model.int8.onnx", calib="calib.npz", min_cosine=0.999)
    result.met, result.float_nodes, result.report.first_jump
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgesdk.errors import ArtifactError, InputError

from .report import DebugReport


@dataclass
class FixResult:
    artifact: str  # the file that was fixed
    fixed: str  # the file written
    met: bool
    shortfall: str | None
    float_nodes: dict[str, str]  # node kept in float -> why (its SQNR lost, tensor, module, rank)
    before: dict[str, Any]  # score of the artifact as made (tries[0])
    after: dict[str, Any]  # score of the fixed file
    tries: list[dict[str, Any]] = field(default_factory=list)
    report: DebugReport | None = None  # the fixed file against its parent, layer by layer

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "fixed": self.fixed, "met": self.met, "shortfall": self.shortfall,
                "float_nodes": self.float_nodes, "before": self.before, "after": self.after, "tries": self.tries}


def _entries(directory: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(manifest, the artifact's entry, its parent's entry); refused unless it is a quantized ONNX file made
    from an ONNX parent that is in the directory."""
    from . import _manifest

    manifest = _manifest(directory)
    if manifest is None:
        raise InputError(f"--fix needs the artifact's directory: no manifest.json beside {name}",
                         hint="run --fix on a file inside the directory edgesdk compress wrote")
    entries = {a.get("path"): a for a in manifest.get("artifacts") or []}
    entry = entries.get(name)
    if entry is None or entry.get("stage") != "quantize_onnx":
        raise InputError(f"--fix re-quantizes a quantized ONNX artifact: {name} is not one",
                         found=f"stage {(entry or {}).get('stage') or 'unknown'}",
                         hint="pass the INT8 file, e.g. DIR/model.int8.onnx")
    parent = entries.get(entry.get("parent"))
    if parent is None or not (directory / parent["path"]).is_file():
        raise ArtifactError(f"the FP32 parent of {name} is not in its directory", found=str(entry.get("parent")),
                            hint="copy the whole artifact directory")
    return manifest, entry, parent


def fix(artifact: str | Path, *, calib: str | Path, out: str | Path | None = None, min_cosine: float | None = None,
        max_accuracy_drop: float | None = None, say: Callable[[str], None] | None = None) -> FixResult:
    """Keep the worst layers of ``artifact`` in float until the budget holds (see the module docstring)."""
    from edgesdk.compress.budget import AccuracyBudget
    from edgesdk.intake import load_npz
    from edgesdk.metrics import evaluate, load_metric
    from edgesdk.recipe import Recipe
    from edgesdk.reference import load_reference_set

    from . import _candidate, debug

    cand = _candidate(artifact)
    manifest, entry, parent = _entries(cand.parent, cand.name)
    recipe = Recipe.from_dict(manifest["recipe"])
    q = recipe.quantize
    budget = {"min_cosine": q.min_cosine if min_cosine is None else min_cosine,
              "max_accuracy_drop": q.max_accuracy_drop if max_accuracy_drop is None else max_accuracy_drop}
    if budget["min_cosine"] is None and budget["max_accuracy_drop"] is None:
        raise InputError("--fix needs a budget to meet", expected="--min-cosine C (e.g. 0.999) and/or "
                         "--max-accuracy-drop POINTS", hint="the budget decides how many layers stay in float")
    recipe = recipe.replace(quantize=budget)
    ref_file = cand.parent / "reference.npz"
    if not ref_file.is_file():
        raise ArtifactError(f"no reference set beside {cand.name}", expected=str(ref_file),
                            hint="copy the whole artifact directory")
    rs = load_reference_set(ref_file)
    ref_name = (entry.get("meta") or {}).get("reference", "pytorch")
    if ref_name not in rs.outputs:
        raise ArtifactError(f"the reference set has no outputs of {ref_name!r}", found=", ".join(rs.outputs))
    names = [i["name"] for i in (manifest.get("model") or {}).get("inputs") or []]
    data = load_npz(calib, what="calibration data")
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError("the calibration data lacks inputs of the model", expected=", ".join(names),
                         found=", ".join(data) or "nothing", hint="give the --calib file compress was given")
    metric_name = (manifest.get("model") or {}).get("metric")
    labelled = rs.eval_data is not None and metric_name is not None
    if budget["max_accuracy_drop"] is not None and not labelled:
        raise InputError("--max-accuracy-drop needs labelled eval data in the directory's reference set",
                         found="no eval data" if rs.eval_data is None else "no metric in the manifest",
                         hint="use --min-cosine, or compress again with --eval-data")
    metric = load_metric(metric_name) if labelled else None
    scorer = AccuracyBudget(
        recipe, {n: data[n] for n in names}, rs.inputs, rs.outputs[ref_name], say or (lambda _m: None),
        evaluate=(lambda sess: evaluate(sess, rs.eval_data, names, metric)) if labelled else None,
        baseline=parent.get("accuracy"), metric=metric)
    dst = Path(out) if out is not None else cand.with_name(f"{cand.stem}.fixed.onnx")
    if not dst.parent.is_dir():
        raise InputError(f"cannot write {dst}: its folder does not exist", hint="choose another --fix-out path")
    if dst.resolve() in (cand.resolve(), (cand.parent / parent["path"]).resolve()):
        raise InputError(f"--fix would overwrite {dst.name}", hint="choose another --fix-out path")
    work = Path(tempfile.mkdtemp(prefix=".fix-", dir=dst.parent))
    try:  # written whole or not at all
        tmp = work / dst.name
        _info, meta = scorer(cand.parent / parent["path"], tmp)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = debug(dst, against=cand.parent / parent["path"])
    return FixResult(artifact=str(cand), fixed=str(dst), met=bool(meta["met"]), shortfall=meta["shortfall"],
                     float_nodes=meta["float_nodes"], before=meta["tries"][0], after=meta["result"],
                     tries=meta["tries"], report=report)


def fix_markdown(result: FixResult) -> str:
    """The fix in a few lines, before the fixed file's debug report."""
    def score(s: dict[str, Any]) -> str:
        acc = f", accuracy {s['accuracy']:.2f} (drop {s['accuracy_drop']:.2f})" if s.get("accuracy") is not None else ""
        return f"cosine {s['cosine']:.6f}{acc}"

    lines = [f"# edgesdk debug --fix: {result.artifact}", "",
             f"{'Budget met' if result.met else 'Budget NOT met: ' + str(result.shortfall)} with "
             f"{len(result.float_nodes)} node(s) kept in float, in {len(result.tries)} tries. Written: {result.fixed}",
             "", f"- as made: {score(result.before)}", f"- fixed: {score(result.after)}"]
    if result.float_nodes:
        lines += ["", "| node kept in float | why |", "|---|---|"]
        lines += [f"| `{n}` | {why} |" for n, why in result.float_nodes.items()]
    return "\n".join(lines) + "\n"
