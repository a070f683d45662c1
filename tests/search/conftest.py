"""What the search tests share: the digits model's search flags (a cheap base recipe: few parity batches,
a short fixed recovery) for one space."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DIGITS_MODEL

BASE_RECIPE = "parity:\n  batches: 4\nprune:\n  recover_steps: 20\n"


@pytest.fixture(scope="session")
def search_flags(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A function: the CLI arguments of a digits search over ``prune`` x ``quantize`` into ``out``."""
    recipe = tmp_path_factory.mktemp("search-recipe") / "base.yaml"
    recipe.write_text(BASE_RECIPE)

    def flags(out: Path, prune: str = "0,0.5", quantize: str = "fp32,int8", backends: str = "onnxruntime",
              *extra: str) -> list[str]:
        return ["search", f"{DIGITS_MODEL}:build", "--weights", str(digits_dir / "weights.safetensors"),
                "--input", "x:1x1x8x8", "--calib", str(digits_dir / "calib.npz"),
                "--eval-data", str(digits_dir / "eval.npz"), "--recipe", str(recipe), "--prune", prune,
                "--quantize", quantize, "--backends", backends, "--iterations", "20", "--warmup", "2",
                "-o", str(out), *extra]
    return flags
