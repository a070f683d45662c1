"""The tinylm example: a Llama-shaped model trained on the standard library's docstrings (real English text,
offline), saved as a Hugging Face folder and compressed to INT4 KV-cache ONNX with its held-out text as the
perplexity set."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from tests.conftest import ROOT, train_example

pytestmark = pytest.mark.slow


def test_tinylm_trains_on_real_text_and_compresses_to_int4(tmp_path):
    summary = train_example(ROOT / "examples" / "tinylm" / "train.py", tmp_path, "--max-steps", "40",
                            "--minutes", "2")
    assert summary["steps"] == 40 and summary["heldout_ppl_after"] < 0.5 * summary["heldout_ppl_before"]
    folder = tmp_path / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in folder.iterdir()}
    out = tmp_path / "out"
    # 40 steps leave many near ties for int4 to flip: the artifacts are kept and judged, whatever the verdict
    res = CliRunner().invoke(main, ["compress", str(folder), "--quantize", "int4", "--eval-text",
                                    str(tmp_path / "heldout.txt"), "--no-benchmark", "--allow-mismatch",
                                    "-o", str(out)])
    assert res.exit_code in (0, 3), res.output
    arts = {a["name"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert arts["fp32"]["parity"]["passed"]  # the float export is the model, whatever int4 does
    for name in ("fp32", "int4"):
        ppl = arts[name]["parity"]["perplexity"]
        assert ppl["pytorch"] > 1 and ppl["onnx"] > 1, ppl  # measured on the held-out docstrings, both sides
