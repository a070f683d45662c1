"""The CLI end to end with click's CliRunner, and every bad input of the foundation issue."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from edgesdk.atomic import sha256_file
from edgesdk.cli import main
from tests.conftest import DIGITS_MODEL


def invoke(*args: str) -> "Result":
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_clean_error(result, *needles: str, code: int | None = None) -> None:
    """Non-zero exit, no traceback, and each needle in the message."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, f"{n!r} not in:\n{result.output}"


@pytest.fixture(scope="module")
def digits_run(digits_dir: Path, tmp_path_factory) -> tuple[Path, "Result"]:
    out = tmp_path_factory.mktemp("cli") / "out"
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--weights", digits_dir / "weights.safetensors",
                 "--input", "x:1x1x8x8", "--calib", digits_dir / "calib.npz", "--eval-data",
                 digits_dir / "eval.npz", "--iterations", "20", "--warmup", "2", "--batch", "1,4", "-o", out)
    return out, res


def test_digits_compress_end_to_end(digits_run):
    out, res = digits_run
    assert res.exit_code == 0, res.output
    for name in ("model.onnx", "manifest.json", "report.json", "report.md"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    (art,) = manifest["artifacts"]
    assert art["format"] == "onnx" and art["precision"] == "fp32"
    assert art["sha256"] == sha256_file(out / art["path"])
    assert art["size_bytes"] == (out / art["path"]).stat().st_size
    assert art["parity"]["passed"] is True
    assert art["parity"]["max_abs_err"] <= 1e-4
    assert art["parity"]["batches"] >= 17
    assert art["accuracy"] is not None and art["accuracy"] > 90
    assert abs(art["accuracy"] - manifest["model"]["accuracy"]) <= 0.5
    assert [i["name"] for i in art["inputs"]] == ["x"]
    assert art["inputs"][0]["shape"][0] == "batch"
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1 and report["device"]["cores"]
    rows = {(r["artifact"], r["batch"]) for r in report["results"]}
    assert rows == {("pytorch", 1), ("pytorch", 4), ("model.onnx", 1), ("model.onnx", 4)}
    for r in report["results"]:
        assert r["latency_ms"]["p50"] > 0 and r["throughput"] > 0
    assert "model.onnx" in res.output and "speed-up" in res.output
    # nothing stray is left next to the output dir
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_report_prints_again(digits_run):
    out, _ = digits_run
    res = invoke("report", out / "report.json")
    assert res.exit_code == 0 and "model.onnx" in res.output
    res = invoke("report", "--json", out / "report.json")
    assert json.loads(res.output)["schema_version"] == 1


def test_run_inspect_benchmark_on_artifact(digits_run, digits_dir, tmp_path):
    out, _ = digits_run
    with np.load(digits_dir / "eval.npz") as z:
        x, labels = z["x"][:16], z["labels"][:16]
    np.savez(tmp_path / "in.npz", x=x)
    res = invoke("run", out / "model.onnx", "--inputs", tmp_path / "in.npz", "-o", tmp_path / "o.npz")
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "o.npz") as z:
        logits = z[z.files[0]]
    assert logits.shape == (16, 10)
    assert (logits.argmax(1) == labels).mean() > 0.8
    res = invoke("inspect", out / "model.onnx")
    assert res.exit_code == 0 and "opset" in res.output and "Conv" in res.output
    res = invoke("benchmark", out, "--iterations", "5", "--warmup", "1", "--batch", "1,2", "-o", tmp_path / "b.json")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b.json").read_text())
    assert {r["batch"] for r in rep["results"]} == {1, 2}


def test_doctor_lists_backends():
    res = invoke("doctor")
    assert res.exit_code == 0
    assert "onnxruntime" in res.output and "CPU" in res.output


def test_dry_run_prints_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("export:\n  opset: 17\nbenchmark:\n  batches: [1, 8]\n")
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--input", "x:1x1x8x8", "--recipe", recipe,
                 "--no-simplify", "--dry-run", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    resolved = json.loads(res.output)["recipe"]
    assert resolved["export"]["opset"] == 17 and resolved["export"]["simplify"] is False
    assert resolved["benchmark"]["batches"] == [1, 8]
    assert not (tmp_path / "o").exists()


def test_recipe_unknown_key_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("export:\n  opsett: 17\n")
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--input", "x:1x1x8x8", "--recipe", recipe, "--dry-run")
    assert_clean_error(res, "opsett", "opset")


@pytest.mark.parametrize("spec, needle", [("x:1x?x8", "integers"), ("x", "NAME:DIM"), ("x:1x1x8x8:float99", "dtype"),
                                          ("x:0x1x8x8", ">= 1")])
def test_malformed_input_spec(spec, needle, tmp_path):
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--input", spec, "-o", tmp_path / "o", "--no-benchmark")
    assert_clean_error(res, needle)
    assert not (tmp_path / "o").exists()


def test_model_file_not_found(tmp_path):
    res = invoke("compress", tmp_path / "nope.py:build", "--input", "x:1x1x8x8", "-o", tmp_path / "o")
    assert_clean_error(res, "not found", "nope.py")


def test_factory_that_does_not_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ndef build(:\n")
    res = invoke("compress", f"{bad}:build", "--input", "x:1x4", "-o", tmp_path / "o")
    assert_clean_error(res, "importing", "SyntaxError")


def test_factory_missing_and_not_a_module(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def build():\n    return 42\n")
    assert_clean_error(invoke("compress", f"{f}:nothere", "--input", "x:1x4", "-o", tmp_path / "o"),
                       "no attribute 'nothere'", "build")
    assert_clean_error(invoke("compress", f"{f}:build", "--input", "x:1x4", "-o", tmp_path / "o"),
                       "torch.nn.Module", "int")


def test_weights_that_do_not_fit(tmp_path):
    from safetensors.torch import save_file

    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_model", DIGITS_MODEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    state = mod.build().state_dict()
    first = next(k for k, v in state.items() if v.ndim == 4)
    state[first] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    state.pop(next(k for k in state if k.endswith("bias")))
    save_file(state, str(tmp_path / "w.safetensors"))
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--weights", tmp_path / "w.safetensors", "--input", "x:1x1x8x8",
                 "-o", tmp_path / "o")
    assert_clean_error(res, "missing keys", "unexpected keys (1): extra.weight", "shape mismatches", first)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_full_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"model": _Evil(str(marker))}, path)
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--weights", path, "--input", "x:1x1x8x8", "-o", tmp_path / "o")
    assert_clean_error(res, "does not unpickle", "safetensors")
    assert not marker.exists()
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, needle", [
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "LFS"),
    (b"", "empty"),
])
def test_non_onnx_files_are_named(content, needle, tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(content)
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 1, 8, 8), np.float32))
    for args in (("run", f, "--inputs", tmp_path / "in.npz"), ("benchmark", f), ("inspect", f)):
        assert_clean_error(invoke(*args), needle, "model.onnx")


def test_truncated_onnx_is_refused(digits_run, tmp_path):
    out, _ = digits_run
    data = (out / "model.onnx").read_bytes()
    f = tmp_path / "cut.onnx"
    f.write_bytes(data[: len(data) // 3])
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 1, 8, 8), np.float32))
    assert_clean_error(invoke("run", f, "--inputs", tmp_path / "in.npz"), "cut.onnx")


def test_run_with_wrong_feeds(digits_run, tmp_path):
    out, _ = digits_run
    np.savez(tmp_path / "in.npz", y=np.zeros((1, 1, 8, 8), np.float64))
    assert_clean_error(invoke("run", out / "model.onnx", "--inputs", tmp_path / "in.npz"), "x", "y")


def test_debug_shows_traceback(tmp_path):
    res = CliRunner().invoke(main, ["--debug", "compress", str(tmp_path / "nope.py:build"), "--input", "x:1x4"])
    assert res.exit_code != 0
    assert res.exception is not None  # re-raised for the traceback


def test_calibration_data_mismatch(tmp_path, digits_dir):
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 1, 7, 7), np.float32))
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--input", "x:1x1x8x8", "--calib", tmp_path / "c.npz",
                 "-o", tmp_path / "o")
    assert_clean_error(res, "calibration data", "(4, 1, 7, 7)")
    np.savez(tmp_path / "c.npz", x=np.full((4, 1, 8, 8), np.nan, np.float32))
    res = invoke("compress", f"{DIGITS_MODEL}:build", "--input", "x:1x1x8x8", "--calib", tmp_path / "c.npz",
                 "-o", tmp_path / "o")
    assert_clean_error(res, "NaN")


def test_changed_artifact_is_refused(digits_run, tmp_path):
    import shutil

    out, _ = digits_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    assert_clean_error(invoke("benchmark", copy, "--iterations", "2"), "model.onnx changed", "sha256")
    from edgesdk.errors import ArtifactError
    from edgesdk.runtimes import load

    with pytest.raises(ArtifactError, match="changed since the manifest"):
        load(copy)


def test_unpickling_a_module_needs_the_loud_flag(tmp_path):
    from tests.models import ConvBnRelu

    path = tmp_path / "whole.pt"
    torch.save(ConvBnRelu().eval(), path)
    res = invoke("compress", path, "--input", "x:1x3x16x16", "-o", tmp_path / "o", "--no-benchmark")
    assert_clean_error(res, "does not unpickle model objects by default", "--unsafe-unpickle-model")
    assert not (tmp_path / "o").exists()
    res = invoke("compress", path, "--unsafe-unpickle-model", "--input", "x:1x3x16x16", "-o", tmp_path / "o",
                 "--no-benchmark")
    assert res.exit_code == 0, res.output
    assert "runs any code" in res.output and (tmp_path / "o" / "model.onnx").is_file()


def test_step_progress_counts_drive_a_bar_on_a_terminal():
    """StepProgress draws done/total for counted steps on a TTY, and plain sinks ignore counts."""
    import io

    from rich.console import Console

    from edgesdk.progress import StepProgress, counter
    from edgesdk.runtimes import benchmark

    assert counter(lambda msg: None) is None
    buf = io.StringIO()
    say = StepProgress(live=True, console=Console(file=buf, force_terminal=True, width=100))
    say("benchmarking something")
    seen: list[tuple[int, int]] = []

    class _Sess:  # the smallest thing benchmark() times
        backend, threads, inputs = "none", 1, []

        def run(self, feeds):
            return {}

        def synchronize(self):
            pass

    benchmark(_Sess(), iterations=200, warmup=0, feeds={},
              on_progress=lambda d, t: (seen.append((d, t)), say.count(d, t)))
    assert seen[-1] == (200, 200) and len(seen) == 50  # every 4th run of 200, outside the timed region
    task = say._progress.tasks[-1]
    assert task.fields["counted"] and task.completed == 200 and task.total == 200
    say._progress.refresh()
    assert "200/200" in buf.getvalue()
    say.close()
    quiet = StepProgress(quiet=True)
    quiet("x")
    quiet.count(1, 2)  # no display, no error


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1.5h", 5400.0)])
def test_recover_time_takes_seconds_minutes_or_hours(text, seconds):
    res = CliRunner().invoke(main, ["compress", "m.py:build", "--input", "x:1x4", "--prune", "0.5", "--recover-time",
                                    text, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["recipe"]["prune"]["recover_time_s"] == seconds


@pytest.mark.parametrize("text", ["2 weeks", "-5", "0", "m"])
def test_a_malformed_recover_time_is_a_clear_error(text):
    res = CliRunner().invoke(main, ["compress", "m.py:build", "--input", "x:1x4", "--prune", "0.5", "--recover-time",
                                    text, "--dry-run"])
    assert res.exit_code == 2 and "malformed --recover-time" in res.output and "Traceback" not in res.output
