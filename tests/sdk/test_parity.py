"""The parity rule: Polygraphy's abs-AND-rel element test, NaN/Inf handling, cosine, top-1, messages."""
from __future__ import annotations

import numpy as np

from edgesdk.parity import DEFAULT_TOLERANCES, compare


def test_identical_passes():
    a = {"y": np.arange(12, dtype=np.float32).reshape(3, 4)}
    r = compare([a, a], [a, a], atol=1e-4, rtol=1e-4)
    d = r.to_dict()
    assert r.passed and d["max_abs_err"] == 0 and d["cosine"] == 1.0 and d["top1_agreement"] == 1.0


def test_element_fails_only_when_abs_and_rel_both_exceed():
    ref = {"y": np.array([[1000.0, 1e-6]])}
    # abs err 0.05 > atol but rel 5e-5 < rtol -> pass; tiny value: rel huge but abs tiny -> pass
    got = {"y": np.array([[1000.05, 2e-6]])}
    assert compare(ref, got, atol=1e-4, rtol=1e-4).passed
    bad = {"y": np.array([[1001.0, 2e-6]])}
    r = compare(ref, bad, atol=1e-4, rtol=1e-4)
    assert not r.passed
    msg = r.failure_message()
    assert "output 'y'" in msg and "1 of 2 elements" in msg and "index (0, 0)" in msg and "expected 1000" in msg


def test_nan_inf_rules():
    ref = {"y": np.array([[1.0, np.nan, np.inf]])}
    assert compare(ref, {"y": np.array([[1.0, np.nan, np.inf]])}, atol=0, rtol=0).passed
    r = compare(ref, {"y": np.array([[1.0, 2.0, np.inf]])}, atol=1, rtol=1)
    assert not r.passed and "NaN/Inf" in r.failure_message()
    assert not compare({"y": np.array([[1.0, 2.0]])}, {"y": np.array([[1.0, np.nan]])}, atol=1, rtol=1).passed


def test_shape_and_missing_output():
    ref = {"y": np.zeros((2, 3))}
    r = compare(ref, {"y": np.zeros((3, 2))}, atol=1, rtol=1)
    assert not r.passed and "shape (3, 2)" in r.failure_message()
    r = compare(ref, {"z": np.zeros((2, 3))}, atol=1, rtol=1)
    assert not r.passed and "missing" in r.failure_message()


def test_cosine_threshold_and_top1():
    rng = np.random.default_rng(0)
    ref = {"logits": rng.standard_normal((64, 10))}
    noisy = {"logits": ref["logits"] + rng.standard_normal((64, 10)) * 0.5}
    r = compare(ref, noisy, atol=10, rtol=10, min_cosine=0.99)
    d = r.to_dict()
    assert not r.passed and d["cosine"] < 0.99 and 0 < d["top1_agreement"] < 1
    assert "cosine below" in r.failure_message()
    assert DEFAULT_TOLERANCES["fp32"].atol == 1e-4 == DEFAULT_TOLERANCES["fp32"].rtol


def test_integer_outputs_must_match_exactly_even_without_element_tolerances():
    ids = np.arange(64, dtype=np.int64).reshape(4, 16)
    wrong = ids.copy()
    wrong[1, 3] += 84  # one wrong class id: cosine stays ~0.99, which an INT8 cosine rule would accept
    r = compare({"ids": ids}, {"ids": wrong}, atol=None, rtol=None, min_cosine=0.98)
    assert not r.passed and r.outputs["ids"].num_failed == 1
    assert "expected 19, got 103" in r.failure_message()
    big = np.array([2**53 + 1], dtype=np.int64)  # beyond float64's integers: compared as integers
    assert not compare({"n": big}, {"n": big - 1}, atol=1e-4, rtol=1e-4).passed
    mask = np.array([True, False])
    assert compare({"m": mask}, {"m": mask.copy()}, atol=None, rtol=None).passed


def test_failure_message_gives_the_notes_when_no_output_failed():
    ref = [{"y": np.ones(3, np.float32)}] * 2
    r = compare(ref, ref[:1], atol=1e-4, rtol=1e-4)
    assert not r.passed and "2 reference batches vs 1 candidate batches" in r.failure_message()
