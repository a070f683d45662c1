"""--calib IMAGE_DIR: images through a stored preprocessing spec that the device can replay."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from edgesdk.errors import InputError
from edgesdk.runtimes.preprocess import ImagePreprocess, load_images
from tests.conftest import DIGITS_MODEL

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """64 real digits written as 8x8 grayscale PNGs (pixel = value * 255/16)."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("imgs")
    images = load_digits().images[:64]
    for i, im in enumerate(images):
        PIL.fromarray((im * 255 / 16).round().astype(np.uint8), "L").save(d / f"{i:03d}.png")
    return d, images


def test_parse_defaults_from_the_input_shape():
    s = ImagePreprocess.parse(None, (1, 3, 224, 224))
    assert (s.layout, s.channels, s.size, s.shape) == ("NCHW", "RGB", (224, 224), (3, 224, 224))
    s = ImagePreprocess.parse("mean=0.5,std=0.25,channels=bgr,resize=stretch", (1, 96, 128, 3))
    assert (s.layout, s.channels, s.size, s.resize, s.shape) == ("NHWC", "BGR", (96, 128), "stretch", (96, 128, 3))
    assert ImagePreprocess.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize("text, shape, needle", [
    ("size=abc", (1, 3, 8, 8), "malformed preprocess value"),
    ("colour=red", (1, 3, 8, 8), "unknown preprocess key"),
    ("channels=gray", (1, 3, 8, 8), "do not match the model input"),
    ("mean=1:2", (1, 3, 8, 8), "1 or 3 values"),
    ("std=0", (1, 1, 8, 8), "must not be 0"),
    (None, (1, 3, "h", "w"), "dynamic height/width"),
    (None, (1, 64), "4-D image input"),
])
def test_parse_errors(text, shape, needle):
    with pytest.raises(InputError, match=needle):
        ImagePreprocess.parse(text, shape)


def test_images_become_the_training_range(digit_images):
    d, images = digit_images
    spec = ImagePreprocess.parse("size=8x8,resize=stretch", (1, 1, 8, 8))
    x = load_images(d, spec)
    assert x.shape == (64, 1, 8, 8) and x.dtype == np.float32
    # the training data is images / 16; the PNGs hold round(images * 255/16): equal up to 8-bit rounding
    assert np.abs(x[:, 0] - images / 16).max() <= 0.5 / 255 + 1e-6


def test_crop_resize_keeps_the_centre(tmp_path):
    im = np.zeros((40, 80, 3), np.uint8)
    im[:, 20:60] = (255, 0, 0)  # a red centre square on black: after shorter-side resize + centre crop, all red
    PIL.fromarray(im, "RGB").save(tmp_path / "wide.png")
    x = ImagePreprocess.parse("size=20x20", (1, 3, 20, 20)).load(tmp_path / "wide.png")
    assert x.shape == (3, 20, 20)
    assert x[0, :, 2:-2].min() > 0.9 and x[1:].max() < 0.1
    bgr = ImagePreprocess.parse("size=20x20,channels=bgr,layout=nhwc", (1, 20, 20, 3)).load(tmp_path / "wide.png")
    assert bgr.shape == (20, 20, 3) and bgr[10, 10, 2] > 0.9 and bgr[10, 10, 0] < 0.1


def test_compress_with_an_image_directory(digit_images, digits_dir, tmp_path):
    d, _ = digit_images
    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "compress", f"{DIGITS_MODEL}:build", "--weights", str(digits_dir / "weights.safetensors"),
        "--input", "x:1x1x8x8", "--calib", str(d), "--preprocess", "size=8x8,resize=stretch",
        "--eval-data", str(digits_dir / "eval.npz"), "--quantize", "int8", "--no-benchmark", "-o", str(out)],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    spec = ImagePreprocess.from_dict(manifest["preprocess"])
    assert spec.size == (8, 8) and spec.channels == "GRAY"
    assert "images in" in manifest["calibration"] and "(64 samples)" in manifest["calibration"]
    accs = {a["precision"]: a["accuracy"] for a in manifest["artifacts"]}
    assert accs["int8"] >= accs["fp32"] - 1.0  # calibrated on 64 real images, INT8 holds accuracy


def test_preprocess_without_images_is_refused(digits_dir, tmp_path):
    res = CliRunner().invoke(main, [
        "compress", f"{DIGITS_MODEL}:build", "--input", "x:1x1x8x8", "--calib", str(digits_dir / "calib.npz"),
        "--preprocess", "size=8x8", "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "applies to a calibration directory of images" in res.output


def test_a_folder_of_arrays_with_a_stray_image_uses_the_arrays(tmp_path):
    from edgesdk.compress.calibration import image_preprocess, load_calibration

    ex = {"x": np.zeros((1, 1, 8, 8), np.float32)}
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32))
    PIL.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "preview.png")
    spec = image_preprocess(tmp_path, ex, None)
    data, desc = load_calibration(tmp_path, ex, preprocess=spec)
    assert spec is None and data["x"].shape == (40, 1, 8, 8) and "40 samples" in desc


def test_image_calibration_casts_to_the_input_dtype(tmp_path):
    from edgesdk.compress.calibration import image_preprocess, load_calibration

    for i in range(3):
        PIL.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    for dtype, spec in ((np.float16, None), (np.uint8, "scale=1")):
        ex = {"x": np.zeros((1, 1, 8, 8), dtype)}
        data, _ = load_calibration(tmp_path, ex, preprocess=image_preprocess(tmp_path, ex, spec))
        assert data["x"].dtype == dtype
    assert sorted(np.unique(data["x"]).tolist()) == [0, 60, 120]


def test_16_bit_grey_images_are_rescaled_not_clipped(tmp_path):
    PIL.fromarray(np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)).save(tmp_path / "g16.png")
    x = ImagePreprocess.parse("resize=stretch", (1, 1, 8, 8)).load(tmp_path / "g16.png")
    assert len(np.unique(x)) > 32 and x.min() == 0 and abs(x.max() - 1.0) < 1e-6
