"""Write a compress run's artifact directory (into the staging dir): the reference set, report.json and its
views, then manifest.json last, vouching for every file before it.

Example::

    manifest, report = write_outputs(run, stage_dir, artifacts, results, targets)
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from .atomic import sha256_file, write_json
from .manifest import SCHEMA_VERSION, input_specs
from .version import __version__


def write_outputs(run: Any, stage: Path, artifacts: list[Any], results: list[dict[str, Any]],
                  targets: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reference set, report.json + views, manifest.json (last) into the staging dir ``stage``."""
    from edgesdk.runtimes.fingerprint import device_fingerprint

    from .binding import unwrap
    from .reference import FILE_NAME, write_reference_set
    from .report import REPORT_VIEWS, build_report, write_report_views

    recipe = run.recipe.to_dict()
    metric = run.metric.name if run.metric is not None else None
    report = build_report(device=device_fingerprint(), results=results, recipe=recipe,
                          artifacts=[a.to_manifest(stage) for a in artifacts],
                          baseline={"backend": "torch", "accuracy": run.baseline_accuracy, "metric": metric},
                          calibration=run.calib_source)
    report["targets"] = targets
    report["warnings"] = list(dict.fromkeys(run.input_warnings + run.warnings))
    for art in artifacts:
        if art.meta.get("budget", {}).get("against"):
            report["warnings"].append(f"{art.name}: {art.meta['budget']['shortfall']}")
    used = {"pytorch"} | {a.meta.get("reference", "pytorch") for a in artifacts if a.format != "torch"}
    ref_info = write_reference_set(stage / FILE_NAME, run.reference_inputs, {m: run.references[m] for m in sorted(used)},
                                   run.eval_data)
    ref_info["sha256"] = sha256_file(stage / FILE_NAME)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "edgesdk_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "model": {"class": type(unwrap(run.model)).__name__, "inputs": input_specs(run.examples_np, run.dims.axes),
                  "output_names": run.out_names, "accuracy": run.baseline_accuracy, "metric": metric,
                  "binding": run.binding.to_dict() if run.binding else None,
                  "dynamic_dims": run.dims.to_dict()},
        "calibration": run.calib_source,
        "preprocess": run.preprocess.to_dict() if run.preprocess is not None else None,
        "targets": targets,
        "warnings": report["warnings"],
        "artifacts": report["artifacts"],
        "reference": ref_info,
        "reports": ["report.json", *REPORT_VIEWS],
    }
    write_json(stage / "report.json", report)
    write_report_views(stage, report)  # report.md, report.html (charts), report.csv
    write_json(stage / "manifest.json", manifest)  # last: it vouches for the files above
    return manifest, report
