"""The fastest backend per artifact: compress times every installed backend that can run an artifact, gates
each on parity, records the recommendation, and runtimes.load(DIR) and benchmark DIR follow it on the machine
it was measured on."""
from __future__ import annotations

import json
import shutil

import pytest

from edgesdk.runtimes import load
from edgesdk.runtimes.registry import auto_backends, backend_installed, format_backends

pytestmark = pytest.mark.skipif(not backend_installed("openvino"), reason="needs a second ONNX backend (openvino)")


def _manifest(d):
    return json.loads((d / "manifest.json").read_text())


def test_every_installed_backend_is_gated_and_timed_and_the_fastest_passing_one_is_recommended(digits_artifacts):
    m = _manifest(digits_artifacts)
    report = json.loads((digits_artifacts / "report.json").read_text())
    for a in m["artifacts"]:
        timed = {r["backend"] for r in report["results"] if r["artifact"] == a["name"]}
        assert timed == set(auto_backends("onnx")) >= {"onnxruntime", "openvino"}
        assert set(a["meta"]["parity_by_backend"]) >= timed - {"onnxruntime"}  # the first backend's is `parity`
        c = a["meta"]["backend_choice"]
        rows = {r["backend"]: r["latency_ms"] for r in report["results"] if r["artifact"] == a["name"]
                and r["batch"] == 1 and r["backend"] not in c["failed_parity"]}
        best = a["recommended_backend"]
        assert best == c["recommended"] and best in rows
        default = next(iter(rows))  # timed first: the format's default backend
        if best != default:  # another backend displaces the default only when faster beyond the noise
            assert rows[best]["p50_ci_high"] < rows[default]["p50_ci_low"]
        assert c["batch"] == 1 and c["machine"]
    assert "## Fastest backend per artifact" in (digits_artifacts / "report.md").read_text()


def test_a_backend_that_failed_parity_is_never_recommended():
    from edgesdk.pipeline import Artifact
    from edgesdk.measure import recommend_backends

    art = Artifact(name="m.onnx", path=None, format="onnx", precision="int8")  # type: ignore[arg-type]
    rows = [{"artifact": "m.onnx", "backend": "onnxruntime", "batch": 1, "threads": 2, "latency_ms": {"p50": 0.3},
             "parity_passed": True},
            {"artifact": "m.onnx", "backend": "openvino", "batch": 1, "threads": 2, "latency_ms": {"p50": 0.1},
             "parity_passed": False},
            {"artifact": "m.onnx", "backend": "onnxruntime", "batch": 8, "threads": 2, "latency_ms": {"p50": 0.01},
             "parity_passed": True}]
    recommend_backends([art], rows)
    assert art.recommended_backend == "onnxruntime"
    assert art.meta["backend_choice"]["failed_parity"] == ["openvino"] and art.meta["backend_choice"]["batch"] == 1
    rows[0]["parity_passed"] = False
    recommend_backends([art], rows)
    assert art.recommended_backend is None


def test_another_backend_displaces_the_default_only_when_faster_beyond_the_noise():
    from edgesdk.measure import recommend_backends
    from edgesdk.pipeline import Artifact

    def rows(ov_ci: tuple[float, float]) -> list[dict]:
        return [{"artifact": "m.onnx", "backend": "onnxruntime", "batch": 1, "parity_passed": True,
                 "latency_ms": {"p50": 1.0, "p50_ci_low": 0.95, "p50_ci_high": 1.05}},
                {"artifact": "m.onnx", "backend": "openvino", "batch": 1, "parity_passed": True,
                 "latency_ms": {"p50": 0.9, "p50_ci_low": ov_ci[0], "p50_ci_high": ov_ci[1]}}]

    art = Artifact(name="m.onnx", path=None, format="onnx", precision="fp32")  # type: ignore[arg-type]
    recommend_backends([art], rows((0.85, 0.97)))  # 10% faster, intervals overlap: the default stays
    assert art.recommended_backend == "onnxruntime"
    recommend_backends([art], rows((0.85, 0.93)))  # faster beyond the noise
    assert art.recommended_backend == "openvino"


def test_load_and_benchmark_of_a_directory_follow_the_recommendation_on_this_machine_only(digits_artifacts,
                                                                                          tmp_path):
    from edgesdk.benchmarking import benchmark_paths

    d = tmp_path / "out"
    shutil.copytree(digits_artifacts, d)
    m = _manifest(d)
    first = m["artifacts"][0]
    for best in ("onnxruntime", "openvino"):  # whichever it is, load follows it; a named backend wins
        first["recommended_backend"] = first["meta"]["backend_choice"]["recommended"] = best
        (d / "manifest.json").write_text(json.dumps(m))
        with load(d) as sess:
            assert sess.backend == best
        with load(d, backend="onnxruntime") as sess:
            assert sess.backend == "onnxruntime"
    rows = benchmark_paths([d], iterations=3, warmup=1)["results"]
    assert {r["backend"] for r in rows if r["artifact"] == first["name"]} == {"openvino"}
    first["meta"]["backend_choice"]["machine"] = "another CPU | aarch64 | 8 cores"
    first["recommended_backend"] = "openvino"
    (d / "manifest.json").write_text(json.dumps(m))
    with load(d) as sess:  # measured elsewhere: the format's default
        assert sess.backend == format_backends("onnx")[0]
