"""The device side refuses what it cannot verify and reports what it measured, whatever the input:
manifest paths outside the directory, missing sha256, unlisted ONNX weights files, NaN in JSON, odd output
names in run -o, failing writes, failing on-device parity, reports with nulls, regressions from zero."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from edgesdk.cli import main
from edgesdk.errors import ArtifactError
from edgesdk.runtimes import load


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def art(digits_artifacts, tmp_path) -> Path:
    d = tmp_path / "art"
    shutil.copytree(digits_artifacts, d)
    return d


def _edit_manifest(d: Path, fn) -> None:
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("path", ["../outside.onnx", "/tmp/outside.onnx", "sub/../../outside.onnx"])
def test_manifest_paths_must_stay_inside_the_directory(art, path):
    shutil.copy(art / "model.onnx", art.parent / "outside.onnx")
    _edit_manifest(art, lambda m: m["artifacts"][0].update(path=path))
    with pytest.raises(ArtifactError, match="points outside its directory"):
        load(art)
    res = invoke("benchmark", art, "--iterations", "2")
    assert res.exit_code == 2 and "points outside its directory" in res.output and "Traceback" not in res.output


def test_missing_sha256_is_refused(art):
    _edit_manifest(art, lambda m: [a.pop("sha256") for a in m["artifacts"]])
    res = invoke("benchmark", art, "--iterations", "2")
    assert res.exit_code == 2 and "records no sha256" in res.output


def _external_model(d: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save_model(model, str(d / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)


def test_onnx_weights_files_are_in_the_manifest_and_checked(tmp_path):
    from edgesdk.pipeline import Artifact

    d = tmp_path / "ext"
    d.mkdir()
    _external_model(d)
    entry = Artifact(name="m.onnx", path=d / "m.onnx", format="onnx", precision="fp32").to_manifest(d)
    assert [x["path"] for x in entry["external_data"]] == ["m.onnx.data"]
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [entry]}))
    with load(d) as sess:
        assert sess.run({"x": np.ones((1, 4), np.float32)})["y"].tolist() == [[18.0, 22.0, 26.0]]
    data = (d / "m.onnx.data").read_bytes()
    (d / "m.onnx.data").write_bytes(np.full(12, 1000, np.float32).tobytes())  # same size, other weights
    with pytest.raises(ArtifactError, match="m.onnx.data changed since the manifest was written"):
        load(d)
    (d / "m.onnx.data").write_bytes(data)
    entry.pop("external_data")  # an older or edited manifest that does not cover the weights
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": [entry]}))
    with pytest.raises(ArtifactError, match="does not list with a sha256"):
        load(d)


def test_directory_load_picks_an_artifact_the_backend_can_run(tmp_path, digits_artifacts):
    d = tmp_path / "mixed"
    shutil.copytree(digits_artifacts, d)
    fake = {"name": "model.engine", "path": "model.engine", "format": "engine", "sha256": "0" * 64}
    _edit_manifest(d, lambda m: m["artifacts"].insert(0, fake))  # listed first, no TensorRT here
    with load(d) as sess:  # auto: skips what no installed backend runs
        assert sess.path.name == "model.onnx"
    with pytest.raises(ArtifactError, match="no runnable artifact in .* for the litert backend"):
        load(d, backend="litert")  # only ONNX files here: named, not an ONNX file forced on LiteRT


def test_run_json_is_strict_and_npz_keeps_every_output_name(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["file"]), helper.make_node("Neg", ["x"], ["allow_pickle"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("file", TensorProto.FLOAT, ["batch", 4]),
                               helper.make_tensor_value_info("allow_pickle", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = np.ones((2, 4), np.float32)
    x[0, 0] = np.nan
    np.savez(tmp_path / "x.npz", x=x)
    res = invoke("run", tmp_path / "m.onnx", "--inputs", tmp_path / "x.npz", "--json", "-o", tmp_path / "o.npz")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.split("wrote")[0], parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert summary["file"]["mean"] is None  # NaN is not JSON: written as null
    with np.load(tmp_path / "o.npz") as z:
        assert sorted(z.files) == ["allow_pickle", "file"] and np.isnan(z["file"][0, 0])


def test_a_failing_output_write_keeps_the_measurements_and_exits_5(art, tmp_path):
    (tmp_path / "afile").write_text("x")
    res = invoke("benchmark", art / "model.onnx", "--iterations", "2", "-o", tmp_path / "afile" / "r.json")
    assert res.exit_code == 5 and "cannot write" in res.output and "Traceback" not in res.output
    assert "| model.onnx |" in res.output  # the table was printed before the write failed


def test_failing_parity_on_the_device_exits_3(art):
    def tighten(m):
        for a in m["artifacts"]:
            if a["name"] == "model.int8.onnx":
                a["parity"].update(atol=1e-9, rtol=1e-9, min_cosine=0.9999999)
    _edit_manifest(art, tighten)
    res = invoke("benchmark", art, "--iterations", "2")
    assert res.exit_code == 3 and "parity failed on this device for model.int8.onnx" in res.output


def test_reports_with_nulls_render(digits_artifacts, tmp_path):
    report = json.loads((digits_artifacts / "report.json").read_text())
    report["results"] = []
    for a in report["artifacts"]:
        a["parity"] = {"passed": True, "max_abs_err": None, "cosine": None}
    report["artifacts"][0].pop("format")
    (tmp_path / "r.json").write_text(json.dumps(report))
    res = invoke("report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert "| model.int8.onnx | onnx | int8 |" in res.output and "internal error" not in res.output


def test_compare_counts_regressions_from_zero_and_missing_checks(digits_artifacts, tmp_path):
    base = json.loads((digits_artifacts / "report.json").read_text())
    new = json.loads(json.dumps(base))
    row = next(r for r in base["results"] if r["artifact"] == "model.onnx")
    row["latency_ms"]["p50"] = 0.0
    nrow = next(r for r in new["results"] if (r["artifact"], r["batch"]) == ("model.onnx", row["batch"]))
    nrow["parity_passed"] = None
    nrow["accuracy"] = None
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "n.json").write_text(json.dumps(new))
    res = invoke("report", "compare", tmp_path / "b.json", tmp_path / "n.json", "--json")
    assert res.exit_code == 1
    result = json.loads(res.stdout)
    text = "\n".join(result["regressions"])
    assert "p50 ms 0.000 ->" in text and "parity pass -> not measured" in text and "accuracy" in text


def test_merge_labels_a_jetson_by_its_board(digits_artifacts, tmp_path):
    from edgesdk.report.merge import device_label

    jetson = {"jetson": {"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.4.3", "jetpack": "6.2"}}
    assert device_label(jetson) == "NVIDIA Jetson Orin Nano Developer Kit"


def test_iterations_and_duration_together_are_refused(art):
    res = invoke("benchmark", art / "model.onnx", "--iterations", "5", "--duration", "1")
    assert res.exit_code == 2 and "either --iterations or --duration" in res.output
