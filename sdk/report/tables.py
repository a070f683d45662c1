"""What the views share: number formats and the report's tables as rows of display strings.

Example::

    for row in table_rows(report): print(row["artifact"], row["p50 ms"], row["parity"])
"""
from __future__ import annotations

from typing import Any

def fmt_size(n: int | float | None) -> str:
    """Bytes as B/KB/MB/GB; ``-`` for None."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

def fmt(v: Any, spec: str = ".3f", suffix: str = "") -> str:
    """A number with a format spec and suffix; ``-`` for None."""
    return "-" if v is None else f"{v:{spec}}{suffix}"

def device_summary(dev: dict[str, Any] | None) -> str:
    """One line: CPU model, cores, GPU, Jetson board, OS."""
    dev = dev or {}
    bits = [dev.get("cpu_model"), f"{dev.get('cores')} cores" if dev.get("cores") else None,
            dev.get("gpu"), _jetson_label(dev.get("jetson")), dev.get("os")]
    return ", ".join(str(b) for b in bits if b) or "unknown device"

def _jetson_label(j: Any) -> str | None:
    if isinstance(j, dict):
        return f"{j.get('model')} (L4T {j.get('l4t') or '?'}, JetPack {j.get('jetpack') or '?'})"
    return j or None

def parity_of(row: dict[str, Any], artifacts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The parity stats behind a result row (per backend when the artifact was checked on several)."""
    art = artifacts.get(row.get("artifact", ""))
    if art is None or not art.get("parity"):
        return None
    other = ((art.get("meta") or {}).get("parity_by_backend") or {}).get(row.get("backend"))
    return other if other is not None else art["parity"]

def _parity_text(mark: str, p: dict[str, Any], where: str = "") -> str:
    """``pass (max abs 1.2e-06, cos 1.000000)``; NaN/Inf mismatches lead and no measure is shown as perfect."""
    bad = p.get("nonfinite_mismatch") or 0
    lead = f"{bad} NaN/Inf mismatches, " if bad else ""
    cos = "n/a" if p.get("cosine") is None else f"{p['cosine']:.6f}"
    err = "n/a" if p.get("max_abs_err") is None else f"{p['max_abs_err']:.1e}"
    return f"{mark}{where} ({lead}max abs {err}, cos {cos})"

def _parity_cell(row: dict[str, Any], artifacts: dict[str, dict[str, Any]], fail: str = "**FAIL**") -> str:
    device = (row.get("device_check") or {}).get("parity")
    if device is not None:  # re-checked on this device against the reference set stored by compress
        return _parity_text("pass" if device.get("passed") else fail, device, " on device")
    p = parity_of(row, artifacts)
    if p is None:
        return "reference" if row.get("format") == "torch" else "-"
    return _parity_text("pass" if p.get("passed") else fail, p)

def _vs_original_cell(row: dict[str, Any], artifacts: dict[str, dict[str, Any]]) -> str:
    """How close the artifact is to the ORIGINAL model (not only to its parent): metric drop with labelled
    data, else cosine and top-1 agreement."""
    art = artifacts.get(row.get("artifact", ""))
    vs = ((art or {}).get("meta") or {}).get("vs_original")
    if not vs:
        return "-"
    parts = []
    if vs.get("accuracy_drop") is not None:
        parts.append(f"{-vs['accuracy_drop']:+.2f} pts")
    if vs.get("cosine") is not None:
        parts.append(f"cos {vs['cosine']:.4f}")
    if vs.get("top1_agreement") is not None:
        parts.append(f"top-1 {vs['top1_agreement']:.1%}")
    return ", ".join(parts) or "-"

GENERATION = "text-generation"


def generation_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Language-model rows (``task: text-generation``, timed by generating: runtimes.llm_bench) as display
    strings: time to first token, prefill and decode tokens/s, at the prompt and generation lengths timed."""
    return [{"artifact": str(r.get("artifact", "?")), "backend": str(r.get("backend", "?")),
             "engine": str(r.get("engine", "?")), "precision": str(r.get("precision", "?")),
             "threads": "auto" if r.get("threads") is None else str(r["threads"]),
             "prompt + new tokens": f"{r.get('prompt_len', '?')} + {r.get('gen_len', '?')}",
             "size": fmt_size(r.get("size_bytes")), "TTFT ms": fmt(r.get("ttft_ms"), ".1f"),
             "prefill tok/s": fmt(r.get("prefill_tokens_per_s"), ".0f"),
             "decode tok/s": fmt(r.get("decode_tokens_per_s"), ".1f"),
             "peak RSS MB": fmt(r.get("peak_rss_mb"), ".0f")}
            for r in report.get("results") or [] if r.get("task") == GENERATION]


def table_rows(report: dict[str, Any], fail: str = "**FAIL**") -> list[dict[str, str]]:
    """The report table as rows of display strings (used by Markdown, HTML and the CLI). A ``threads`` column
    follows ``batch`` when the rows were timed at more than one thread count (a sweep), so no two rows look
    the same."""
    artifacts = {a["name"]: a for a in report.get("artifacts") or [] if "name" in a}
    results = [r for r in report.get("results", []) if r.get("task") != GENERATION]  # see generation_rows
    by_threads = len({r.get("threads") for r in results}) > 1
    rows = []
    for r in results:
        lat = r.get("latency_ms") or {}
        threads = {"threads": "auto" if r.get("threads") is None else str(r["threads"])} if by_threads else {}
        rows.append({
            "artifact": str(r.get("artifact", "?")),
            "backend": str(r.get("backend", "?")),
            "format": str(r.get("format", "?")),
            "precision": str(r.get("precision", "?")),
            "batch": str(r.get("batch", "?")),
            **threads,
            "size": fmt_size(r.get("size_bytes")),
            "p50 ms": fmt(lat.get("p50")),
            "p90 ms": fmt(lat.get("p90")),
            "p99 ms": fmt(lat.get("p99")),
            "throughput/s": fmt(r.get("throughput"), ".1f"),
            "speed-up": fmt(r.get("speedup_vs_baseline"), ".2f", "x"),
            "parity": _parity_cell(r, artifacts, fail),
            "vs original": _vs_original_cell(r, artifacts),
            "accuracy": fmt(r.get("accuracy"), ".2f", "%" if _metric_unit(report) == "%" else ""),
        })
    return rows

def _metric_unit(report: dict[str, Any]) -> str:
    """The task metric's unit (all built-ins are percentages; a user metric may have none)."""
    return "%" if ((report.get("baseline") or {}).get("metric") or "top1") in _PERCENT_METRICS else ""

_PERCENT_METRICS = {"top1", "top5", "cer", "miou", "multilabel_f1", "multilabel_precision", "multilabel_recall"}

def _batch1_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per artifact, its batch-1 result row on the default backend of its format (onnxruntime for ONNX, even
    when OpenVINO timed it too); a backend not in that format's list ranks after, then report order."""
    from edgesdk.runtimes.registry import format_backends

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        i, r = item
        order = format_backends(str(r.get("format")))
        return (order.index(r["backend"]) if r.get("backend") in order else len(order), i)

    timed = [(i, r) for i, r in enumerate(report.get("results") or [])
             if r.get("batch") == 1 and (r.get("latency_ms") or {}).get("p50") is not None]
    best: dict[str, dict[str, Any]] = {}
    for _, r in sorted(timed, key=rank):
        best.setdefault(r.get("artifact"), r)
    return best

def steps_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """What each step bought: params, MACs, size, batch-1 p50, cosine vs the original, accuracy, notes, and the
    stage time when the artifacts record ``meta.stage_time_s``.

    The p50 is the artifact's batch-1 row on the default backend of its format (the first of
    ``format_backends``: onnxruntime for ONNX even when OpenVINO timed it too), named in the cell, e.g.
    ``0.212 (onnxruntime)``. Empty when the report has fewer than two artifacts. The ``status`` key is the
    artifact status (``ok`` or why not) so views can highlight it.

    Example::

        steps_rows(load_report("out"))[0]["p50 ms (batch 1)"]   # '0.212 (onnxruntime)'
    """
    arts = [a for a in report.get("artifacts") or [] if "name" in a and a.get("task") != GENERATION]
    if len(arts) < 2:
        return []
    timed = _batch1_rows(report)
    with_times = any((a.get("meta") or {}).get("stage_time_s") is not None for a in arts)
    out = []
    for a in arts:
        m = a.get("meta") or {}
        vs = m.get("vs_original") or {}
        cos = vs.get("cosine", (a.get("parity") or {}).get("cosine"))
        notes = []
        if m.get("accuracy_before_recovery") is not None:
            notes.append(f"{m['accuracy_before_recovery']:.2f}% before recovery")
        rec = m.get("recovery") or {}
        if rec.get("steps"):
            bought = (f", cosine {rec['cosine_before']:.4f} -> {rec['cosine_after']:.4f}"
                      if rec.get("cosine_before") is not None and rec.get("cosine_after") is not None else "")
            notes.append(f"recovery {rec['steps']} steps in {rec.get('time_s', 0):.0f} s on {rec.get('device', 'cpu')}"
                         + (f" ({rec['stopped_by']})" if rec.get("stopped_by") else "") + bought)
        q = m.get("quantization") or {}
        if q.get("activation_type"):
            notes.append(f"{q['activation_type']} activations / {q.get('weight_type')} weights")
        if (m.get("budget") or {}).get("float_nodes"):
            notes.append(f"{len(m['budget']['float_nodes'])} nodes kept in float")
        row = timed.get(a["name"])
        p50 = "-" if row is None else f"{fmt(row['latency_ms']['p50'])} ({row.get('backend', '?')})"
        cells = {"artifact": str(a["name"]), "stage": str(a.get("stage") or ""), "params": fmt(m.get("params"), ","),
                 "MACs": fmt(m.get("macs"), ","), "size": fmt_size(a.get("size_bytes")), "p50 ms (batch 1)": p50,
                 "cosine vs original": fmt(cos, ".5f"), "accuracy": fmt(a.get("accuracy"), ".2f", "%")}
        if with_times:
            cells["stage time s"] = fmt(m.get("stage_time_s"), ".2f")
        out.append({**cells, "notes": "; ".join(notes), "status": str(a.get("status", "ok"))})
    return out

def backend_choice_lines(report: dict[str, Any]) -> list[str]:
    """One sentence per artifact timed on more than one backend: which one compress recommends (the fastest
    that passed parity) and every backend's p50, e.g. ``model.int8.onnx: openvino, p50 0.150 ms (onnxruntime
    0.210 ms) at batch 1``."""
    lines = []
    for a in report.get("artifacts") or []:
        c = (a.get("meta") or {}).get("backend_choice") or {}
        p50, skipped = c.get("p50_ms") or {}, c.get("not_timed") or {}
        if len(p50) + len(skipped) < 2:
            continue
        best = c.get("recommended")
        others = ", ".join(f"{b} {fmt(t)} ms" + (" (failed parity)" if b in (c.get("failed_parity") or []) else "")
                           for b, t in sorted(p50.items(), key=lambda kv: kv[1]) if b != best)
        others = "; ".join(x for x in [others, *(f"not {b}: {why}" for b, why in skipped.items())] if x)
        head = f"{best}, p50 {fmt(p50[best])} ms" if best else "no backend passed parity"
        lines.append(f"{a.get('name')}: {head} ({others}) at batch {c.get('batch')}"
                     + (f", {c['threads']} thread{'s' if c['threads'] != 1 else ''}" if c.get("threads") else ""))
    return lines

def report_warnings(report: dict[str, Any]) -> list[str]:
    """Every artifact warning, once each, in order."""
    found = [str(w) for w in report.get("warnings") or []]
    found += [str(w) for a in report.get("artifacts") or [] for w in (a.get("meta") or {}).get("warnings") or []]
    return list(dict.fromkeys(found))

def targets_not_delivered(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(target, record) for targets whose status is not ``ok``."""
    return [(t, v) for t, v in (report.get("targets") or {}).items() if isinstance(v, dict) and v.get("status") != "ok"]

SPEEDUP_NOTE = "Speed-up is p50 of PyTorch eager / p50 of the artifact at the same batch size, measured in this run."

def has_speedups(report: dict[str, Any]) -> bool:
    """Whether any result row has a speed-up vs PyTorch eager (device-only benchmarks have none)."""
    return any(r.get("speedup_vs_baseline") is not None for r in report.get("results") or [])

def sweep_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The batch/thread sweep as rows of display strings, one per point (edgesdk.report.sweep); empty unless
    some artifact and backend has more than one point. ``pareto`` is ``yes`` on the frontier of its series; a
    peak RSS that is the process's high-water mark so far, not this configuration's, ends in ``*``."""
    from .sweep import is_sweep, sweep_of

    series = sweep_of(report)
    if not is_sweep(series):
        return []
    return [{"artifact": str(s.get("artifact", "?")), "backend": str(s.get("backend", "?")),
             "batch": str(p.get("batch", "?")), "threads": "auto" if p.get("threads") is None else str(p["threads"]),
             "p50 ms": fmt(p.get("p50_ms")), "throughput/s": fmt(p.get("throughput"), ".1f"),
             "peak RSS MB": fmt(p.get("peak_rss_mb"), ".1f", "" if _rss_scoped(p) else "*"),
             "pareto": "yes" if p.get("pareto") else "-"}
            for s in series for p in s.get("points") or []]

def _rss_scoped(point: dict[str, Any]) -> bool:
    """Whether a sweep point's peak RSS was measured for its configuration alone (or there is none)."""
    return point.get("peak_rss_mb") is None or point.get("peak_rss_scope") == "configuration"

def sweep_note(report: dict[str, Any]) -> str:
    """What the sweep table's Pareto column and peak RSS figures mean, for the kinds of figure the report holds."""
    from .sweep import sweep_of

    points = [p for s in sweep_of(report) for p in s.get("points") or []]
    notes = ["Pareto: no other point of the same artifact and backend has both a lower-or-equal p50 and a "
             "higher-or-equal throughput, one of them strictly."]
    if any(p.get("peak_rss_scope") == "configuration" for p in points):
        notes.append("Peak RSS: this process's peak resident memory while that configuration was timed (the "
                     "high-water mark is reset before each; memory still held from earlier ones counts).")
    if not all(_rss_scoped(p) for p in points):
        notes.append("*: the process's high-water mark so far (not reset per configuration on this OS), which "
                     "only grows down a run.")
    return " ".join(notes)
