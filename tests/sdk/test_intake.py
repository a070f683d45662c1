"""Loading the user's model: factories from files and packages, sibling imports, checkpoint layouts."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgesdk.intake import build_model, load_weights
from tests.models import BnNet


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


def test_a_model_file_imports_under_the_same_name_in_every_process(tmp_path):
    """Exporters write the module name into the artifact (TFLite location metadata): a name salted per process
    made every run's bytes differ, so a search's best.yaml could not re-make its TFLite file."""
    (tmp_path / "net.py").write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n"
                                     "def build():\n    return Net(4, 2)\n")
    code = ("import sys\nfrom edgesdk.intake import build_model\n"
            "print(type(build_model(sys.argv[1] + ':build')).__module__)\n")

    def name(seed: str) -> str:
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "net.py")], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONHASHSEED": seed})
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    first = name("1")
    assert first == name("2") and first.startswith("edgesdk_user_model_net_")
    (tmp_path / "net.py").write_text((tmp_path / "net.py").read_text() + "# edited\n")
    assert name("1") != first  # another source, another module
