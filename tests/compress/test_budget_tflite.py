"""compress's accuracy budget on full-integer TFLite: the ops INT8 hurts most stay float32 (ai-edge-quantizer's
NO_QUANTIZE) until the budget holds, as for the ONNX INT8 artifact; a budget that cannot be met keeps the best
file, says by how much and exits 4; the budget is part of the stage cache's key."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk.errors import BudgetError
from edgesdk.intake import build_model, load_weights
from edgesdk.runtimes import load
from tests.conftest import DIGITS_MODEL

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")


@pytest.fixture(scope="module")
def digits(digits_dir: Path):
    import torch

    model = build_model(f"{DIGITS_MODEL}:build")
    load_weights(model, digits_dir / "weights.safetensors")
    with np.load(digits_dir / "calib.npz") as z:
        example = {"x": torch.from_numpy(z["x"][:1])}
    return model, example, digits_dir / "calib.npz"


def _int8(manifest: dict) -> dict:
    return next(a for a in manifest["artifacts"] if a["name"].endswith(".int8.tflite"))


@pytest.fixture(scope="module")
def unmeetable(digits, tmp_path_factory):
    """A cosine of exactly 1.0: not even the float TFLite meets it (float rounding), so no op kept in float can."""
    model, example, calib = digits
    out = tmp_path_factory.mktemp("tflite-budget") / "o"
    with pytest.raises(BudgetError) as err:
        edgesdk.compress(model, dict(example), out_dir=out, calib_data=calib, targets=["tflite"], quantize="int8",
                         min_cosine=1.0, benchmark=False)
    return out, err.value


def test_unmeetable_budget_keeps_the_tflite_file_and_says_why(unmeetable):
    out, err = unmeetable
    assert "model.int8.tflite" in str(err) and "under 1.0" in str(err)
    assert "the float model it quantizes misses the budget too" in str(err)
    art = _int8(json.loads((out / "manifest.json").read_text()))
    budget = art["meta"]["budget"]
    assert art["status"] == "budget_not_met" and (out / art["path"]).is_file() and not budget["met"]
    assert [t["float_nodes"] for t in budget["tries"]] == [0] and not budget["float_nodes"]
    source = budget["float_source"]  # the float TFLite, scored once: within float rounding of PyTorch
    assert not source["met"] and source["cosine"] > 0.99999 > budget["result"]["cosine"]


def test_budget_keeps_the_worst_tflite_ops_in_float_until_it_holds(unmeetable, digits, tmp_path):
    model, example, calib = digits
    as_made = json.loads((unmeetable[0] / "manifest.json").read_text())
    before = _int8(as_made)["meta"]["budget"]["tries"][0]["cosine"]
    assert before < 0.99999
    target = before + (1.0 - before) / 2  # halfway to float: not met as made, reachable with ops in float
    res = edgesdk.compress(model, dict(example), out_dir=tmp_path / "o", calib_data=calib, targets=["tflite"],
                           quantize="int8", min_cosine=round(target, 9), benchmark=False)
    art = _int8(res.manifest)
    budget = art["meta"]["budget"]
    assert art["status"] != "budget_not_met" and budget["met"] and budget["result"]["cosine"] >= round(target, 9)
    assert budget["tries"][0]["float_nodes"] == 0 and not budget["tries"][0]["met"]
    layers = budget["float_layers"]
    assert layers and all(r["tensor"] and r["sqnr_db"] < 60 for r in layers)
    assert art["meta"]["quantization"]["kept_float"] == list(budget["float_nodes"])
    assert art["meta"]["quantization"]["route"] == "ai-edge-quantizer" and art["parity"]["passed"]
    with load(tmp_path / "o", artifact=art["name"]) as sess:  # shipped as a normal artifact of the directory
        assert sess.run({"x": np.load(calib)["x"][:4]})["output"].shape == (4, 10)


def test_budget_is_in_the_tflite_stage_cache_key(digits, tmp_path):
    """A run with a budget must not be served the unbudgeted INT8 file from the cache, nor the reverse."""
    model, example, calib = digits
    cache = tmp_path / "cache"
    kw = dict(calib_data=calib, targets=["tflite"], quantize="int8", benchmark=False, cache_dir=cache)
    plain = edgesdk.compress(model, dict(example), out_dir=tmp_path / "a", **kw)
    assert "budget" not in _int8(plain.manifest)["meta"]
    budgeted = edgesdk.compress(model, dict(example), out_dir=tmp_path / "b", min_cosine=0.5, **kw)
    art = _int8(budgeted.manifest)
    assert art["meta"]["budget"]["met"] and art["meta"]["budget"]["tries"][0]["float_nodes"] == 0
