"""Any axis can be dynamic: symbols in --input, --dynamic-dims, token sequences by default; the gate checks
each symbol at several sizes and the manifest records them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import edgesdk
from edgesdk.cli import main
from edgesdk.dims import check_sizes, parse_axes, resolve
from edgesdk.errors import InputError
from edgesdk.runtimes import load

FCN = '''
import torch
from torch import nn

class FCN(nn.Module):
    """Fully convolutional: any height and width (even ones)."""
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                  nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, stride=2))
    def forward(self, x):
        return self.body(x)

def build():
    torch.manual_seed(0)
    return FCN()
'''


def test_resolve_and_sizes():
    dims = resolve({"ids": (1, 16), "mask": (1, 16), "x": (1, 3, 32, 48)}, {"x": {2: "H", 3: "W"}},
                   dtypes={"ids": "int64", "mask": "int64", "x": "float32"})
    assert dims.axes == {"ids": {0: "batch", 1: "sequence"}, "mask": {0: "batch", 1: "sequence"},
                         "x": {0: "batch", 2: "H", 3: "W"}}
    assert dims.sizes == {"sequence": 16, "H": 32, "W": 48}
    assert check_sizes(160) == (64, 160, 256) and check_sizes(16) == (8, 16, 24)
    with pytest.raises(InputError, match="needs size >= 2"):
        resolve({"x": (1, 1, 8)}, {"x": {1: None}})
    with pytest.raises(InputError, match="cannot be made dynamic"):
        parse_axes({"x": [0]}, {"x": (1, 3)})
    with pytest.raises(InputError, match="not an input"):
        parse_axes({"y": [1]}, {"x": (1, 3)})


def test_fully_convolutional_net_runs_at_any_size_from_the_cli(tmp_path):
    (tmp_path / "fcn.py").write_text(FCN)
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["compress", f"{tmp_path / 'fcn.py'}:build", "--input", "x:Nx3xHxW",
                                    "--dim", "H=32", "--dim", "W=48", "--no-benchmark", "-o", str(out)])
    assert res.exit_code == 0, res.output
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["inputs"][0]["shape"] == ["batch", 3, "H", "W"]
    dd = manifest["model"]["dynamic_dims"]
    assert dd["H"]["checked"] == [16, 32, 48] == list(check_sizes(32)) and dd["W"]["checked"] == list(check_sizes(48))
    art = manifest["artifacts"][0]
    assert art["inputs"][0]["shape"] == ["batch", 3, "H", "W"] and art["parity"]["passed"]
    with load(out / "model.onnx") as sess:  # a size never traced
        assert sess.run({"x": np.random.rand(2, 3, 40, 56).astype(np.float32)})["output"].shape == (2, 4, 40, 56)


def test_dynamic_dims_option_and_sizes_the_model_refuses(tmp_path):
    class Strided(nn.Module):  # needs a height divisible by 4: check sizes it refuses are dropped, and said
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(1, 4, 4, stride=4)
            self.up = nn.ConvTranspose2d(4, 1, 4, stride=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.up(self.down(x))
            torch._assert(y.shape[-2] == x.shape[-2], "height must be a multiple of 4")
            return y + x

    torch.manual_seed(0)
    res = edgesdk.compress(Strided().eval(), {"x": torch.rand(1, 1, 12, 8)}, out_dir=tmp_path / "o",
                           dynamic_dims={"x": [2]}, benchmark=False)
    dd = res.manifest["model"]["dynamic_dims"]
    sym = next(s for s in dd if s != "batch")
    assert 12 in dd[sym]["checked"] and len(dd[sym]["checked"]) >= 2
    assert res.manifest["artifacts"][0]["parity"]["passed"]


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.layer(self.emb(input_ids), src_key_padding_mask=attention_mask == 0)
        return self.head(h.mean(1))


def test_token_sequences_are_dynamic_by_default(tmp_path):
    torch.manual_seed(0)
    ex = {"input_ids": torch.randint(0, 100, (1, 16)), "attention_mask": torch.ones(1, 16, dtype=torch.int64)}
    res = edgesdk.compress(Encoder().eval(), ex, out_dir=tmp_path / "o", benchmark=False)
    art = res.manifest["artifacts"][0]
    assert [i["shape"] for i in art["inputs"]] == [["batch", "sequence"], ["batch", "sequence"]]
    assert res.manifest["model"]["dynamic_dims"]["sequence"]["checked"] == [8, 16, 24] and art["parity"]["passed"]
    with load(tmp_path / "o" / "model.onnx") as sess:
        ids = np.random.default_rng(0).integers(0, 100, (3, 40))
        assert sess.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})["output"].shape == (3, 3)
    res = edgesdk.compress(Encoder().eval(), ex, out_dir=tmp_path / "s", benchmark=False, dynamic_sequence=False)
    assert [i["shape"] for i in res.manifest["artifacts"][0]["inputs"]] == [["batch", 16], ["batch", 16]]


def test_a_decoders_ids_get_their_own_sequence_and_square_images_keep_independent_axes(tmp_path):
    class EncDec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(input_ids).mean(1) + self.emb(decoder_input_ids).mean(1))

    torch.manual_seed(0)
    ex = {"input_ids": torch.randint(0, 50, (1, 16)), "decoder_input_ids": torch.randint(0, 50, (1, 8))}
    res = edgesdk.compress(EncDec().eval(), ex, out_dir=tmp_path / "a", benchmark=False)
    assert [i["shape"] for i in res.manifest["artifacts"][0]["inputs"]] == [
        ["batch", "sequence"], ["batch", "sequence_decoder_input_ids"]]
    dims = resolve({"x": (1, 3, 32, 32)}, {"x": {2: None, 3: None}})
    assert dims.axes["x"] == {0: "batch", 2: "x_2", 3: "x_3"}  # never tied because the example is square


def test_an_axis_the_model_cannot_vary_is_an_error_when_asked_and_fixed_when_automatic(tmp_path):
    class Flat(nn.Module):  # a Linear over the flattened image: one size only
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3 * 8 * 8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.flatten(1))

    with pytest.raises(InputError, match="does not run with H other than 8"):
        edgesdk.compress(Flat(), {"x": torch.rand(1, 3, 8, 8)}, out_dir=tmp_path / "a", benchmark=False,
                         dynamic_dims={"x": {2: "H", 3: "W"}})

    class Positions(nn.Module):  # a position table of 16: token sequences of 16 only
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.pos, self.head = nn.Embedding(50, 8), nn.Parameter(torch.rand(16, 8)), nn.Linear(8, 2)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(input_ids) + self.pos)

    res = edgesdk.compress(Positions().eval(), {"input_ids": torch.randint(0, 50, (1, 16))}, out_dir=tmp_path / "b",
                           benchmark=False)
    assert res.manifest["artifacts"][0]["inputs"][0]["shape"] == ["batch", 16]
    assert "sequence" not in res.manifest["model"]["dynamic_dims"]
    assert any("exported fixed at 16" in w for w in res.report["warnings"])
