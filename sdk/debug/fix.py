"""``edgesdk debug --fix``: keep the layers that hurt a quantized ONNX artifact most in float, re-quantize from
its FP32 parent, re-check, until a budget holds; then debug the fixed file.

It is compress's accuracy budget (:class:`edgesdk.compress.budget.AccuracyBudget`) run on an existing artifact
directory, so there is one implementation: the layers are ranked by the noise each adds (the debug command's
per-layer comparison), the worst 1, 2, 4, ... are kept in float (an activation with the Conv/Gemm/MatMul that
feeds it), and each try is scored on the directory's reference set: cosine against the outputs of the model the
artifact was made from (``--min-cosine``), and the task metric on the reference set's labelled eval data against
the FP32 parent's (``--max-accuracy-drop``). The quantization settings are the manifest's recipe; the
calibration data is given again (``--calib``: the manifest records where it came from, not the samples).

The fixed file is written beside the artifact (``<stem>.fixed.onnx``, or ``out``), whole or not at all. Inside
the artifact's directory it is then checked like every artifact compress makes (the parity gate on the reference
set, on onnxruntime, with the recipe's tolerance; the task metric on its eval data) and added to the manifest as
an artifact named by its file, after the one it fixes (so ``load(DIR)``'s default is unchanged), with its sha256, its
parity, ``meta.fixed_from`` and the budget's record (``meta.budget``: every try, each node kept in float and
why, and ``float_layers``: each layer kept in float with its measured SQNR). The manifest is rewritten
atomically and never lists a file whose bytes it does not vouch for: a file fixed again is first unlisted,
then replaced, then listed anew. A file written outside the directory (``out`` elsewhere) is not listed.

Example::

    result = fix("out/model.int8.onnx", calib="calib.npz", min_cosine=0.999)
    result.met, result.float_nodes, result.report.first_jump
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable

from edgesdk.errors import ArtifactError, InputError

from .report import DebugReport


@dataclass
class FixResult:
    artifact: str  # the file that was fixed
    fixed: str  # the file written
    entry: dict[str, Any] | None  # its manifest entry (None: written outside the artifact's directory)
    met: bool
    shortfall: str | None
    float_nodes: dict[str, str]  # node kept in float -> why (its SQNR lost, tensor, module, rank)
    before: dict[str, Any]  # score of the artifact as made (tries[0])
    after: dict[str, Any]  # score of the fixed file
    float_layers: list[dict[str, Any]] = field(default_factory=list)  # each layer kept: module, SQNR, nodes
    tries: list[dict[str, Any]] = field(default_factory=list)
    report: DebugReport | None = None  # the fixed file against its parent, layer by layer

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "fixed": self.fixed, "met": self.met, "shortfall": self.shortfall,
                "float_nodes": self.float_nodes, "float_layers": self.float_layers, "before": self.before,
                "after": self.after, "tries": self.tries,
                "manifest_entry": None if self.entry is None else self.entry["name"],
                "parity": None if self.entry is None else self.entry["parity"]}


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
    stage = (entry or {}).get("stage")
    if entry is None or stage not in ("quantize_onnx", "quantize_tflite"):
        raise InputError(f"--fix re-quantizes a quantized ONNX or INT8 TFLite artifact: {name} is not one",
                         found=f"stage {stage or 'unknown'}", hint="pass the INT8 file, e.g. DIR/model.int8.onnx")
    if stage == "quantize_tflite":
        quant = (entry.get("meta") or {}).get("quantization") or {}
        if entry.get("precision") != "int8" or quant.get("route") != "ai-edge-quantizer":
            raise InputError(f"--fix re-quantizes a full-integer INT8 TFLite file ai-edge-quantizer made: {name} "
                             "is not one", found=f"precision {entry.get('precision')}, made by "
                             f"{quant.get('route') or quant.get('method') or 'unknown'}",
                             hint="fix the ONNX INT8 artifact, or compress again with --quantize int8")
        parent = entries.get(quant.get("float_file"))  # quantized from the float file beside it
    else:
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
    tflite = cand.suffix.lower() == ".tflite"
    dst = Path(out) if out is not None else cand.with_name(f"{cand.stem}.fixed{cand.suffix}")
    if not dst.parent.is_dir():
        raise InputError(f"cannot write {dst}: its folder does not exist", hint="choose another --fix-out path")
    if dst.resolve() in (cand.resolve(), (cand.parent / parent["path"]).resolve()):
        raise InputError(f"--fix would overwrite {dst.name}", hint="choose another --fix-out path")
    listed = dst.parent.resolve() == cand.parent.resolve()
    previous = _previous_fix(manifest, dst.name) if listed else None
    if listed and previous is None and _taken(manifest, dst.name):
        raise InputError(f"--fix would overwrite {dst.name}", found="a file of the artifact directory",
                         hint="choose another --fix-out path")
    if dst.suffix.lower() != cand.suffix.lower():
        raise InputError(f"--fix-out {dst.name} must keep the artifact's format", expected=f"a {cand.suffix} file")
    work = Path(tempfile.mkdtemp(prefix=".fix-", dir=dst.parent))
    try:  # written whole or not at all
        tmp = work / dst.name
        src = cand.parent / parent["path"]
        if tflite:
            layout = (entry.get("meta") or {}).get("input_layout") or {}
            int8_io = str(((entry.get("meta") or {}).get("quantization") or {}).get("io", "")).startswith("int8")
            outs = [o["name"] for o in entry.get("outputs") or []]
            quant, meta = scorer.tflite(src, tmp, names, outs, int8_io=int8_io, layout=layout)
            info = SimpleNamespace(to_dict=lambda: quant, warnings=[])
        else:
            info, meta = scorer(src, tmp)
        new_entry = None
        if listed:
            new_entry = _checked_entry(tmp, dst.name, manifest, entry, recipe, rs, ref_name, names, metric, info,
                                       meta, calib)
            if previous is not None:  # unlisted before its bytes change
                _write_manifest(cand.parent, manifest, drop=dst.name)
        os.replace(tmp, dst)
        if new_entry is not None:
            _write_manifest(cand.parent, manifest, drop=dst.name, add=new_entry, after=entry["name"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # outside the directory there is no reference set beside the file: the calibration inputs stand in
    report = debug(dst, against=cand.parent / parent["path"], data=None if listed else calib)  # TFLite too
    return FixResult(artifact=str(cand), fixed=str(dst), entry=new_entry, met=bool(meta["met"]),
                     shortfall=meta["shortfall"], float_nodes=meta["float_nodes"],
                     float_layers=meta.get("float_layers") or [], before=meta["tries"][0], after=meta["result"],
                     tries=meta["tries"], report=report)


def _previous_fix(manifest: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The manifest entry of an earlier fix written to ``path`` (it may be replaced), or None."""
    for a in manifest.get("artifacts") or []:
        if isinstance(a, dict) and a.get("path") == path and (a.get("meta") or {}).get("fixed_from"):
            return a
    return None


def _taken(manifest: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is a file the directory's manifest vouches for (an artifact, its weights, the reference
    set, a report, the manifest itself): a fix must not overwrite it."""
    files = {"manifest.json", "reference.npz", *(manifest.get("reports") or [])}
    for a in manifest.get("artifacts") or []:
        if isinstance(a, dict):
            files.add(a.get("path"))
            files.update(x.get("path") for x in a.get("external_data") or [] if isinstance(x, dict))
    return name in files


def _checked_entry(file: Path, rel: str, manifest: dict[str, Any], entry: dict[str, Any], recipe: Any, rs: Any,
                   ref_name: str, names: list[str], metric: Any, info: Any, meta: dict[str, Any],
                   calib: str | Path) -> dict[str, Any]:
    """The manifest entry of the fixed file: the parity gate run on it as compress runs it on every artifact
    (the reference set, onnxruntime, the recipe's tolerance for its precision), beside the budget's record."""
    from edgesdk.atomic import sha256_file
    from edgesdk.gate import agreement, check
    from edgesdk.metrics import drop
    from edgesdk.parity import tolerance_for
    from edgesdk.runtimes.safety import external_data_files

    tflite = file.suffix.lower() == ".tflite"
    if not tflite and external_data_files(file):
        raise ArtifactError(f"the fixed file keeps weights outside {rel}; --fix writes single-file ONNX models",
                            hint="write it outside the directory with --fix-out")
    emeta = dict(entry.get("meta") or {})
    p = recipe.parity
    tol = tolerance_for(entry.get("precision") or "int8", atol=p.atol, rtol=p.rtol, min_cosine=p.min_cosine)
    backend = "litert" if tflite else "onnxruntime"
    rec = check(file, backend, rs.inputs, rs.outputs[ref_name], tol, layout=emeta.get("input_layout"),
                eval_data=rs.eval_data, metric=metric, input_names=names)
    baseline = (manifest.get("model") or {}).get("accuracy")
    # about the file as made: its culprit, other backends' parity, its timing and the backend chosen from it
    for stale in ("culprit", "parity_by_backend", "vs_original", "backend_choice", "stage_time_s"):
        emeta.pop(stale, None)
    status = "ok" if rec.passed else "parity_mismatch"
    if status == "ok" and not meta["met"]:
        status = "budget_not_met"
    return {**{k: v for k, v in entry.items() if k != "external_data"},
            "name": rel, "path": rel, "sha256": sha256_file(file), "size_bytes": file.stat().st_size,
            "inputs": rec.inputs, "outputs": rec.outputs, "parity": rec.parity, "accuracy": rec.accuracy,
            "status": status, "recommended_backend": backend, "session_options": {},  # checked there, untimed
            "meta": {**emeta, "quantization": info.to_dict(), "warnings": list(info.warnings), "budget": meta,
                     "fixed_from": entry["name"], "made_by": "edgesdk debug --fix",
                     "calibration": str(calib),
                     "vs_original": {**agreement(rs.outputs["pytorch"], rec.outputs_got), "accuracy": rec.accuracy,
                                     "accuracy_drop": None if None in (rec.accuracy, baseline, metric)
                                     else round(drop(metric, baseline, rec.accuracy), 3)}
                     if "pytorch" in rs.outputs else None}}


def _write_manifest(directory: Path, manifest: dict[str, Any], *, drop: str, add: dict[str, Any] | None = None,
                    after: str | None = None) -> None:
    """Rewrite the directory's manifest (atomically) without the entry for the file ``drop``, and with ``add``
    placed after the entry named ``after``."""
    from edgesdk.atomic import write_json

    arts = [a for a in manifest.get("artifacts") or [] if not (isinstance(a, dict) and a.get("path") == drop)]
    if add is not None:
        at = next((i + 1 for i, a in enumerate(arts) if isinstance(a, dict) and a.get("name") == after), len(arts))
        arts.insert(at, add)
    manifest["artifacts"] = arts
    write_json(directory / "manifest.json", manifest)


def fix_markdown(result: FixResult) -> str:
    """The fix in a few lines, before the fixed file's debug report."""
    from edgesdk.parity import SQNR_CAP_DB

    def score(s: dict[str, Any]) -> str:
        acc = f", accuracy {s['accuracy']:.2f} (drop {s['accuracy_drop']:.2f})" if s.get("accuracy") is not None else ""
        return f"cosine {s['cosine']:.6f}{acc}"

    lines = [f"# edgesdk debug --fix: {result.artifact}", "",
             f"{'Budget met' if result.met else 'Budget NOT met: ' + str(result.shortfall)} with "
             f"{len(result.float_nodes)} node(s) kept in float ({len(result.float_layers)} layer(s)), in "
             f"{len(result.tries)} tries. Written: {result.fixed}",
             "", f"- as made: {score(result.before)}", f"- fixed: {score(result.after)}"]
    if result.entry is None:
        lines.append("- not listed in the manifest: written outside the artifact's directory")
    else:
        par = result.entry["parity"]
        lines.append(f"- listed in the manifest as `{result.entry['name']}` (status {result.entry['status']}; parity "
                     f"{'passed' if par.get('passed') else 'FAILED'} on the reference set, cosine {par['cosine']:.6f})")
    if result.float_layers:
        lines += ["", "| rank | layer kept in float | module | SQNR dB | channel SQNR dB | at its inputs dB | nodes |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['rank']} | `{r['node']}` ({r['op']}) | {'`' + r['module'] + '`' if r['module'] else '-'} | "
                  f"{r['sqnr_db']:.1f} | {r['channel_sqnr_db']:.1f} | "
                  f"{'exact' if r['input_sqnr_db'] >= SQNR_CAP_DB else format(r['input_sqnr_db'], '.1f')} | "
                  f"{len(r['nodes'])} |"
                  for r in result.float_layers]
    return "\n".join(lines) + "\n"
