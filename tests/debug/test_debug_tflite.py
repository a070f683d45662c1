"""edgesdk debug on TFLite files (LiteRT, every intermediate tensor preserved) against PyTorch, on real digits
artifacts made by compress with litert-torch: FP32 agrees module by module, INT8 is traced to its modules, a
channels-last file is fed in its own layout, a module changed on purpose is found, bad input is refused."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.debug import debug
from edgesdk.compress.export_tflite import export_tflite
from edgesdk.debug.tflite import _locations, compare_tflite, module_of_name
from edgesdk.intake import build_model, load_weights
from tests.conftest import DIGITS_MODEL
from tests.debug.refusals import assert_refused

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
FACTORY = f"{DIGITS_MODEL}:build"


def _compress(digits_dir, out, *extra):
    res = CliRunner().invoke(main, [
        "compress", FACTORY, "--weights", str(digits_dir / "weights.safetensors"), "--input", "x:1x1x8x8",
        "--calib", str(digits_dir / "calib.npz"), "--targets", "tflite", "--quantize", "int8", "--no-benchmark",
        *extra, "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def tflite_dir(digits_dir, tmp_path_factory):
    return _compress(digits_dir, tmp_path_factory.mktemp("debug-tflite") / "out")


def test_tensor_names_map_to_module_paths():
    net = build_model(FACTORY)
    loc = _locations(net)
    seg = "torch.nn.modules.container.Sequential_stem/torch.nn.modules.container.Sequential_0"
    assert loc[seg + "/torch.nn.modules.activation.ReLU_2"] == "stem.0.2"
    root = "edgesdk_user_model_model_0123456789ab.DigitsNet"
    fused = (f"{root}/{seg}/torch.nn.modules.activation.ReLU_2;;{root}/{seg}/torch.nn.modules.batchnorm."
             f"BatchNorm2d_1;;{root}/{seg}/torch.nn.modules.conv.Conv2d_0;1")
    assert module_of_name(fused, loc) == "stem.0.2"  # a fused op's output is its outermost module's
    assert module_of_name(f"{root};1", loc) == ""  # made in the model's own forward
    wrapped = f"litert_torch._convert.to_channel_last_io.ChannelLastIOWrapper/{root}_wrapped/{seg}/torch.nn.modules."
    assert module_of_name(wrapped + "activation.ReLU_2;", loc) == "stem.0.2"  # below a wrapper litert-torch added
    assert module_of_name("x", loc) is None  # an input: no location
    assert module_of_name(f"{root}/unknown_9;", loc) == ""  # an op in no module of the model: the model's own


def test_fp32_tflite_agrees_with_pytorch_and_int8_is_traced(tflite_dir, digits_dir):
    w = str(digits_dir / "weights.safetensors")
    fp32 = debug(tflite_dir / "model.tflite", against="pytorch", model=FACTORY, weights=w)
    assert fp32.backend == "litert" and fp32.agree and len(fp32.layers) >= 4
    assert {d.module for d in fp32.layers} >= {"stem.0.2", "block.2"}
    assert "folded" in fp32.unmatched["stem.0.0"]  # the Conv fused with its BatchNorm and ReLU
    int8 = debug(tflite_dir / "model.int8.tflite", against="pytorch", model=FACTORY, weights=w)
    assert int8.first_jump is not None and not int8.agree
    assert {d.module for d in int8.layers} == {d.module for d in fp32.layers}
    for d in int8.layers:
        assert 15 < d.sqnr_db < 90 and 0.99 < d.cosine < 1.0, d


def test_a_module_changed_on_purpose_is_the_first_jump_in_the_tflite_file(tflite_dir, digits_dir):
    net = build_model(FACTORY)
    load_weights(net, digits_dir / "weights.safetensors")
    with torch.no_grad():
        net.block[1].bias += 0.5
    report = debug(tflite_dir / "model.tflite", against="pytorch", model=net)
    assert report.first_jump is not None and report.first_jump.module.startswith("block"), report.layers
    assert all(d.sqnr_db >= 90 for d in report.layers if d.module.startswith("stem"))


def test_a_channels_last_file_is_fed_in_its_layout(digits_dir, tmp_path):
    """--tflite-nhwc files take N,H,W,C (litert-torch wraps the model): the NCHW reference data is transposed
    for them, and their tensors are still traced to the modules."""
    import numpy as np

    net = build_model(FACTORY)
    load_weights(net, digits_dir / "weights.safetensors")
    path = tmp_path / "nhwc.tflite"
    export_tflite(net, {"x": torch.rand(1, 1, 8, 8)}, path, channels_last=True)
    rng = np.random.default_rng(0)
    batches = [{"x": rng.random((4, 1, 8, 8), dtype=np.float32)} for _ in range(2)]
    layers, _unmatched = compare_tflite(path, net, batches, layout={"x": "channels_last"})
    assert len(layers) >= 4 and all(d.sqnr_db >= 90 for d in layers)
    assert {d.module for d in layers} >= {"stem.0.2", "block.2"}


def test_tflite_bad_input_is_refused_cleanly(tflite_dir, tmp_path):
    art = str(tflite_dir / "model.int8.tflite")
    broken = tmp_path / "broken" / "model.tflite"
    broken.parent.mkdir()
    broken.write_bytes(b"TFL3 not a flatbuffer")
    (broken.parent / "reference.npz").write_bytes((tflite_dir / "reference.npz").read_bytes())
    assert_refused([
        ([str(broken), "--against", "pytorch", "--model", FACTORY], "not a TFLite model LiteRT can load"),
        ([str(tflite_dir / "model.tflite")], "no float TFLite parent"),
        ([art, "--against", "pytorch", "--model", FACTORY, "--backend", "openvino"], "runs on LiteRT"),
        ([art, "--against", "pytorch"], "needs the model"),
    ], tmp_path)
