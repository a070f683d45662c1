"""The parity rule: Polygraphy's abs-AND-rel element test, NaN/Inf handling, cosine, top-1, messages; the
per-precision rules (offset-robust measures for INT8/FP16/BF16, an fp32 atol scaled to the output) and the
Tolerance API the gate and the on-device re-check share."""
from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest

from edgesdk.errors import ArtifactError
from edgesdk.parity import DEFAULT_TOLERANCES, SQNR_CAP_DB, TOLERANCE_KEYS, Tolerance, compare, tolerance_for


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


# --- the per-precision rules: offset-robust measures, scaled fp32 atol, NaN honesty, the Tolerance API ---

def _scores(seed: int = 0, batches: int = 4) -> list[dict[str, np.ndarray]]:
    """Sigmoid detector scores around 0.5 with little spread: offset-dominated (raw cosine is blind)."""
    rng = np.random.default_rng(seed)
    return [{"scores": (1 / (1 + np.exp(-rng.normal(0, 0.06, (8, 1, 16, 16))))).astype(np.float32)}
            for _ in range(batches)]


def _collapsed(kind: str, ref: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    if kind == "constant":
        return [{"scores": np.full_like(b["scores"], 0.5)} for b in ref]
    # a collapsed map: the right level, jitter that has nothing to do with the input
    return [{"scores": (0.5 + rng.normal(0, 0.002, b["scores"].shape)).astype(np.float32)} for b in ref]


@pytest.mark.parametrize("kind", ["constant", "collapsed"])
def test_int8_catches_a_collapsed_score_map_the_raw_cosine_misses(kind):
    ref = _scores()
    got = _collapsed(kind, ref)
    blind = compare(ref, got, atol=None, rtol=None, min_cosine=0.98)  # the old INT8 rule
    assert blind.passed and blind.to_dict()["cosine"] > 0.999
    r = compare(ref, got, tolerance=tolerance_for("int8"))
    d = r.to_dict()
    assert not r.passed and d["centered_cosine"] < 0.2 and d["nrmse"] > 0.9
    assert "centred cosine below the required 0.95" in r.failure_message()


def test_int8_catches_a_swapped_channel_pair():
    rng = np.random.default_rng(0)
    logits = [{"logits": rng.standard_normal((16, 10)).astype(np.float32)} for _ in range(4)]
    swapped = [{"logits": b["logits"][:, [1, 0, *range(2, 10)]]} for b in logits]
    r = compare(logits, swapped, tolerance=tolerance_for("int8"))
    o = r.outputs["logits"]
    assert not r.passed and o.top1_agreement < 0.9 and o.centered_cosine < 0.95
    feat = [{"f": rng.standard_normal((4, 8, 6, 6)).astype(np.float32) + 6.0} for _ in range(4)]  # offset 6
    fswap = [{"f": b["f"][:, [0, 1, 2, 3, 4, 5, 7, 6]]} for b in feat]
    assert compare(feat, fswap, atol=None, rtol=None, min_cosine=0.98).passed  # the offset hid it
    r = compare(feat, fswap, tolerance=tolerance_for("int8"))
    assert not r.passed and r.outputs["f"].nrmse > 0.35 and "nrmse above the allowed 0.35" in r.failure_message()


def _static_int8_conv_net(tmp_path):
    """A tiny conv net (classifier head + sigmoid score map) and its genuine onnxruntime static INT8 model."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())
            self.score, self.head = torch.nn.Conv2d(16, 1, 1), torch.nn.Linear(16, 10)

        def forward(self, x):
            f = self.body(x)
            return self.head(f.mean((2, 3))), torch.sigmoid(self.score(f))

    torch.manual_seed(0)
    net = Net().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(tmp_path / "m.onnx"), input_names=["x"],
                          output_names=["logits", "scores"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    rng = np.random.default_rng(0)
    calib = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(32)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(calib, None)

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" advice
    try:
        quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    xs = [rng.standard_normal((16, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    with torch.no_grad():
        ref = [dict(zip(("logits", "scores"), (t.numpy() for t in net(torch.from_numpy(x))))) for x in xs]
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    return ref, [dict(zip(("logits", "scores"), sess.run(None, {"x": x}))) for x in xs]


def test_genuine_static_int8_passes_the_int8_rule(tmp_path):
    ref, got = _static_int8_conv_net(tmp_path)
    r = compare(ref, got, tolerance=tolerance_for("int8"))
    assert r.passed, r.failure_message()
    s = r.outputs["scores"]
    # measured: cosine 0.99999, centred 0.984, nrmse 0.205, SQNR 45 dB: real noise, offset-dominated map
    assert s.cosine > 0.9999 and 0.95 < s.centered_cosine < 0.999 and 0.02 < s.nrmse < 0.35
    assert r.outputs["logits"].top1_agreement == 1.0 and 20 < s.sqnr_db < SQNR_CAP_DB


def test_top1_ignores_near_ties_but_not_real_flips():
    """Embedding-like 2-D output: 5% rms noise flips argmaxes among near-tied dims, which is noise."""
    rng = np.random.default_rng(0)
    ref = [{"e": rng.standard_normal((32, 256))} for _ in range(4)]
    noisy = [{"e": b["e"] + rng.normal(0, 0.05, b["e"].shape)} for b in ref]
    r = compare(ref, noisy, tolerance=tolerance_for("int8"))
    o = r.outputs["e"]
    assert r.passed and o.top1_exact_agreement < 0.95 and o.top1_agreement == 1.0
    plain = compare(ref, noisy, tolerance=Tolerance(None, None, min_top1=0.95))  # no margin: every flip counts
    assert not plain.passed and plain.outputs["e"].top1_agreement == o.top1_exact_agreement


def _log_probs(seed: int = 0) -> np.ndarray:
    """OCR-like CTC log-probabilities (T, N, C): magnitudes 4-20, the winning class near 0."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (40, 4, 80))
    logits[..., 0] += 14  # the blank class wins: its log-prob is ~0
    return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)


def test_fp32_tolerates_float_noise_scaled_to_the_output():
    ref = _log_probs()
    got = ref.copy()
    i = np.unravel_index(np.abs(ref).argmin(), ref.shape)
    got[i] += np.float32(1.4e-4)  # summation/cancellation noise on an element near 0, output scale ~20
    assert abs(ref[i]) < 1e-4 and np.abs(ref).max() > 15
    old = compare({"lp": ref}, {"lp": got}, atol=1e-4, rtol=1e-4)  # the old rule (and the keyword form)
    assert not old.passed and old.outputs["lp"].num_failed == 1
    r = compare({"lp": ref}, {"lp": got}, tolerance=tolerance_for("fp32"))
    eff = r.to_dict()["outputs"]["lp"]["atol_effective"]
    assert r.passed and eff == pytest.approx(1e-5 * float(np.abs(ref).max())) and eff > 1.4e-4


@pytest.mark.parametrize("bend", ["wrong op", "sign flip on one channel", "3% scale"])
def test_fp32_still_fails_a_real_mismatch(bend):
    ref = _log_probs()
    got = {"wrong op": lambda: np.exp(ref),  # softmax instead of log-softmax
           "sign flip on one channel": lambda: np.concatenate([ref[..., :5], -ref[..., 5:6], ref[..., 6:]], -1),
           "3% scale": lambda: ref * np.float32(1.03)}[bend]()
    r = compare({"lp": ref}, {"lp": got}, tolerance=tolerance_for("fp32"))
    assert not r.passed and r.outputs["lp"].num_failed > 0 and "elements exceed atol=" in r.failure_message()


def test_nan_mismatches_never_sit_next_to_a_perfect_score():
    ref = {"y": np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)}
    got = {"y": ref["y"].copy()}
    got["y"].reshape(-1)[::5][:195] = np.nan  # 195 NaNs, every other element exact
    for tol in (tolerance_for("fp32"), tolerance_for("int8"), Tolerance(None, None)):
        r = compare(ref, got, tolerance=tol)
        d = r.to_dict()
        assert not r.passed and d["nonfinite_mismatch"] == 195
        assert d["cosine"] is None and d["max_abs_err"] is None and d["sqnr_db"] is None
        assert d["centered_cosine"] is None and d["outputs"]["y"]["cosine"] is None
        assert r.summary().startswith("FAIL: 195 NaN/Inf mismatches, max abs n/a") and "1.000000" not in r.summary()
        msg = r.failure_message()
        assert msg.startswith("output 'y': 195 NaN/Inf mismatches of 1000 elements") and "cosine n/a" in msg
        assert "first NaN/Inf mismatch batch 0 index (0, 0)" in msg and "1.000000" not in msg
        measures = {k: v for k, v in d.items() if k != "outputs"}  # (the worst element's "got" is the NaN)
        json.dumps(measures, allow_nan=False)


def test_identical_outputs_report_finite_perfect_measures():
    a = [{"y": np.linspace(0, 1, 64).reshape(8, 8)}] * 3
    r = compare(a, a, tolerance=tolerance_for("int8"))
    d = r.to_dict()
    assert r.passed and d["sqnr_db"] == SQNR_CAP_DB and d["nrmse"] == 0.0 and d["centered_cosine"] == pytest.approx(1)
    assert "SQNR 200.0 dB" in r.summary()
    json.dumps(d, allow_nan=False)


def test_centring_is_over_all_batches_and_stable_under_a_large_offset():
    rng = np.random.default_rng(0)
    ref = [{"y": 1e6 + rng.standard_normal(500) + k} for k in range(4)]  # batch means differ: centre globally
    got = [{"y": b["y"] + rng.normal(0, 0.3, 500)} for b in ref]
    r_all, c_all = (np.concatenate([b["y"] for b in x]) for x in (ref, got))
    o = compare(ref, got).outputs["y"]
    assert o.centered_cosine == pytest.approx(np.corrcoef(r_all, c_all)[0, 1], abs=1e-9)
    assert o.nrmse == pytest.approx(np.sqrt(np.mean((r_all - c_all) ** 2)) / r_all.std(), rel=1e-6)
    assert o.sqnr_db == pytest.approx(10 * math.log10(np.sum(r_all ** 2) / np.sum((r_all - c_all) ** 2)), rel=1e-9)


def test_a_constant_reference_is_not_centred():
    ref = [{"anchors": np.full((4, 8), 0.25)}]  # a detector's fixed anchor grid
    got = [{"anchors": np.full((4, 8), 0.25) + np.random.default_rng(0).normal(0, 1e-4, (4, 8))}]
    o = compare(ref, got, tolerance=tolerance_for("int8")).outputs["anchors"]
    assert o.passed and o.centered_cosine is None and o.nrmse < 1e-3  # nrmse relative to its rms here
    moved = [{"anchors": np.full((4, 8), 0.5)}]
    assert not compare(ref, moved, tolerance=tolerance_for("int8")).passed  # the level moved: nrmse 1


def test_integer_outputs_are_exact_under_every_default():
    ids = np.arange(0, 1_000_000, 15_625, dtype=np.int64).reshape(8, 8)  # large ids: a scaled atol would hide
    wrong = ids.copy()
    wrong[2, 2] += 1
    for precision in ("fp32", "fp16", "bf16", "int8"):
        r = compare({"ids": ids}, {"ids": wrong}, tolerance=tolerance_for(precision))
        assert not r.passed and r.outputs["ids"].num_failed == 1 and r.outputs["ids"].atol_effective is None
        assert "1 of 64 elements differ (integer outputs must match exactly)" in r.failure_message()
        assert compare({"ids": ids}, {"ids": ids.copy()}, tolerance=tolerance_for(precision)).passed


def test_tolerance_round_trips_through_the_result_and_json():
    ref = _scores()
    for precision, tol in DEFAULT_TOLERANCES.items():
        d = json.loads(json.dumps(compare(ref, ref, tolerance=tol).to_dict()))
        assert set(TOLERANCE_KEYS) <= set(d) and Tolerance.from_dict(d) == tol, precision
    assert {"passed", "max_abs_err", "max_rel_err", "cosine", "top1_agreement", "atol", "rtol", "min_cosine",
            "outputs", "centered_cosine", "sqnr_db", "nrmse", "min_centered_cosine", "min_top1"} <= set(d)


def test_an_old_manifest_is_judged_by_the_old_rule():
    old = {"passed": True, "atol": None, "rtol": None, "min_cosine": 0.98, "cosine": 0.999}
    tol = Tolerance.from_dict(old)
    assert tol == Tolerance(None, None, 0.98) and Tolerance.from_dict(None) == Tolerance(None, None)
    ref = _scores()
    got = _collapsed("constant", ref)
    assert compare(ref, got, tolerance=tol).passed == compare(ref, got, atol=None, rtol=None, min_cosine=0.98).passed
    with pytest.raises(ArtifactError, match="'min_top1' in the manifest is not a number"):
        Tolerance.from_dict({"atol": 1e-4, "min_top1": "0.9"})


def test_tolerance_for_applies_overrides_like_the_gate():
    assert tolerance_for("int8", atol=1e-3, rtol=1e-3).atol is None  # no element rule at INT8
    t = tolerance_for("fp32", atol=1e-6)
    assert t.atol == 1e-6 and t.atol_scale is None and t.rtol == 1e-4  # a user atol is taken as given
    loose = tolerance_for("int8", min_cosine=0.9)
    assert loose.min_cosine == loose.min_centered_cosine == 0.9 and loose.max_nrmse > 0.48
    strict = tolerance_for("int8", min_cosine=0.999)
    assert strict.min_cosine == 0.999 and strict.min_centered_cosine == DEFAULT_TOLERANCES["int8"].min_centered_cosine
    assert tolerance_for("int4-something") == DEFAULT_TOLERANCES["fp32"]
    with pytest.raises(TypeError, match="not both"):
        compare({"y": np.ones(2)}, {"y": np.ones(2)}, tolerance=tolerance_for("fp32"), atol=1e-4)


def test_check_artifact_rebuilds_the_rule_from_the_manifest(tmp_path):
    """On the device: an artifact that outputs a flat 0.5 map passes an old manifest's rule, not a new one."""
    import onnx
    from onnx import TensorProto, helper

    from edgesdk.reference import ReferenceSet, check_artifact
    from edgesdk.runtimes import load

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["scores"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1, 16, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    expected = _scores()
    ref = ReferenceSet(inputs=[{"x": np.full_like(b["scores"], 0.5)} for b in expected],
                       outputs={"pytorch": expected}, eval_data=None)
    new_entry = {"parity": compare(expected, expected, tolerance=tolerance_for("int8")).to_dict()}
    old_entry = {"parity": {"passed": True, "atol": None, "rtol": None, "min_cosine": 0.98}}
    with load(tmp_path / "m.onnx") as sess:
        new, old = check_artifact(sess, ref, new_entry), check_artifact(sess, ref, old_entry)
    assert old["parity"]["passed"] is True and old["parity"]["min_centered_cosine"] is None
    p = new["parity"]
    assert p["passed"] is False and "centred cosine below" in p["failure"]
    assert p["min_centered_cosine"] == 0.95 and p["centered_cosine"] < 0.2 and p["sqnr_db"] > 20
    assert p["nonfinite_mismatch"] == 0 and p["atol_effective"] == {"scores": None}
    json.dumps(new, allow_nan=False)
