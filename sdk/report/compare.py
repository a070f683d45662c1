"""Regression check between two reports: did NEW get worse than BASE beyond a threshold?

Rows match on (artifact, backend, precision, batch). With threshold ``t`` (``--max-regression 5%``):

- p50 latency regresses when ``new / base - 1 > t`` and the 95% confidence intervals of the two p50s do not
  overlap (new's lower bound above base's upper bound);
- throughput regresses when ``1 - new / base > t`` and the 95% intervals of the two mean latencies (which
  throughput is derived from) do not overlap;
- file size regresses when ``new / base - 1 > t``;
- accuracy regresses when it drops by more than ``max_accuracy_drop`` percentage points
  (default ``t * 100``: 5% allows a 5-point drop);
- parity regresses when it passed in BASE and fails in NEW.

A change beyond the threshold whose intervals overlap is noise: verdict ``ok``, noted "within noise (95% CI
overlap)". The intervals come from each row's ``latency_ms`` (``p50_ci_low``/``p50_ci_high``,
``mean_ci_low``/``mean_ci_high``, written by edgesdk.runtimes.benchmark) or its ``samples_ms``; rows without
them (older reports) are judged on the threshold alone, and the output says so. Improvements follow the same
rule. Rows in only one report are listed as added/removed and never fail the check.

Example::

    result = compare_reports(load_report("base.json"), load_report("new.json"), max_regression=0.05)
    print(compare_to_text(result)); raise SystemExit(1 if result["regressed"] else 0)
"""
from __future__ import annotations

import math

from typing import Any, Callable

from edgesdk.errors import InputError

from .merge import ROW_KEY
from .tables import device_summary, fmt, fmt_size

REGRESSED, IMPROVED, OK = "REGRESSED", "improved", "ok"


def parse_threshold(text: str | float) -> float:
    """``5%`` or ``0.05`` -> 0.05. A bare number must be a fraction below 1 (write ``50%`` for a half).

    Example::

        parse_threshold("5%")    # 0.05
    """
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InputError(f"bad threshold {raw!r}", expected="a percentage like 5% or a fraction like 0.05",
                         found=raw) from None
    if value != value or value < 0 or (not raw.endswith("%") and value >= 1):
        raise InputError(f"bad threshold {raw!r}", expected="a percentage like 5% or a fraction in [0, 1) like 0.05",
                         found=raw, hint="write 5% or 0.05 for five percent")
    return value


def _rel(base: float, new: float) -> float | None:
    if not base:  # from zero: no change, or an unbounded one (a p50 of 0 that became 50 ms is a regression)
        return 0.0 if not new else (math.inf if new > 0 else -math.inf)
    return new / base - 1


def _relative(worse_if_higher: bool) -> Callable[[Any, Any, float, float], tuple[float | None, str]]:
    def check(base: Any, new: Any, t: float, _acc: float) -> tuple[float | None, str]:
        change = _rel(base, new)
        if change is None:
            return None, OK
        worse = change if worse_if_higher else -change
        return change, REGRESSED if worse > t + 1e-12 else (IMPROVED if -worse > t + 1e-12 else OK)
    return check


def _accuracy(base: Any, new: Any, _t: float, max_drop: float) -> tuple[float | None, str]:
    change = new - base
    return change, REGRESSED if -change > max_drop + 1e-9 else (IMPROVED if change > max_drop + 1e-9 else OK)


def _parity(base: Any, new: Any, _t: float, _acc: float) -> tuple[float | None, str]:
    if base and not new:
        return None, REGRESSED
    return None, IMPROVED if new and not base else OK


def _p50(r: dict[str, Any]) -> Any:
    return (r.get("latency_ms") or {}).get("p50")


def _stored_ci(r: dict[str, Any], key: str, from_samples: Callable[[Any], tuple[float, float] | None]
               ) -> tuple[float, float] | None:
    """The stored 95% interval of ``latency_ms[key]`` (else one computed from ``samples_ms``); None when the
    row has neither or the interval does not contain the value (an edited or foreign row: not trusted)."""
    lat = r.get("latency_ms") or {}
    value, lo, hi = lat.get(key), lat.get(f"{key}_ci_low"), lat.get(f"{key}_ci_high")
    if (lo is None or hi is None) and isinstance(r.get("samples_ms"), list):
        try:
            lo, hi = from_samples(r["samples_ms"]) or (None, None)
        except (TypeError, ValueError):  # samples that are not numbers
            lo, hi = None, None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in (value, lo, hi))
    return (float(lo), float(hi)) if numbers and lo <= value <= hi else None


def p50_interval(r: dict[str, Any]) -> tuple[float, float] | None:
    """95% confidence interval of a result row's p50 latency (ms), or None when the row stores no distribution.

    Example::

        p50_interval({"latency_ms": {"p50": 1.0, "p50_ci_low": 0.98, "p50_ci_high": 1.03}})   # (0.98, 1.03)
    """
    from edgesdk.runtimes.bench import median_ci

    return _stored_ci(r, "p50", median_ci)


def throughput_interval(r: dict[str, Any]) -> tuple[float, float] | None:
    """95% interval of a row's throughput, from that of its mean latency (throughput = batch * 1000 / mean).

    Example::

        throughput_interval({"throughput": 100.0, "latency_ms": {"mean": 10.0, "mean_ci_low": 9.0,
                                                                 "mean_ci_high": 12.5}})   # (80.0, 111.1...)
    """
    from edgesdk.runtimes.bench import mean_ci

    ci, mean, thr = _stored_ci(r, "mean", mean_ci), (r.get("latency_ms") or {}).get("mean"), r.get("throughput")
    if ci is None or not isinstance(thr, (int, float)) or ci[0] <= 0:
        return None
    return thr * mean / ci[1], thr * mean / ci[0]


# metric -> (display name, value getter, check(base, new, threshold, max_accuracy_drop) -> (change, verdict)).
METRICS: dict[str, tuple[str, Callable[[dict[str, Any]], Any], Callable[..., tuple[float | None, str]]]] = {
    "p50_ms": ("p50 ms", _p50, _relative(worse_if_higher=True)),
    "throughput": ("throughput/s", lambda r: r.get("throughput"), _relative(worse_if_higher=False)),
    "size_bytes": ("size", lambda r: r.get("size_bytes"), _relative(worse_if_higher=True)),
    "accuracy": ("accuracy %", lambda r: r.get("accuracy"), _accuracy),
    "parity_passed": ("parity", lambda r: r.get("parity_passed"), _parity),
}

# Metrics measured with noise: metric -> the row's 95% interval of it. A verdict other than ok needs the two
# intervals apart.
NOISY: dict[str, Callable[[dict[str, Any]], tuple[float, float] | None]] = {
    "p50_ms": p50_interval, "throughput": throughput_interval}
WITHIN_NOISE = "within noise (95% CI overlap)"
APART = "95% CIs apart"
NO_DISTRIBUTION = "threshold only (no stored distribution)"


def _noise_check(metric: str, brow: dict[str, Any], nrow: dict[str, Any], verdict: str) -> dict[str, Any]:
    """How a noisy metric's verdict was decided: ``{verdict, decided, base_ci, new_ci}``; ok when the
    threshold was crossed but the intervals overlap."""
    get = NOISY.get(metric)
    if get is None:
        return {"verdict": verdict}
    bci, nci = get(brow), get(nrow)
    if bci is None or nci is None:
        return {"verdict": verdict, "decided": NO_DISTRIBUTION if verdict != OK else None}
    apart = nci[0] > bci[1] or nci[1] < bci[0]
    decided = (APART if apart else WITHIN_NOISE) if verdict != OK else None
    return {"verdict": verdict if apart else OK, "decided": decided, "base_ci": list(bci), "new_ci": list(nci)}


def _index(report: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in report.get("results") or []:
        out.setdefault(tuple(r.get(k) for k in ROW_KEY), r)
    return out


def compare_reports(base: dict[str, Any], new: dict[str, Any], *, max_regression: float = 0.05,
                    max_accuracy_drop: float | None = None, base_name: str = "base",
                    new_name: str = "new") -> dict[str, Any]:
    """Compare matching rows metric by metric; ``regressed`` is True when any metric regressed.

    Raises InputError when the reports share no row (nothing to compare).
    """
    acc_drop = max_regression * 100 if max_accuracy_drop is None else max_accuracy_drop
    if acc_drop < 0 or acc_drop != acc_drop:
        raise InputError("bad --max-accuracy-drop", expected="a number of percentage points >= 0", found=str(acc_drop))
    b, n = _index(base), _index(new)
    common = [k for k in b if k in n]
    if not common:
        show = lambda keys: "; ".join(" ".join(str(x) for x in k) for k in list(keys)[:5]) or "none"  # noqa: E731
        raise InputError(f"{base_name} and {new_name} have no result rows in common",
                         expected=f"rows with the same {', '.join(ROW_KEY)} in both reports",
                         found=f"{base_name}: {show(b)}; {new_name}: {show(n)}",
                         hint="compare reports of the same artifacts (same recipe, backends and batch sizes)")
    rows, regressions, noise = [], [], []
    for key in common:
        where = " ".join(str(x) for x in key)
        metrics = [m for m in (_metric(name, b[key], n[key], max_regression, acc_drop) for name in METRICS) if m]
        for m in metrics:
            if m["verdict"] == REGRESSED:
                regressions.append(f"{where}: {m['label']} {_value(m['metric'], m['base'])} -> " + (
                    f"not measured in {new_name}" if m.get("missing") else
                    f"{_value(m['metric'], m['new'])} ({_change(m['metric'], m['change'])}"
                    + (f", {m['decided']})" if m.get("decided") else ")")))
            elif m.get("decided") == WITHIN_NOISE:
                noise.append(f"{where}: {m['label']} {_change(m['metric'], m['change'])} {WITHIN_NOISE}")
        verdicts = {m["verdict"] for m in metrics}
        verdict = REGRESSED if REGRESSED in verdicts else (IMPROVED if IMPROVED in verdicts else OK)
        rows.append({**dict(zip(ROW_KEY, key)), "verdict": verdict, "metrics": metrics})
    return {"base": base_name, "new": new_name, "max_regression": max_regression, "max_accuracy_drop": acc_drop,
            "base_device": device_summary(base.get("device")), "new_device": device_summary(new.get("device")),
            "regressed": bool(regressions), "regressions": regressions, "within_noise": noise, "rows": rows,
            "added": [dict(zip(ROW_KEY, k)) for k in n if k not in b],
            "removed": [dict(zip(ROW_KEY, k)) for k in b if k not in n]}


def _metric(name: str, brow: dict[str, Any], nrow: dict[str, Any], t: float, acc_drop: float
            ) -> dict[str, Any] | None:
    """One metric of a matching row pair: ``{metric, label, base, new, change, verdict[, decided, base_ci,
    new_ci, missing]}``; None when BASE did not measure it."""
    label, get, check = METRICS[name]
    bv, nv = get(brow), get(nrow)
    if bv is None:
        return None
    if nv is None:  # measured before, not now: a gate must not pass on what it could not check
        verdict = REGRESSED if name in ("accuracy", "parity_passed") else OK
        return {"metric": name, "label": label, "base": bv, "new": None, "change": None, "verdict": verdict,
                "missing": True}
    change, verdict = check(bv, nv, t, acc_drop)
    noise = {k: v for k, v in _noise_check(name, brow, nrow, verdict).items() if v is not None}
    return {"metric": name, "label": label, "base": bv, "new": nv, "change": change, **noise}


def _value(metric: str, v: Any) -> str:
    if v is None:
        return "missing"
    if metric == "size_bytes":
        return fmt_size(v)
    if metric == "parity_passed":
        return "pass" if v else "FAIL"
    return fmt(v, ".1f" if metric == "throughput" else (".2f" if metric == "accuracy" else ".3f"))


def _change(metric: str, change: float | None) -> str:
    if change is None:
        return "-"
    if math.isinf(change):
        return "from 0"
    return f"{change:+.2f} pts" if metric == "accuracy" else f"{change * 100:+.1f}%"


def compare_to_text(result: dict[str, Any]) -> str:
    """A plain-text table (one line per row and metric), the added/removed rows and the verdict."""
    t = result["max_regression"] * 100
    lines = [f"compare {result['base']} -> {result['new']}",
             f"thresholds: p50 latency and size +{t:g}%, throughput -{t:g}%, accuracy "
             f"-{result['max_accuracy_drop']:g} points, parity pass -> fail",
             "noise: a p50 or throughput change beyond the threshold counts only when the two runs' 95% confidence "
             "intervals do not overlap (rows without a stored distribution: the threshold alone)"]
    if result["base_device"] != result["new_device"]:
        lines.append(f"note: different devices: {result['base_device']} -> {result['new_device']}")
    table = [["artifact", "backend", "precision", "batch", "metric", "base", "new", "change", "decided", "verdict"]]
    for r in result["rows"]:
        for m in r["metrics"]:
            table.append([str(r[k]) for k in ROW_KEY] + [m["label"], _value(m["metric"], m["base"]),
                                                         _value(m["metric"], m["new"]),
                                                         _change(m["metric"], m["change"]), m.get("decided") or "",
                                                         m["verdict"]])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    for what in ("added", "removed"):
        for k in result[what]:
            lines.append(f"{what}: {' '.join(str(k[x]) for x in ROW_KEY)} (only in "
                         f"{result['new'] if what == 'added' else result['base']}; not checked)")
    lines.append("")
    if result["regressed"]:
        lines.append(f"REGRESSED: {len(result['regressions'])} regression(s)")
        lines += [f"  - {r}" for r in result["regressions"]]
    else:
        lines.append(f"ok: no regression beyond the thresholds in {len(result['rows'])} matching row(s)")
    noise = result.get("within_noise") or []
    if noise:
        lines.append(f"{len(noise)} change(s) beyond the threshold were within noise:")
        lines += [f"  - {n}" for n in noise]
    return "\n".join(lines) + "\n"
