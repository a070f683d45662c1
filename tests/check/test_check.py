"""`edgesdk check`: a trial conversion per target, coverage per runtime, blockers by module path, exit codes.

The models are the tiny ones of tests/models.py; the failing one (DetNet, torch.linalg.det) really fails:
litert-torch has no lowering for it, OpenVINO's ONNX frontend no conversion rule for Det, and Det is not in
TensorRT 10's ONNX operator table. onnxruntime runs it, all on the CPU EP."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgesdk.check import TARGETS, check, parse_targets
from edgesdk.check.probes import Graph, probe_tensorrt
from edgesdk.cli.check import _outputs
from edgesdk.cli.check import check as check_cmd
from edgesdk.errors import InputError
from tests.models import Small

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "models.py"
HAS_TRT = importlib.util.find_spec("tensorrt") is not None

WRAPPED = '''import torch
from tests.models import DetNet


class Wrapped(torch.nn.Module):
    """DetNet as the child `head`: its Det is reported under the module path `head`."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Identity()
        self.head = DetNet()

    def forward(self, x):
        return self.head(self.stem(x))


def build():
    return Wrapped()
'''


def _invoke(args: list[str]):
    return CliRunner().invoke(check_cmd, args, catch_exceptions=False)


@pytest.mark.slow
def test_clean_model_every_target_converts_and_is_covered(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "check.json"
    res = _invoke([f"{MODELS}:ConvBnRelu", "--input", "x:1x3x16x16", "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["schema"] == "edgesdk.check/1" and report["fully_covered"] is True and report["exit_code"] == 0
    assert list(report["targets"]) == list(TARGETS) and report["modules"] == {}
    assert report["inputs"] == {"x": {"dtype": "float32", "shape": [1, 3, 16, 16]}}
    for name, t in report["targets"].items():
        assert t["converts"] is True and t["fully_covered"] is True and t["error"] is None, (name, t)
        assert t["blocked_by"] == [] and t["ops"], name
        assert set(t) >= {"runtime", "coverage", "hints", "notes"}
    onnx = report["targets"]["onnx"]
    assert onnx["ops"]["Conv"] == 2
    cov = onnx["coverage"]
    assert cov["source"].startswith("onnxruntime InferenceSession.get_provider_graph_assignment_info")
    assert sum(cov["nodes_per_provider"].values()) == cov["total"] > 0
    assert cov["nodes_per_provider"].get("CPUExecutionProvider") == cov["total"]  # no other EP on this machine
    tfl = report["targets"]["tflite"]["coverage"]
    assert tfl["delegate"] == "XNNPACK" and tfl["delegated"] == tfl["total"] > 0 and tfl["not_delegated"] == {}
    ov = report["targets"]["openvino"]["coverage"]
    assert ov["source"] == "openvino Core.query_model"
    assert ov["devices"]["CPU"]["supported"] == ov["devices"]["CPU"]["total"] > 0
    trt = report["targets"]["tensorrt"]["coverage"]
    if not HAS_TRT:
        assert trt["source"] == "static table, TensorRT 10.x" and trt["static"] is True
        assert trt["supported"] == trt["total"] == sum(report["targets"]["onnx"]["ops"].values())
    # -o FILE.json: the same JSON, and the Markdown beside it
    assert json.loads(out.read_text()) == report
    md = out.with_suffix(".md").read_text()
    assert "Every target is fully covered." in md and "| tflite |" in md
    assert sorted(p.name for p in out.parent.iterdir()) == ["check.json", "check.md"]  # nothing half-written


@pytest.mark.slow
def test_a_target_that_fails_is_named_by_module_path_and_the_others_still_report(tmp_path: Path) -> None:
    src = tmp_path / "wrapped.py"
    src.write_text(WRAPPED)
    res = _invoke([f"{src}:build", "--input", "x:1x3x3", "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    t = report["targets"]
    assert report["fully_covered"] is False and report["exit_code"] == 1
    assert t["onnx"]["converts"] and t["onnx"]["fully_covered"] and t["onnx"]["ops"]["Det"] == 1
    for name in ("tflite", "openvino", "tensorrt"):
        assert t[name]["converts"] is False and t[name]["fully_covered"] is False, name
        assert t[name]["error"] and t[name]["hints"], name
        blocker = t[name]["blocked_by"][0]
        assert blocker["module"] == "head" and blocker["class"] == "DetNet", (name, blocker)
        assert blocker["file"].endswith("models.py") and isinstance(blocker["line"], int), blocker
        assert "torch.linalg.det" in blocker["code"], blocker
    assert "Lowering not found" in t["tflite"]["error"]
    assert "Det" in t["openvino"]["error"]
    assert t["tensorrt"]["blocked_by"][0]["op"] == "Det"
    if not HAS_TRT:
        assert t["tensorrt"]["coverage"]["unsupported"] == {"Det": 1}
        assert t["tensorrt"]["coverage"]["supported"] == t["tensorrt"]["coverage"]["total"] - 1
    head = report["modules"]["head"]
    assert head["class"] == "DetNet" and {i["target"] for i in head["issues"]} == {"tflite", "openvino", "tensorrt"}
    # the Markdown says the same
    res = _invoke([f"{src}:build", "--input", "x:1x3x3", "--targets", "tensorrt,onnx"])
    assert res.exit_code == 1
    assert "| `head` | DetNet |" in res.stdout and "Not every target is fully covered." in res.stdout


@pytest.mark.slow
def test_the_api_takes_a_module_and_example_tensors() -> None:
    report = check(Small().eval(), {"x": torch.rand(1, 4)}, targets="onnx,trt")
    assert list(report.targets) == ["onnx", "tensorrt"] and report.exit_code == 0
    assert report.targets["onnx"].coverage["total"] == sum(report.targets["onnx"].ops.values())
    assert "edgesdk check: Small" in report.to_markdown()


def test_static_tensorrt_table_flags_qoperator_and_custom_ops(tmp_path: Path) -> None:
    """A QOperator INT8 graph and an onnxruntime contrib op: the static table refuses both, with the QDQ hint."""
    if HAS_TRT:
        pytest.skip("tensorrt is installed: its parser answers, not the static table")
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.UINT8, [], [0]),
             helper.make_tensor("w", TensorProto.UINT8, [4, 4], [1] * 16)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("QLinearMatMul", ["xq", "s", "z", "w", "s", "z", "s", "z"], ["yq"], name="mm"),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["d"], name="dq"),
             helper.make_node("FastGelu", ["d"], ["y"], name="gelu", domain="com.microsoft")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "q.onnx"
    onnx.save(model, path)
    r = probe_tensorrt(Graph(path))
    assert r.converts is False and r.coverage["static"] is True
    assert r.coverage["unsupported"] == {"QLinearMatMul": 1, "com.microsoft:FastGelu": 1}
    assert r.coverage["supported"] == 2 and r.coverage["total"] == 4
    assert any("QDQ" in h for h in r.hints)
    assert any("static check" in n for n in r.notes) and any("optimization profile" in n for n in r.notes)
    newer = probe_tensorrt(Graph(path, opset=21))  # past the opsets TensorRT 10 parses
    assert "opset 21" in newer.error and any("--opset 20" in h for h in newer.hints)


@pytest.mark.slow
def test_the_package_is_also_the_verb() -> None:
    import edgesdk.check

    report = edgesdk.check(Small().eval(), torch.rand(1, 4), targets=["tensorrt"])
    assert isinstance(report, edgesdk.check.CheckReport) and report.targets["tensorrt"].converts


@pytest.mark.parametrize("args, says", [
    (["--input", "x:1x3x3", "--targets", "onnx,coreml"], "unknown check target 'coreml'"),
    (["--input", "x:1x4x4"], "the model fails on the example inputs"),
    ([], "no model inputs given"),
    (["--input", "x:1x3x3:complex"], "unknown dtype"),
    (["--input", "x:1x3x3", "--providers", "NoSuchExecutionProvider"], "is not available in this onnxruntime"),
])
def test_bad_input_is_exit_2_with_a_clear_message(args: list[str], says: str) -> None:
    res = _invoke([f"{MODELS}:DetNet", *args])
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output


def test_a_missing_model_file_is_exit_2(tmp_path: Path) -> None:
    res = _invoke([f"{tmp_path}/nothere.py:build", "--input", "x:1x3x3"])
    assert res.exit_code == 2 and "model file not found" in res.output


def test_targets_and_output_paths() -> None:
    assert parse_targets("onnxruntime, litert,onnx") == ("onnx", "tflite")
    with pytest.raises(InputError):
        parse_targets("")
    assert _outputs("r.json") == (Path("r.json"), Path("r.md"))
    assert _outputs("r.md") == (Path("r.json"), Path("r.md"))
    assert _outputs("report") == (Path("report"), Path("report.md"))


@pytest.mark.slow
def test_an_onnx_export_failure_names_the_module_for_every_onnx_fed_target() -> None:
    from tests.models import Unexportable

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.eig = Unexportable()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.eig(x)

    report = check(Net().eval(), {"x": torch.randn(1, 4, 4)}, targets=("onnx", "tensorrt"))
    assert report.exit_code == 1
    for name in ("onnx", "tensorrt"):
        t = report.targets[name]
        assert t.converts is False and "ONNX export failed" in t.error, name
        b = t.blocked_by[0]
        assert (b.module, b.cls, b.line) == ("eig", "Unexportable", b.line) and "eigvals" in b.code, b
    assert any("--opset" in h for h in report.targets["onnx"].hints)
    assert {i["target"] for i in report.modules()["eig"]["issues"]} == {"onnx", "tensorrt"}


class CumSum(torch.nn.Module):
    """A Linear then torch.cumsum: litert-torch converts it, and XNNPACK leaves CUMSUM to LiteRT's own kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.lin(x), 1)


@pytest.mark.slow
def test_ops_left_out_of_xnnpack_are_a_fallback() -> None:
    report = check(CumSum().eval(), {"x": torch.rand(1, 8)}, targets=("tflite",))
    t = report.targets["tflite"]
    assert t.converts is True and t.fully_covered is False and report.exit_code == 1
    assert t.coverage["delegate"] == "XNNPACK" and t.coverage["not_delegated"] == {"CUMSUM": 1}
    assert t.coverage["delegated"] == t.coverage["total"] - 1
    (b,) = t.blocked_by
    assert b.op == "CUMSUM" and b.module == "(model)" and b.cls == "CumSum" and "cumsum" in b.code
    assert any("CUMSUM" in h for h in t.hints)


@pytest.mark.slow
def test_the_legacy_exporter_maps_nodes_by_their_scope_names(tmp_path: Path) -> None:
    src = tmp_path / "wrapped.py"
    src.write_text(WRAPPED)
    res = _invoke([f"{src}:build", "--input", "x:1x3x3", "--targets", "onnx,tensorrt", "--exporter", "legacy",
                   "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert report["targets"]["onnx"]["converts"] and report["targets"]["onnx"]["fully_covered"]
    (b,) = report["targets"]["tensorrt"]["blocked_by"]
    assert (b["op"], b["module"], b["node"]) == ("Det", "head", "/head/Det")
    assert any("legacy" in n for n in report["targets"]["onnx"]["notes"])
