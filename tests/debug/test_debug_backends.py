"""edgesdk debug with the artifact on OpenVINO (through edgesdk's own OpenVINO runtime) while the reference
runs on onnxruntime: a real second runtime, on the real digits artifacts."""
from __future__ import annotations

import pytest
from edgesdk.debug import debug
from edgesdk.errors import InputError

from tests.debug.refusals import assert_refused

pytest.importorskip("openvino")


def test_the_fp32_file_on_openvino_agrees_with_itself_on_onnxruntime_to_float_rounding(digits_artifacts):
    fp32 = digits_artifacts / "model.onnx"
    same = debug(fp32, against=fp32)  # one runtime on both sides: bit-identical
    assert all(d.sqnr_db == 200.0 for d in same.layers)
    report = debug(fp32, against=fp32, backend="openvino")
    assert report.backend == "openvino" and report.to_dict()["backend"] == "openvino"
    assert len(report.layers) == len(same.layers)
    assert report.agree and report.first_jump is None
    # another runtime's kernels round differently: not bit-identical, yet within float32 rounding
    assert any(d.sqnr_db < 200.0 for d in report.layers)


def test_int8_on_openvino_is_traced_like_on_onnxruntime(digits_artifacts):
    art = digits_artifacts / "model.int8.onnx"
    ort = {d.tensor: d.sqnr_db for d in debug(art).layers}
    ov = debug(art, backend="openvino")
    assert {d.tensor for d in ov.layers} == set(ort)
    for d in ov.layers:  # the same simulated quantization, up to the runtimes' rounding
        assert d.sqnr_db == pytest.approx(ort[d.tensor], abs=1.0), d.tensor
    assert ov.first_jump is not None


def test_backend_bad_input_is_refused_cleanly(digits_artifacts, tmp_path):
    art = str(digits_artifacts / "model.int8.onnx")
    cases = [
        ([art, "--backend", "tensorrt"], "tensorrt"),
        ([art, "--backend", "openvino", "-O", "precison=bf16"], "unknown option"),
        ([art, "--backend", "openvino", "-O", "precision"], "KEY=VALUE"),
        ([art, "--backend", "openvino", "-O", "precision=int3"], "unknown OpenVINO precision"),
    ]
    assert_refused(cases, tmp_path)
    with pytest.raises(InputError, match="cannot run ONNX"):
        debug(art, backend="litert")
