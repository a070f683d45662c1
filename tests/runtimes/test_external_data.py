"""ONNX external data: references that leave the model's folder or point past their file are refused on load,
one fixture per case; a well-formed external-data model loads and runs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.errors import ArtifactError
from edgesdk.runtimes import load

W = np.arange(12, dtype=np.float32).reshape(4, 3)


def make(folder: Path, location: str = "weights.bin", offset: int | None = 0, length: int | None = 48,
         write_data: bool = True) -> Path:
    """x[batch, 4] @ w[4, 3] with w stored externally at ``location`` (edited after saving)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(W, "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if write_data:
        (folder / "weights.bin").write_bytes(W.tobytes())
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_valid_external_data_loads_and_runs(tmp_path):
    path = make(tmp_path / "m")
    with load(path) as sess:
        x = np.ones((2, 4), np.float32)
        np.testing.assert_allclose(sess.run({"x": x})["y"], x @ W)


def test_nested_folder_inside_is_fine(tmp_path):
    folder = tmp_path / "m"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "w.bin").write_bytes(W.tobytes())
    path = make(folder, "data/w.bin", write_data=False)
    with load(path) as sess:
        assert sess.run({"x": np.ones((1, 4), np.float32)})["y"].shape == (1, 3)


def _outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W.tobytes())
    return secret


CASES = {
    "dot-dot": (lambda tmp: "../secret.bin", "leads out of the model's folder"),
    "sub-dot-dot": (lambda tmp: "sub/../../secret.bin", "leads out of the model's folder"),
    "absolute": (lambda tmp: str(tmp / "secret.bin"), "an absolute path"),
    "windows-absolute": (lambda tmp: "C:\\secret.bin", "an absolute path"),
    "missing": (lambda tmp: "nope.bin", "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_escaping_locations_are_refused(tmp_path, case):
    _outside(tmp_path)
    loc, needle = CASES[case]
    path = make(tmp_path / "m", loc(tmp_path), write_data=False)
    with pytest.raises(ArtifactError) as e:
        load(path)
    assert needle in e.value.what and "'w'" in e.value.what and "model.onnx" in e.value.what


@pytest.mark.parametrize("link, needle", [(os.symlink, "through a symlink"), (os.link, "hard link")])
def test_links_out_of_the_folder_are_refused(tmp_path, link, needle):
    secret = _outside(tmp_path)
    folder = tmp_path / "m"
    folder.mkdir()
    link(secret, folder / "weights.bin")
    path = make(folder, "weights.bin", write_data=False)
    with pytest.raises(ArtifactError, match=needle):
        load(path)


@pytest.mark.parametrize("offset, length, needle", [
    (-4, 48, "negative offset or length"),
    (0, -1, "negative offset or length"),
    (8, 48, "past the end"),
    (0, 4096, "past the end"),
    (100, None, "past the end"),
    (0, 44, "does not match the tensor's shape"),
])
def test_bad_offsets_and_lengths_are_refused(tmp_path, offset, length, needle):
    path = make(tmp_path / "m", offset=offset, length=length)
    with pytest.raises(ArtifactError, match=needle):
        load(path)


def test_non_integer_offset_is_refused(tmp_path):
    path = make(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "offset":
            e.value = "12abc"
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match="not integers"):
        load(path)


def test_cli_refuses_with_a_clear_message(tmp_path):
    from click.testing import CliRunner

    from edgesdk.cli import main

    _outside(tmp_path)
    path = make(tmp_path / "m", "../secret.bin", write_data=False)
    np.savez(tmp_path / "x.npz", x=np.ones((1, 4), np.float32))
    res = CliRunner().invoke(main, ["run", str(path), "--inputs", str(tmp_path / "x.npz")])
    assert res.exit_code != 0 and "unsafe external data" in res.output and "Traceback" not in res.output


def test_compress_saves_self_contained_models_inside_the_output(digits_artifacts):
    """Our own exports never reference files outside the output directory (they hold no external data)."""
    for f in digits_artifacts.glob("*.onnx"):
        model = onnx.load(str(f), load_external_data=False)
        assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer), f.name


def test_sparse_constants_are_checked_too(tmp_path):
    from edgesdk.runtimes.safety import check_onnx_external_data

    values = numpy_helper.from_array(np.ones(2, np.float32), "v")
    values.ClearField("raw_data")
    values.data_location = TensorProto.EXTERNAL
    for k, v in {"location": "../secret.bin", "offset": "0", "length": "8"}.items():
        e = values.external_data.add()
        e.key, e.value = k, v
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 3], np.int64), "i"), [4])
    node = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    graph = helper.make_graph([node, helper.make_node("Add", ["x", "c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    (tmp_path / "m").mkdir()
    onnx.save(model, str(tmp_path / "m" / "m.onnx"))
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ArtifactError, match="leads out of the model's folder"):
        check_onnx_external_data(tmp_path / "m" / "m.onnx")
