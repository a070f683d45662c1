"""A noise-aware Pareto front: latency is a distribution, accuracy a binomial estimate, size exact.

Candidate ``a`` dominates ``b`` when it is nowhere *measurably* worse and somewhere measurably better:
latencies are apart only when their confidence intervals do not overlap, accuracies only beyond the
binomial noise of the eval set, sizes beyond 1%. A candidate within noise of another on every objective
dominates nothing and is dominated by nothing, so both stay on the front: the front never claims an
order the measurements cannot back. The relation is antisymmetric (a measurably-better objective of
``a`` is a measurably-worse one of ``b``), so every non-empty set has a front.

Example::

    front = pareto_front(candidates, latency="p50", eval_n=360)
    knee = knee_point(front, latency="p50")
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from edgesdk.runtimes.bench import quantile_ci

SIZE_TOLERANCE = 0.01  # sizes within 1% are the same size
Z95 = 1.96


def latency_interval(c: dict[str, Any], latency: str) -> tuple[float, float]:
    """The candidate's 95% interval of its latency statistic (its own value when too few runs were kept)."""
    q = {"p50": 0.5, "p90": 0.9}[latency]
    ci = quantile_ci(c.get("samples_ms") or [], q)
    value = c[latency]
    return ci if ci is not None else (value, value)


def _accuracy_apart(a: float, b: float, n: int | None) -> bool:
    """True when two accuracies (percent, on the same ``n`` samples) differ beyond the 95% binomial noise of
    their difference; without ``n`` any difference counts."""
    if n is None or n <= 0:
        return a != b
    p = min(max((a + b) / 200.0, 1.0 / n), 1 - 1.0 / n)
    return abs(a - b) > Z95 * math.sqrt(2 * p * (1 - p) / n) * 100.0


def compare(a: dict[str, Any], b: dict[str, Any], *, latency: str, eval_n: int | None) -> tuple[int, int]:
    """(objectives where ``a`` is measurably better than ``b``, where it is measurably worse)."""
    better = worse = 0
    (alo, ahi), (blo, bhi) = a["_ci"], b["_ci"]
    if ahi < blo:
        better += 1
    elif bhi < alo:
        worse += 1
    quality = "accuracy" if a.get("accuracy") is not None and b.get("accuracy") is not None else "cosine"
    qa, qb = a.get(quality), b.get(quality)
    if qa is not None and qb is not None:
        apart = _accuracy_apart(qa, qb, eval_n) if quality == "accuracy" else abs(qa - qb) > 1e-6
        if apart:
            better, worse = (better + 1, worse) if qa > qb else (better, worse + 1)
    sa, sb = a.get("size_mb"), b.get("size_mb")
    if sa is not None and sb is not None and abs(sa - sb) > SIZE_TOLERANCE * max(sa, sb):
        better, worse = (better + 1, worse) if sa < sb else (better, worse + 1)
    return better, worse


def dominates(a: dict[str, Any], b: dict[str, Any], *, latency: str, eval_n: int | None = None) -> bool:
    """``a`` is nowhere measurably worse than ``b`` and measurably better on at least one objective."""
    better, worse = compare(_with_ci(a, latency), _with_ci(b, latency), latency=latency, eval_n=eval_n)
    return better > 0 and worse == 0


def _with_ci(c: dict[str, Any], latency: str) -> dict[str, Any]:
    return c if "_ci" in c else {**c, "_ci": latency_interval(c, latency)}


def pareto_front(candidates: Sequence[dict[str, Any]], *, latency: str, eval_n: int | None = None
                 ) -> list[dict[str, Any]]:
    """The candidates no other candidate dominates, in the given order."""
    cs = [_with_ci(c, latency) for c in candidates]

    def beaten(i: int) -> bool:
        for j, other in enumerate(cs):
            better, worse = compare(other, cs[i], latency=latency, eval_n=eval_n)
            if j != i and better > 0 and worse == 0:
                return True
        return False

    return [candidates[i] for i in range(len(cs)) if not beaten(i)]


def _quality(c: dict[str, Any]) -> float | None:
    return c.get("accuracy") if c.get("accuracy") is not None else c.get("cosine")


def knee_point(front: Sequence[dict[str, Any]], *, latency: str) -> dict[str, Any] | None:
    """The front's best compromise: the point nearest the ideal (best latency, quality and size of the front)
    once each objective is scaled to [0, 1] over the front. None for an empty front."""
    if not front:
        return None
    axes = [(lambda c: c[latency], 1), (_quality, -1), (lambda c: c.get("size_mb"), 1)]

    def scaled(c: dict[str, Any]) -> float:
        total = 0.0
        for get, sign in axes:
            values = [get(o) for o in front if get(o) is not None]
            if get(c) is None or not values or max(values) == min(values):
                continue
            best = min(values) if sign > 0 else max(values)
            total += (abs(get(c) - best) / (max(values) - min(values))) ** 2
        return total

    return min(front, key=scaled)


def within_noise(a: dict[str, Any], b: dict[str, Any], *, latency: str, eval_n: int | None = None) -> bool:
    """True when no objective tells ``a`` and ``b`` apart beyond the noise."""
    return compare(_with_ci(a, latency), _with_ci(b, latency), latency=latency, eval_n=eval_n) == (0, 0)
