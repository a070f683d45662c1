"""The parity gate points at the culprit: a failed artifact's error names the first diverging module (a quick
debug pass against PyTorch), and an outlier channel is blamed where its range is, not where it is read."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import edgesdk
from benchmarks.planted import CASES, names
from edgesdk.debug.layers import _Stats
from edgesdk.errors import ParityError


class Drift(nn.Module):
    """Adds a call counter: the export freezes the value it traced, so this module alone diverges."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + float(self.calls)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.drift, self.b = nn.Linear(4, 8), nn.ReLU(), Drift(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drift(self.act(self.a(x))))


def test_a_failing_export_names_the_module_that_diverges(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ParityError) as err:
        edgesdk.compress(Net(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "o", benchmark=False)
    assert "first diverging module: `drift` (Drift)" in str(err.value)
    assert "edgesdk debug" in err.value.hint
    assert not (tmp_path / "o").exists()  # nothing written, as before

    torch.manual_seed(0)
    edgesdk.compress(Net(), {"x": torch.rand(1, 4)}, out_dir=tmp_path / "kept", benchmark=False,
                     allow_mismatch=True)
    art = json.loads((tmp_path / "kept" / "manifest.json").read_text())["artifacts"][0]
    found = art["meta"]["culprit"]["onnxruntime"]
    assert found["first_jump"]["module"] == "drift" and found["summary"].startswith("first diverging module")
    assert found["first_jump"]["input_sqnr_db"] > 90 > found["first_jump"]["sqnr_db"]  # it, not what came before


def test_a_passing_run_runs_no_pointer(digits_artifacts):
    for art in json.loads((digits_artifacts / "manifest.json").read_text())["artifacts"]:
        assert "culprit" not in art["meta"], art["name"]


def test_int8_failure_is_traced_to_the_planted_outlier_channel(tmp_path):
    case = CASES[2]  # blocks.2's conv has one output channel 300x its neighbours
    model, inputs = case.build()
    calib = {k: v.numpy() for k, v in case.calibration().items()}
    with pytest.raises(ParityError) as err:
        edgesdk.compress(model, inputs, out_dir=tmp_path / "o", quantize="int8", calib_data=calib, benchmark=False,
                         parity_min_cosine=0.9999)
    msg = str(err.value)
    assert "model.int8.onnx on onnxruntime" in msg and "first diverging module: `blocks.2." in msg, msg

    res = edgesdk.compress(model, inputs, out_dir=tmp_path / "k", quantize="int8", calib_data=calib,
                           benchmark=False, parity_min_cosine=0.9999, allow_mismatch=True)
    jump = next(a for a in res.manifest["artifacts"] if a["name"] == "model.int8.onnx")["meta"]["culprit"]
    assert names(jump["onnxruntime"]["first_jump"]["module"], case.planted)
    report = edgesdk.debug(tmp_path / "k" / "model.int8.onnx")  # against its FP32 parent
    top = report.layers[0]
    assert names(top.module, case.planted) and names(report.first_jump.module, case.planted)
    # the huge channel holds the tensor's power: only the per-channel figure shows the others rounded away
    assert top.channel_sqnr_db < top.sqnr_db - 10, (top.sqnr_db, top.channel_sqnr_db)
    reader = next(d for d in report.layers if d.module and d.module.startswith("blocks.3."))
    assert reader.added_noise < 0.1 * top.added_noise  # the layer that reads it is not blamed


def test_channel_sqnr_sees_channels_a_huge_one_hides():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 8, 5, 5))
    ref[:, 0] *= 300.0
    cand = ref.copy()
    cand[:, 1:] = 0.0  # every channel but the huge one rounded away
    s = _Stats()
    s.add(ref, cand)
    whole = s.m.sqnr_db()
    assert whole > 40  # the tensor's power is the huge channel's
    assert abs(s.channel_sqnr_db(whole) - (-10 * np.log10(7 / 8))) < 1e-6  # 7 of 8 channels lost entirely
    dead = ref.copy()
    dead[:, 3] = 0.0  # a dead channel counts for nothing either way
    s2 = _Stats()
    s2.add(dead, dead)
    assert s2.channel_sqnr_db(s2.m.sqnr_db()) >= 199
