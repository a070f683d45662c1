"""The noise-aware front on constructed measurements (fixed sample lists, no timing)."""
from __future__ import annotations

import numpy as np

from edgesdk.search.candidates import mark_front
from edgesdk.search.pareto import dominates, knee_point, pareto_front, within_noise
from edgesdk.search.space import Budgets, SearchSpace


def cand(name, center, spread, accuracy=99.0, size=1.0, n=60):
    samples = list(np.linspace(center - spread, center + spread, n))
    return {"id": name, "p50": float(np.median(samples)), "p90": float(np.percentile(samples, 90)),
            "samples_ms": samples, "accuracy": accuracy, "size_mb": size, "cosine": 0.999}


def test_overlapping_latencies_do_not_dominate():
    a, b = cand("a", 1.00, 0.2), cand("b", 1.05, 0.2)  # a is faster on paper, inside the noise
    assert not dominates(a, b, latency="p50") and not dominates(b, a, latency="p50")
    assert within_noise(a, b, latency="p50")
    assert {c["id"] for c in pareto_front([a, b], latency="p50")} == {"a", "b"}


def test_separated_latency_dominates_when_nothing_is_worse():
    fast, slow = cand("fast", 1.0, 0.05), cand("slow", 2.0, 0.05)
    assert dominates(fast, slow, latency="p50") and not dominates(slow, fast, latency="p50")
    assert [c["id"] for c in pareto_front([slow, fast], latency="p50")] == ["fast"]


def test_accuracy_within_binomial_noise_is_a_tie_and_beyond_it_counts():
    fast = cand("fast", 1.0, 0.05, accuracy=98.9)
    slow_better = cand("slow", 2.0, 0.05, accuracy=99.2)  # 0.3 points on 360 samples: noise
    assert dominates(fast, slow_better, latency="p50", eval_n=360)
    slow_much_better = cand("slow2", 2.0, 0.05, accuracy=99.9)
    low = cand("low", 1.0, 0.05, accuracy=90.0)
    assert not dominates(low, slow_much_better, latency="p50", eval_n=360)
    assert {c["id"] for c in pareto_front([low, slow_much_better], latency="p50", eval_n=360)} == {"low", "slow2"}


def test_size_counts_beyond_one_percent():
    big, small = cand("big", 1.0, 0.2, size=1.0), cand("small", 1.0, 0.2, size=0.25)
    assert dominates(small, big, latency="p50") and not dominates(big, small, latency="p50")
    assert not dominates(cand("x", 1.0, 0.2, size=1.0), cand("y", 1.0, 0.2, size=1.005), latency="p50")


def test_knee_is_the_balanced_point_and_budgets_mark_the_rest():
    pts = [cand("fast-bad", 1.0, 0.01, accuracy=80.0, size=1.0), cand("mid", 1.5, 0.01, accuracy=98.0, size=1.0),
           cand("slow-good", 3.0, 0.01, accuracy=99.0, size=1.0)]
    assert knee_point(pareto_front(pts, latency="p50", eval_n=10000), latency="p50")["id"] == "mid"
    pts.append(cand("too-slow", 6.0, 0.01, accuracy=99.9, size=1.0))
    space = SearchSpace(budgets=Budgets(max_latency_ms=5.0))
    for c in pts:
        c.update(parity_passed=True, device_parity_passed=None, accuracy_drop=None)
    knee = mark_front(pts, space, eval_n=10000)
    assert knee["id"] == "mid" and knee["knee"]
    by = {c["id"]: c for c in pts}
    assert not by["too-slow"]["feasible"] and "p50 latency 6.000 ms > 5.0 ms" in by["too-slow"]["reasons"][0]
    assert all(by[k]["on_front"] for k in ("fast-bad", "mid", "slow-good")) and not by["too-slow"]["on_front"]
    failed = cand("failed", 0.5, 0.01, accuracy=99.9)
    failed.update(parity_passed=False, device_parity_passed=None, accuracy_drop=None)
    mark_front(pts + [failed], space, eval_n=10000)
    assert not failed["feasible"] and not failed["on_front"]


def test_front_is_never_empty_and_never_cycles():
    rng = np.random.default_rng(0)
    for _ in range(30):
        pts = [cand(str(i), float(rng.uniform(1, 3)), float(rng.uniform(0.01, 0.5)),
                    accuracy=float(rng.uniform(90, 99)), size=float(rng.uniform(0.1, 1))) for i in range(8)]
        front = pareto_front(pts, latency="p50", eval_n=360)
        assert front
        for a in pts:
            for b in pts:
                assert not (dominates(a, b, latency="p50", eval_n=360) and dominates(b, a, latency="p50", eval_n=360))
        for f in front:
            assert not any(dominates(o, f, latency="p50", eval_n=360) for o in pts)
