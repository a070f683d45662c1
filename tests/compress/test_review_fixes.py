"""Regression tests for bugs found in review: each one failed before its fix."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgesdk.errors import InputError
from edgesdk.intake import build_model, load_weights
from tests.models import build, make_inputs


class BnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def test_taylor_importance_leaves_batchnorm_statistics_alone():
    from edgesdk.compress.prune import prune_model

    model = BnNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    data = {"x": np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)}
    prune_model(model, {"x": torch.rand(1, 3, 8, 8)}, ratio=0.5, importance="taylor", round_to=None,
                data=data, protect=("body.0", "body.3"))  # nothing prunable: only the importance pass runs
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.mid = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 16, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.mid(self.emb(ids))))


def test_tied_weights_save_and_reload(tmp_path):
    from edgesdk.compress.prune import load_pruned, save_pruned

    model = Tied().eval()
    save_pruned(model, tmp_path / "m")
    again = load_pruned(Tied(), tmp_path / "m")
    ids = torch.randint(0, 16, (2, 5))
    assert torch.equal(again(ids), model(ids))


def test_recovery_labels_outside_the_classes_are_an_input_error():
    from edgesdk.compress.recover import recover

    teacher, student = build("Residual"), build("Residual")
    x = make_inputs("Residual", 8)["x"].numpy()
    classes = teacher(torch.from_numpy(x[:1])).shape[1]
    with pytest.raises(InputError, match=f"0 <= labels < {classes}"):
        recover(student, teacher, {"x": x, "labels": np.full(8, classes)}, ["x"], steps=2)
    assert not student.training


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrap", ["model", "state_dict_ema", "module.", "model.", "no_bn_counter"])
def test_common_checkpoint_layouts_load(tmp_path, wrap):
    src = BnNet().eval()
    sd = src.state_dict()
    if wrap in ("model", "state_dict_ema"):
        obj = {wrap: sd, "epoch": 3}
    elif wrap.endswith("."):
        obj = {wrap + k: v for k, v in sd.items()}
    else:
        obj = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    dst = BnNet().eval()
    load_weights(dst, _save(obj, tmp_path / "w.pt"))
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(dst(x), src(x))


def test_factory_imports_a_sibling_module_when_called(tmp_path):
    (tmp_path / "layers.py").write_text("import torch\nclass Block(torch.nn.Linear):\n    pass\n")
    (tmp_path / "net.py").write_text("def build():\n    import layers\n    return layers.Block(4, 2)\n")
    assert build_model(f"{tmp_path / 'net.py'}:build").out_features == 2


def test_package_module_factory_resolves_from_the_current_folder(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "common.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 2)\n")
    exe = Path(sys.executable).parent / "edgesdk"
    res = subprocess.run([str(exe), "compress", "pkg.common:make", "--input", "x:1x4", "--dry-run"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, sys
        from edgesdk.intake import build_model
        print(build_model("pkg.common:make").out_features)
    """)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "2", res.stderr


def test_a_folder_of_arrays_with_a_stray_image_uses_the_arrays(tmp_path):
    from PIL import Image

    from edgesdk.compress.calibration import image_preprocess, load_calibration

    ex = {"x": np.zeros((1, 1, 8, 8), np.float32)}
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "preview.png")
    spec = image_preprocess(tmp_path, ex, None)
    data, desc = load_calibration(tmp_path, ex, preprocess=spec)
    assert spec is None and data["x"].shape == (40, 1, 8, 8) and "40 samples" in desc


def test_image_calibration_casts_to_the_input_dtype(tmp_path):
    from PIL import Image

    from edgesdk.compress.calibration import image_preprocess, load_calibration

    for i in range(3):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    for dtype, spec in ((np.float16, None), (np.uint8, "scale=1")):
        ex = {"x": np.zeros((1, 1, 8, 8), dtype)}
        data, _ = load_calibration(tmp_path, ex, preprocess=image_preprocess(tmp_path, ex, spec))
        assert data["x"].dtype == dtype
    assert sorted(np.unique(data["x"]).tolist()) == [0, 60, 120]


def test_16_bit_grey_images_are_rescaled_not_clipped(tmp_path):
    from PIL import Image

    from edgesdk.runtimes.preprocess import ImagePreprocess

    Image.fromarray(np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)).save(tmp_path / "g16.png")
    x = ImagePreprocess.parse("resize=stretch", (1, 1, 8, 8)).load(tmp_path / "g16.png")
    assert len(np.unique(x)) > 32 and x.min() == 0 and abs(x.max() - 1.0) < 1e-6
