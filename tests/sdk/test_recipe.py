from __future__ import annotations

import pytest

from edgesdk.errors import InputError
from edgesdk.recipe import Recipe, apply_options


def test_round_trip_and_overrides():
    r = apply_options(Recipe(), opset=17, batches=[1, 8], allow_mismatch=True)
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.export.opset == 17 and r.benchmark.batches == (1, 8) and r.parity.allow_mismatch
    assert r.stages == ["export_onnx"]


@pytest.mark.parametrize("data, needle", [
    ({"targets": ["coreml"]}, "unknown target"),
    ({"export": {"opset": 3}}, "opset"),
    ({"export": {"exporter": "magic"}}, "exporter"),
    ({"benchmark": {"batches": [0]}}, "batch"),
    ({"parity": {"atol": -1}}, "atol"),
    ({"nonsense": 1}, "nonsense"),
    ({"export": 5}, "mapping"),
])
def test_invalid_recipes(data, needle):
    with pytest.raises(InputError, match=needle):
        Recipe.from_dict(data)


def test_yaml_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Recipe.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("export: [unclosed\n")
    with pytest.raises(InputError, match="YAML"):
        Recipe.from_yaml(bad)
