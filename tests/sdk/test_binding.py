"""Inputs are bound to forward()'s parameters by name, whatever order the data comes in; names that
match no parameter are refused; unnamed inputs are bound by position and the manifest says so."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgesdk
from edgesdk.binding import bind_inputs
from edgesdk.errors import InputError
from edgesdk.runtimes import load


class Tagger(nn.Module):
    """Token ids and a mask of different meaning: swapping them changes the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1).float()
        return self.head(h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1))


def _data(n: int = 32, length: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = (np.arange(length)[None] < rng.integers(2, length + 1, (n, 1))).astype(np.int64)
    # the key order of an .npz written this way: attention_mask first
    return {"attention_mask": mask, "input_ids": rng.integers(0, 50, (n, length))}


def test_binding_orders_by_signature_and_refuses_unknown_names():
    b = bind_inputs(Tagger(), {"attention_mask": 1, "input_ids": 2})
    assert b.names == ("input_ids", "attention_mask") and b.by_name and b.keyword  # token_type_ids skipped
    assert "reordered" in b.note
    with pytest.raises(InputError, match="'ids' matches no parameter of Tagger.forward") as e:
        bind_inputs(Tagger(), {"ids": 1})
    assert "input_ids, token_type_ids=..., attention_mask=..." in e.value.expected
    with pytest.raises(InputError, match="needs 'input_ids'"):
        bind_inputs(Tagger(), {"attention_mask": 1})


def test_npz_key_order_does_not_swap_inputs(tmp_path):
    """The issue's case: keys attention_mask, input_ids for forward(input_ids, ..., attention_mask)."""
    torch.manual_seed(0)
    model, data = Tagger().eval(), _data()
    examples = {k: torch.from_numpy(v[:2]) for k, v in data.items()}
    res = edgesdk.compress(model, examples, out_dir=tmp_path / "o", calib_data=data, benchmark=False)
    art = res.manifest["artifacts"][0]
    assert [i["name"] for i in art["inputs"]] == ["input_ids", "attention_mask"] and art["parity"]["passed"]
    assert res.manifest["model"]["binding"]["by"] == "name"
    with torch.no_grad():  # the artifact, fed by name, agrees with the model called by name
        want = model(input_ids=torch.from_numpy(data["input_ids"]),
                     attention_mask=torch.from_numpy(data["attention_mask"])).numpy()
    with load(tmp_path / "o" / "model.onnx") as sess:
        got = sess.run({"attention_mask": data["attention_mask"], "input_ids": data["input_ids"]})["output"]
    assert (got.argmax(1) == want.argmax(1)).all() and np.allclose(got, want, atol=1e-5)


def test_unnamed_inputs_are_bound_by_position_and_said(tmp_path):
    class Two(nn.Module):
        def forward(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return image * scale

    res = edgesdk.compress(Two(), (torch.rand(1, 3), torch.rand(1, 3)), out_dir=tmp_path / "o", benchmark=False)
    binding = res.manifest["model"]["binding"]
    assert binding["by"] == "position" and binding["names"] == ["image", "scale"]
    assert "bound by position to forward(image, scale)" in binding["note"]


def test_a_name_no_parameter_takes_is_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="matches no parameter"):
        edgesdk.compress(Tagger(), {"ids": torch.zeros(1, 8, dtype=torch.int64)}, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_kwargs_models_take_any_name(tmp_path):
    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
            return self.lin(x + extra["bias"])

    res = edgesdk.compress(Kw(), {"bias": torch.rand(1, 4), "x": torch.rand(1, 4)}, out_dir=tmp_path / "o",
                           benchmark=False)
    art = res.manifest["artifacts"][0]
    assert [i["name"] for i in art["inputs"]] == ["x", "bias"] and art["parity"]["passed"]


def test_positional_only_parameters_and_star_args(tmp_path):
    class PosOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, /, z: torch.Tensor | None = None):
            return self.lin(x + (z if z is not None else 0))

    res = edgesdk.compress(PosOnly(), {"x": torch.rand(1, 4), "z": torch.rand(1, 4)}, out_dir=tmp_path / "a",
                           benchmark=False)
    assert res.manifest["artifacts"][0]["parity"]["passed"]

    class Star(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            return self.lin(x + sum(rest))

    res = edgesdk.compress(Star(), (torch.rand(1, 4), torch.rand(1, 4)), out_dir=tmp_path / "b", benchmark=False)
    art = res.manifest["artifacts"][0]
    assert art["meta"]["exporter"] == "dynamo" and art["inputs"][0]["shape"][0] == "batch"

    class One(nn.Module):
        def forward(self, x: torch.Tensor, **kw: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(InputError, match="2 unnamed inputs for a forward\\(\\) that takes 1 positional"):
        edgesdk.compress(One(), (torch.rand(1, 4), torch.rand(1, 4)), out_dir=tmp_path / "c", benchmark=False)
