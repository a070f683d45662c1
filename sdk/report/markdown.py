"""The Markdown view of a report (what ``compress`` and ``benchmark`` print).

Example::

    print(to_markdown(load_report("out/report.json")))
"""
from __future__ import annotations

from typing import Any

from .tables import (SPEEDUP_NOTE, _metric_unit, backend_choice_lines, device_summary, fmt, fmt_size, has_speedups, report_warnings,
                     steps_rows, sweep_note, sweep_rows, table_rows, targets_not_delivered,
                     generation_rows)

def _md_table(rows: list[dict[str, str]]) -> list[str]:
    header = list(rows[0])
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(r[h].replace("|", "\\|") for h in header) + " |" for r in rows])

def to_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown: device line, then one row per (artifact, backend, batch), and the
    batch/thread sweep with its Pareto points when one artifact and backend was timed more than once."""
    dev = report.get("device") or {}
    lines = ["# edgesdk report", "", "Device: " + device_summary(dev)]
    if dev.get("isa"):
        lines.append(f"ISA: {', '.join(dev['isa'])}")
    lines.append("")
    calib = report.get("calibration")
    if calib and calib.startswith("RANDOM"):
        lines += [f"**Calibration used {calib}: INT8 accuracy here says little about real inputs.**", ""]
    elif calib:
        lines += [f"Calibration: {calib}", ""]
    rows = table_rows(report)
    if rows:
        lines += _md_table(rows)
    elif generation_rows(report):
        pass  # a language-model report: its table follows
    else:
        lines.append("_No benchmark results in this report (compress measures latency unless --no-benchmark)._")
        arts = report.get("artifacts", [])
        if arts:
            lines += ["", "| artifact | format | precision | size | parity | accuracy |", "|---|---|---|---|---|---|"]
            for a in arts:
                p = a.get("parity") or {}
                verdict = "-" if "passed" not in p else ("pass" if p["passed"] else "**FAIL**")
                lines.append(f"| {a.get('name')} | {a.get('format')} | {a.get('precision')} | "
                             f"{fmt_size(a.get('size_bytes'))} | "
                             f"{verdict} | {fmt(a.get('accuracy'), '.2f', '%')} |")
    llm = generation_rows(report)
    if llm:
        lines += ["", "## Language models (timed by generating)", ""] + _md_table(llm)
    sweep = sweep_rows(report)
    if sweep:
        lines += ["", "## Batch and thread sweep", ""] + _md_table(sweep) + ["", sweep_note(report)]
    steps = steps_rows(report)
    if steps:
        for s in steps:
            status = s.pop("status")
            if status != "ok":
                s["notes"] = "; ".join(n for n in (s["notes"], f"**{status}**") if n)
        lines += ["", "## What each step bought", ""] + _md_table(steps)
    choices = backend_choice_lines(report)
    if choices:
        lines += ["", "## Fastest backend per artifact (on this machine; `runtimes.load(DIR)` follows it here)", ""]
        lines += [f"- {c}" for c in choices]
    bad = targets_not_delivered(report)
    if bad:
        lines += ["", "## Targets not delivered", ""]
        for t, v in bad:
            first = (v.get("reason") or "").splitlines()[0] if v.get("reason") else ""
            lines.append(f"- **{t}: {v.get('status')}** - {first}"
                         + (f" (install: `{v['install']}`)" if v.get("install") else ""))
    skipped = report.get("skipped") or []
    if skipped:
        lines += ["", "## Artifacts not run on this device", ""]
        lines += [f"- **{s.get('artifact')}**" + (f" at batch {s['batch']}" if s.get("batch") else "")
                  + f" - {s.get('reason')}" for s in skipped]
    checked = [r for r in report.get("results") or [] if r.get("device_check")]
    if checked:
        samples = max((r["device_check"].get("eval_samples") or 0) for r in checked)
        lines += ["", f"Parity and accuracy were re-checked on this device on the reference set stored by compress "
                      f"({checked[0]['device_check'].get('batches')} batches"
                      + (f", {samples} labelled samples" if samples else "") + ")."]
    warnings = report_warnings(report)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    base = report.get("baseline") or {}
    if base.get("accuracy") is not None:
        metric = base.get("metric") or "top1"
        label = "accuracy" if metric == "top1" else metric
        lines += ["", f"PyTorch eager {label}: {base['accuracy']:.2f}{_metric_unit(report)}"
                      + ("" if metric == "top1" else " (the accuracy column shows this metric)")]
    if has_speedups(report):
        lines += ["", SPEEDUP_NOTE]
    return "\n".join(lines) + "\n"
