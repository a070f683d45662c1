"""edgesdk debug on a real artifact directory: the INT8 ONNX file against its FP32 parent, layer by layer,
traced to the PyTorch modules; a layer broken on purpose is found; bad input is refused cleanly."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from edgesdk.cli import main
from edgesdk.debug import debug
from edgesdk.debug.layers import provenance
from onnx import numpy_helper

from tests.debug.refusals import assert_refused


def test_exported_nodes_keep_their_module_through_simplification_and_quantization(digits_artifacts):
    for name in ("model.onnx", "model.int8.onnx"):
        g = onnx.load(str(digits_artifacts / name)).graph
        compute = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
        assert compute and all(provenance(n)[0] is not None for n in compute), name
    heads = [provenance(n) for n in onnx.load(str(digits_artifacts / "model.onnx")).graph.node if n.op_type == "Gemm"]
    assert heads == [("head", "torch.nn.modules.linear.Linear")]


def test_int8_against_its_parent_every_layer_traced_and_ranked(digits_artifacts, tmp_path):
    report = debug(digits_artifacts / "model.int8.onnx")
    assert Path(report.reference).name == "model.onnx" and report.reference_choice == "parent in manifest.json"
    layers = report.layers
    assert len(layers) >= 6
    assert [d.added_noise for d in layers] == sorted((d.added_noise for d in layers), reverse=True)
    for d in layers:
        assert d.module is not None, d
        assert math.isfinite(d.sqnr_db) and 0.9 < d.cosine <= 1.0 and d.max_abs_err >= 0
        assert d.jump_db == pytest.approx(d.input_sqnr_db - d.sqnr_db, abs=0.02)
    assert {d.module.split(".")[0] for d in layers} >= {"stem", "block", "head"}
    assert "output" in {d.tensor for d in layers}  # the graph output itself (renamed by the quantizer) is matched
    assert report.first_jump is not None

    out = tmp_path / "debug.json"
    res = CliRunner().invoke(main, ["debug", str(digits_artifacts / "model.int8.onnx"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "First jump" in res.stdout and "| rank | module |" in res.stdout
    data = json.loads(out.read_text())
    assert data["matched_layers"] == len(layers) and [d["tensor"] for d in data["layers"]] == [
        d.tensor for d in layers]


def test_a_layer_broken_on_purpose_is_the_first_jump(digits_artifacts, tmp_path):
    """Scale the block convolution's INT8 weights by 4 (their DequantizeLinear scale): the divergence must start
    there, and the stem before it must stay as it was."""
    work = tmp_path / "out"
    shutil.copytree(digits_artifacts, work)
    clean = {d.tensor: d.sqnr_db for d in debug(work / "model.int8.onnx").layers}
    path = work / "model.int8.onnx"
    model = onnx.load(str(path))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    conv = next(n for n in g.node if n.op_type == "Conv" and (provenance(n)[0] or "").startswith("block"))
    scale_name = producer[conv.input[1]].input[1]  # Conv <- DequantizeLinear(weight, scale, zero point)
    init = next(i for i in g.initializer if i.name == scale_name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(4), scale_name))
    onnx.save(model, str(path))

    report = debug(path)
    jump = report.first_jump
    assert jump is not None and jump.module.startswith("block"), [(d.module, d.added_noise) for d in report.layers]
    assert report.layers[0].module.startswith("block")
    for d in report.layers:
        if d.module.startswith("stem"):
            assert d.sqnr_db == pytest.approx(clean[d.tensor], abs=0.01)  # upstream of the break: unchanged
    assert jump.sqnr_db < clean[jump.tensor] - 10


def test_bad_input_is_refused_without_a_traceback_or_a_file(digits_artifacts, tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"TFL3")
    (tmp_path / "model.engine").write_bytes(b"ftrt")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    shutil.copy(digits_artifacts / "model.onnx", tmp_path / "lone.onnx")
    art = str(digits_artifacts / "model.int8.onnx")
    cases = [
        ([str(digits_artifacts)], "is a directory"),
        ([str(tmp_path / "missing.onnx")], "artifact not found"),
        ([str(tmp_path / "model.engine")], "compares ONNX and TFLite artifacts"),
        ([str(tmp_path / "model.tflite")], "no float TFLite parent"),
        ([str(digits_artifacts / "model.onnx")], "no ONNX parent"),
        ([str(tmp_path / "lone.onnx")], "no ONNX parent"),
        ([art, "--against", str(tmp_path / "broken.onnx")], "not a readable ONNX model"),
        ([art, "--max-batches", "0"], "at least 1"),
        ([art, "--data", str(tmp_path / "model.tflite")], "not an .npz"),
    ]
    assert_refused(cases, tmp_path)
