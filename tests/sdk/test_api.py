"""The compress API: the parity gate, --allow-mismatch, and atomic output directories."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import edgesdk
from edgesdk.atomic import sha256_file
from edgesdk.errors import InputError, ParityError
from tests.models import Small


class Drifting(nn.Module):
    """Adds a call counter: the exported graph freezes the value it saw while tracing,
    so the artifact silently differs from eager PyTorch - exactly what the gate is for."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.lin(x) + float(self.calls)


def _verify(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        assert sha256_file(out / art["path"]) == art["sha256"]
    return manifest


def test_compress_api_minimal(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(Small(), {"x": torch.rand(2, 4)}, out_dir=tmp_path / "o", benchmark=False)
    assert res.passed and res.artifacts[0].path.is_file()
    m = _verify(tmp_path / "o")
    assert m["artifacts"][0]["parity"]["passed"]
    assert m["recipe"]["benchmark"]["enabled"] is False
    assert res.report["results"] == [] and "No benchmark results" in res.report_markdown


def test_parity_gate_catches_silent_difference_and_writes_nothing(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ParityError) as err:
        edgesdk.compress(Drifting(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "o", benchmark=False)
    msg = str(err.value)
    assert "model.onnx" in msg and "output" in msg and "--allow-mismatch" in msg
    assert not (tmp_path / "o").exists()
    assert list(tmp_path.iterdir()) == []


def test_allow_mismatch_keeps_and_marks(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(Drifting(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "o", benchmark=False,
                           allow_mismatch=True)
    assert not res.passed
    art = _verify(tmp_path / "o")["artifacts"][0]
    assert art["status"] == "parity_mismatch" and art["parity"]["passed"] is False


def test_failed_rerun_keeps_previous_complete_set(tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "o"
    edgesdk.compress(Small(), {"x": torch.rand(1, 4)}, out_dir=out, benchmark=False)
    before = _verify(out)
    with pytest.raises(ParityError):
        edgesdk.compress(Drifting(), {"x": torch.rand(1, 4)}, out_dir=out, benchmark=False)
    assert _verify(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_rerun_replaces_set_as_a_whole(tmp_path):
    out = tmp_path / "o"
    edgesdk.compress(Small(), {"x": torch.rand(1, 4)}, out_dir=out, benchmark=False)
    first = _verify(out)["artifacts"][0]["sha256"]
    edgesdk.compress(Small(), {"x": torch.rand(1, 4)}, out_dir=out, benchmark=False)
    second = _verify(out)["artifacts"][0]["sha256"]
    assert first != second  # new random weights, new file, consistent manifest


def test_refuses_foreign_nonempty_output_dir(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not empty"):
        edgesdk.compress(Small(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "o", benchmark=False)
    assert (tmp_path / "o" / "thesis.tex").read_text() == "precious"


def test_tuple_inputs_and_options(tmp_path):
    res = edgesdk.compress(Small(), (torch.rand(3, 4),), out_dir=tmp_path / "o", opset=17, simplify=False,
                           iterations=3, warmup=1, batches=[1, 2], parity_batches=2)
    art = res.manifest["artifacts"][0]
    assert art["inputs"][0]["name"] == "x"  # unnamed inputs take forward()'s parameter names, by position
    assert res.manifest["model"]["binding"]["by"] == "position"
    assert art["meta"]["opset_requested"] == 17 and art["meta"]["simplified"] is False
    assert art["parity"]["batches"] == 3
    assert {r["batch"] for r in res.report["results"]} == {1, 2}
    with pytest.raises(InputError, match="unknown option"):
        edgesdk.compress(Small(), (torch.rand(3, 4),), out_dir=tmp_path / "p", opsett=17)


def test_int8_slower_than_parent_is_warned():
    from edgesdk.measure import slower_than_parent as _slower_than_parent
    from edgesdk.pipeline import Artifact

    fp32 = Artifact("m.onnx", Path("m.onnx"), "onnx", "fp32", stage="export_onnx")
    int8 = Artifact("m.int8.onnx", Path("m.int8.onnx"), "onnx", "int8", stage="quantize_onnx", parent="m.onnx")
    rows = [{"artifact": "m.onnx", "backend": "onnxruntime", "batch": 1, "latency_ms": {"p50": 1.0}},
            {"artifact": "m.int8.onnx", "backend": "onnxruntime", "batch": 1, "latency_ms": {"p50": 1.5}},
            {"artifact": "m.onnx", "backend": "onnxruntime", "batch": 8, "latency_ms": {"p50": 4.0}},
            {"artifact": "m.int8.onnx", "backend": "onnxruntime", "batch": 8, "latency_ms": {"p50": 2.0}}]
    msgs = _slower_than_parent([fp32, int8], rows)
    assert len(msgs) == 1 and "1.50x slower than m.onnx on onnxruntime at batch 1" in msgs[0]
    assert int8.meta["warnings"] == msgs


def test_every_backend_is_verified_and_timed(tmp_path):
    pytest.importorskip("openvino")
    res = edgesdk.compress(Small(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "o", backends=["onnxruntime", "openvino"],
                           iterations=3, warmup=1)
    art = res.manifest["artifacts"][0]
    assert art["parity"]["backend"] == "onnxruntime" and art["meta"]["parity_by_backend"]["openvino"]["passed"]
    assert {r["backend"] for r in res.report["results"] if r["artifact"] == "model.onnx"} == {"onnxruntime", "openvino"}
    with pytest.raises(InputError, match="unknown backend"):
        edgesdk.compress(Small(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "p", backends=["tvm"])
