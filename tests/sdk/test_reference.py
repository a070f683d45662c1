"""The reference set stored beside the artifacts, and the on-device re-check in `edgesdk benchmark DIR`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.reference import check_artifact, load_reference_set, write_reference_set
from edgesdk.runtimes import load


def test_reference_set_is_stored_and_vouched_for(digits_artifacts):
    manifest = json.loads((digits_artifacts / "manifest.json").read_text())
    info = manifest["reference"]
    assert info["path"] == "reference.npz" and info["batches"] >= 8 and info["models"] == ["pytorch"]
    assert info["eval_samples"] == info["eval_total"] > 100  # digits' eval split fits whole
    ref = load_reference_set(digits_artifacts / "reference.npz")
    assert len(ref.inputs) == info["batches"] and len(ref.outputs["pytorch"]) == info["batches"]
    assert set(ref.eval_data) == {"x", "labels"}


def test_device_check_matches_the_workstation(digits_artifacts):
    manifest = json.loads((digits_artifacts / "manifest.json").read_text())
    ref = load_reference_set(digits_artifacts / "reference.npz")
    for entry in manifest["artifacts"]:
        with load(digits_artifacts / entry["path"]) as sess:
            check = check_artifact(sess, ref, entry)
        assert check["parity"]["passed"] is True
        assert check["accuracy"] == pytest.approx(entry["accuracy"], abs=1e-6)


def test_device_check_catches_a_wrong_model(digits_artifacts, tmp_path):
    """Run the fp32 artifact against expectations that are off: the check must fail and say where."""
    manifest = json.loads((digits_artifacts / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["precision"] == "fp32")
    ref = load_reference_set(digits_artifacts / "reference.npz")
    bent = {"pytorch": [{k: v + 0.01 for k, v in o.items()} for o in ref.outputs["pytorch"]]}
    write_reference_set(tmp_path / "bent.npz", ref.inputs, bent, None)
    with load(digits_artifacts / entry["path"]) as sess:
        check = check_artifact(sess, load_reference_set(tmp_path / "bent.npz"), entry)
    assert check["parity"]["passed"] is False and "max abs err" in check["parity"]["failure"]
    assert check["accuracy"] is None


def test_size_bound_keeps_fewer_batches(tmp_path):
    inputs = [{"x": np.zeros((4, 1000), np.float32)} for _ in range(10)]
    outputs = {"pytorch": [{"y": np.zeros((4, 10), np.float32)} for _ in range(10)]}
    info = write_reference_set(tmp_path / "r.npz", inputs, outputs, None, max_bytes=16_160 * 3 + 100)
    assert info["batches"] == 3


def test_benchmark_dir_rechecks_parity_and_accuracy(digits_artifacts):
    res = CliRunner().invoke(main, ["benchmark", str(digits_artifacts), "--iterations", "5", "--warmup", "1",
                                    "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    manifest = json.loads((digits_artifacts / "manifest.json").read_text())
    want = {e["name"]: e["accuracy"] for e in manifest["artifacts"]}
    assert {r["artifact"] for r in report["results"]} == set(want)
    for r in report["results"]:
        assert r["device_check"]["parity"]["passed"] is True and r["parity_passed"] is True
        assert r["accuracy"] == pytest.approx(want[r["artifact"]])


def test_changed_reference_set_is_refused(digits_artifacts, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(digits_artifacts, d)
    with open(d / "reference.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    res = CliRunner().invoke(main, ["benchmark", str(d), "--iterations", "2"])
    assert res.exit_code != 0 and "reference.npz changed" in res.output and "Traceback" not in res.output


def test_artifacts_without_a_backend_here_are_skipped_not_fatal(digits_artifacts, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    from edgesdk.atomic import sha256_file
    from edgesdk.benchmarking import benchmark_paths

    d = tmp_path / "copy"
    shutil.copytree(digits_artifacts, d)
    (d / "model.engine").write_bytes(b"engine bytes")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["artifacts"].append({"name": "model.engine", "path": "model.engine", "format": "engine",
                                  "precision": "fp16", "sha256": sha256_file(d / "model.engine")})
    (d / "manifest.json").write_text(json.dumps(manifest))
    report = benchmark_paths([d], iterations=2, warmup=0)
    assert [s["artifact"] for s in report["skipped"]] == ["model.engine"]
    assert "edgesdk[tensorrt]" in report["skipped"][0]["reason"]
    assert {r["artifact"] for r in report["results"]} == {"model.onnx", "model.int8.onnx"}
