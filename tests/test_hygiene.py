"""Source hygiene: no unpickling, no eval, no torch.load without weights_only=True in the package; layers that
point one way without import cycles; no undefined names or unused imports."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("sdk", "compress", "runtimes")


def _sources():
    for d in PACKAGE_DIRS:
        yield from sorted((ROOT / d).rglob("*.py"))


def test_no_unsafe_deserialisation_or_eval():
    offences = []
    for f in _sources():
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bpickle\.loads?\(", code) or re.search(r"(?<![\w.])eval\(", code):
                offences.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
            explicit = "# edgesdk: explicit unsafe opt-in" in line and f.name == "intake.py"
            if "torch.load(" in code and "weights_only=True" not in code and not explicit:
                offences.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
            if "allow_pickle=True" in code:
                offences.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offences == [], "\n".join(offences)
    optins = [f for f in _sources() if "explicit unsafe opt-in" in f.read_text()]
    assert [f.name for f in optins] == ["intake.py"]  # the one loudly named opt-in, nowhere else
    assert len(list(_sources())) > 15


def test_layers_point_one_way_and_nothing_imports_in_a_circle(tmp_path):
    """import-linter's contracts (pyproject.toml) and no import cycle, on the installed layout (in a child
    process that imports the copy, never this process's edgesdk)."""
    from tests.lint_graph import installed_layout

    installed_layout(tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    lint = str(Path(sys.executable).with_name("lint-imports"))
    res = subprocess.run([lint], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "0 broken" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    code = ("import grimp, json; from tests.lint_graph import cycles; "
            "print(json.dumps(cycles(grimp.build_graph('edgesdk'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == [], res.stdout


def test_no_undefined_names_or_unused_imports():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format", "concise",
                          "sdk", "compress", "runtimes", "tests", "examples", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
