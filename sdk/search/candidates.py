"""From trials to candidates: each leaf artifact of a trial on each backend, thread count and batch it was
timed at, with its objectives, its budget check and its place on the noise-aware front.

Example::

    cands = candidates_of(trial_record, trial, measurement)
    mark_front(all_cands, space, eval_n=360)   # sets feasible, reasons, on_front, knee, near_knee
"""
from __future__ import annotations

from typing import Any

from .pareto import knee_point, latency_interval, pareto_front, within_noise
from .space import ARTIFACT_PRECISIONS, FALLBACK, FALLBACK_TARGETS, SearchSpace, Trial


def leaf_artifacts(record: dict[str, Any], trial: Trial) -> list[dict[str, Any]]:
    """The artifacts the trial is about: its precision, of the pruned model when it prunes (compress also
    makes the unpruned FP32 export along the way; that is another trial's candidate)."""
    arts = (record.get("manifest") or {}).get("artifacts") or []
    return [a for a in arts if a["precision"] == ARTIFACT_PRECISIONS[trial.precision]
            and a["pruned"] == bool(trial.prune) and (trial.precision != FALLBACK or a["format"] in FALLBACK_TARGETS)]


def candidates_of(record: dict[str, Any], trial: Trial, measurement: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One candidate per (leaf artifact, backend, threads, batch) row of the trial's measurement."""
    leaves = {a["name"]: a for a in leaf_artifacts(record, trial)}
    out = []
    for row in (measurement or {}).get("results") or []:
        art = leaves.get(row.get("artifact"))
        if art is None:
            continue
        lat = row["latency_ms"]
        check = row.get("device_check") or {}
        out.append({
            "id": f"{record['id']}-{row['backend']}-t{row.get('threads') or 'auto'}-b{row['batch']}"
                  + ("" if len(leaves) == 1 else f"-{art['format']}"),
            "trial": record["id"], "label": trial.label, "artifact": art["name"], "format": art["format"],
            "precision": art["precision"], "prune": trial.prune, "backend": row["backend"],
            "threads": row.get("threads"), "batch": row["batch"], "p50": lat["p50"], "p90": lat["p90"],
            "p50_ci": [lat.get("p50_ci_low"), lat.get("p50_ci_high")], "samples_ms": row.get("samples_ms") or [],
            "accuracy": art["accuracy"], "accuracy_drop": art["accuracy_drop"], "cosine": art["cosine"],
            "float_nodes": art.get("float_nodes", 0),  # nodes an int8-fallback trial kept in float
            "size_mb": round(art["size_bytes"] / 1e6, 6), "sha256": art["sha256"],
            "peak_rss_mb": row.get("peak_rss_mb"), "parity_passed": art["parity_passed"],
            "device_parity_passed": (check.get("parity") or {}).get("passed"),
            "device": (measurement.get("device") or {}).get("fleet_resource") or (measurement.get("device") or {}).get(
                "hostname"),
        })
    return out


def judge(c: dict[str, Any], space: SearchSpace) -> None:
    """Set ``feasible`` and ``reasons``: the budgets, and the parity gate here and where it was timed."""
    reasons = []
    if c.get("parity_passed") is False:
        reasons.append("failed the parity gate against PyTorch")
    if c.get("device_parity_passed") is False:
        reasons.append("failed the parity re-check where it was timed")
    reasons += space.budgets.shortfalls(c, space.latency)
    c["feasible"], c["reasons"] = not reasons, reasons


def mark_front(cands: list[dict[str, Any]], space: SearchSpace, *, eval_n: int | None) -> dict[str, Any] | None:
    """Judge every candidate, mark the front of the feasible ones, the knee and those within noise of it;
    return the knee (None when no candidate is feasible)."""
    for c in cands:
        judge(c, space)
        c["latency_ci"] = list(latency_interval(c, space.latency))
        c["on_front"] = c["knee"] = c["near_knee"] = False
    feasible = [c for c in cands if c["feasible"]]
    front = pareto_front(feasible, latency=space.latency, eval_n=eval_n)
    for c in front:
        c["on_front"] = True
    knee = knee_point(front, latency=space.latency)
    if knee is not None:
        knee["knee"] = True
        for c in feasible:
            if c is not knee and within_noise(c, knee, latency=space.latency, eval_n=eval_n):
                c["near_knee"] = True
    return knee


def closest(cands: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The candidates that miss the budgets by the fewest reasons (for the error when none meets them)."""
    return sorted(cands, key=lambda c: (len(c["reasons"]), c.get("p50") or 0))[:n]
