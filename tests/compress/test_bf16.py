"""--quantize bf16: an OpenVINO IR run with bf16 inference precision, refused on CPUs without bf16 arithmetic.

On a CPU with bf16 the artifact is built, gated and loaded for real; on one without, the refusal is tested
for real and the artifact path (conversion, manifest with the IR's weights and the session options, gate,
load(DIR)) runs with the CPU check answered yes, where OpenVINO computes in f32 (and says so).
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import edgesdk
from edgesdk.cli import main
from edgesdk.errors import InputError
from edgesdk.runtimes import load
from edgesdk.runtimes.fingerprint import bf16_supported
from edgesdk.runtimes.registry import backend_installed
from tests.models import build, make_inputs

needs_openvino = pytest.mark.skipif(not backend_installed("openvino"), reason="needs openvino")


def test_bf16_needs_the_isa():
    assert bf16_supported(["avx2", "avx512f", "avx512_bf16"]) and bf16_supported(["amx_tile", "amx_bf16"])
    assert not bf16_supported(["avx2", "avx512f", "avx512_vnni"]) and not bf16_supported(["neon", "asimd"])


def test_bf16_is_refused_before_any_work_on_a_cpu_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr("edgesdk.runtimes.fingerprint.bf16_supported", lambda isa=None: False)  # as on AVX2 CPUs
    with pytest.raises(InputError, match="needs a CPU with bf16 arithmetic"):
        edgesdk.compress(build("Residual"), make_inputs("Residual", 1), out_dir=tmp_path / "o", quantize="bf16")
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []
    res = CliRunner().invoke(main, ["compress", "tests/models.py:Residual", "--input", "x:1x3x16x16", "--quantize",
                                    "bf16", "-o", str(tmp_path / "c")])
    assert res.exit_code == 2 and "AVX512-BF16 or AMX-BF16" in res.output and "Traceback" not in res.output


def test_a_bf16_budget_is_refused():
    from edgesdk.recipe import Recipe, apply_options

    with pytest.raises(InputError, match="not to bf16"):
        apply_options(Recipe(), quantize="bf16", min_cosine=0.99).validate()
    assert apply_options(Recipe(), quantize="bf16", targets="onnx,tflite").stages == [
        "export_onnx", "bf16_openvino", "export_tflite"]


@needs_openvino
def test_the_bf16_artifact_is_an_ir_with_its_weights_and_session_options(tmp_path, monkeypatch):
    if not bf16_supported():  # the plumbing still runs; OpenVINO then computes in f32 and says so
        monkeypatch.setattr("edgesdk.runtimes.fingerprint.bf16_supported", lambda isa=None: True)
    torch.manual_seed(0)
    res = edgesdk.compress(build("Residual"), make_inputs("Residual", 1), out_dir=tmp_path / "o", quantize="bf16",
                           iterations=5, warmup=1)
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    bf16 = next(a for a in m["artifacts"] if a["precision"] == "bf16")
    assert bf16["format"] == "openvino" and bf16["path"].endswith(".bf16.xml")
    assert bf16["session_options"] == {"precision": "bf16"} and bf16["parity"]["passed"]
    assert bf16["parity"]["min_centered_cosine"] == 0.99  # bf16's own rule, not FP32's
    assert [x["path"] for x in bf16["external_data"]] == [bf16["path"][:-4] + ".bin"]
    with load(res.out_dir, artifact=bf16["name"]) as sess:  # the manifest's options reach the session
        assert sess.backend == "openvino" and sess.options["precision"] == "bf16"
        assert sess.precision == ("bf16" if bf16_supported() else "f32")  # what the plugin really runs
    (tmp_path / "o" / bf16["path"].replace(".xml", ".bin")).write_bytes(b"x")
    with pytest.raises(edgesdk.errors.ArtifactError, match="changed since the manifest"):
        load(res.out_dir, artifact=bf16["name"])
