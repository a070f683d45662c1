"""Regression tests for six small defects: over-long output paths, a closed stdout, noise in report compare,
the backend behind the steps table's p50, `run` summaries of non-classifier outputs, and output file modes."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgesdk.atomic import clean_stale, path_too_long, staged_output_dir, write_bytes, write_json
from edgesdk.cli import main
from edgesdk.errors import OutputWriteError
from edgesdk.report import build_report, steps_rows, to_markdown
from edgesdk.report.compare import (APART, NO_DISTRIBUTION, NOISY, REGRESSED, WITHIN_NOISE, compare_reports,
                                    compare_to_text, p50_interval)
from edgesdk.runtimes.bench import MAX_SAMPLES, kept_samples, latency_stats, mean_ci, median_ci
from tests.runtimes.conftest import mlp_model

LONG = "a" * 300  # over NAME_MAX (255 bytes) on every common filesystem
FITS = "b" * 250  # fits NAME_MAX, but ".edgesdk-stage-" + it + "-XXXXXXXX" would not


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_write_error(res, path_part: str) -> None:
    """Exit 5 (OutputWriteError), the four parts of the message, no traceback."""
    assert res.exit_code == 5, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    for needle in ("too long", "expected:", "found:", "fix:", path_part[:40]):
        assert needle in res.output, f"{needle!r} not in:\n{res.output}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- 1. over-long output paths ------------------------------------------------------------------------------

def test_path_too_long_names_the_component_and_the_whole(tmp_path):
    assert path_too_long(tmp_path / "fine") is None
    assert "300 bytes" in path_too_long(tmp_path / LONG / "x")
    deep = tmp_path.joinpath(*["c" * 200] * 25)  # every name fits, the whole is over PATH_MAX (4096)
    assert "whole path" in path_too_long(deep)


def test_staged_output_dir_refuses_a_name_over_name_max_before_writing(tmp_path):
    with pytest.raises(OutputWriteError) as info:
        with staged_output_dir(tmp_path / "new" / LONG):
            pytest.fail("the block must not run")
    assert "too long" in info.value.what and info.value.expected and info.value.found and info.value.hint
    assert list(tmp_path.iterdir()) == []  # not even the parent "new" was created


def test_a_name_that_fits_gets_a_shortened_staging_dir_and_replaces_the_old_set(tmp_path):
    out = tmp_path / FITS
    for content in (b"old", b"new"):  # the second run also moves the first set aside under a shortened name
        with staged_output_dir(out) as stage:
            assert len(stage.name.encode()) <= 255
            write_bytes(stage / "f", content)
            write_json(stage / "manifest.json", {})
    assert (out / "f").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == [FITS]


def test_clean_stale_finds_the_shortened_staging_dir_of_a_killed_run(tmp_path):
    # a run killed inside the block (os._exit: no cleanup at all), as kill -9 would
    code = ("import os, sys; from edgesdk.atomic import staged_output_dir\n"
            "with staged_output_dir(sys.argv[1]) as st:\n    (st / 'f').write_bytes(b'x'); os._exit(9)\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / FITS)], capture_output=True, text=True)
    assert run.returncode == 9, run.stderr
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".edgesdk-stage-")]
    assert len(left.name.encode()) <= 255 and (left / "f").is_file()
    (tmp_path / (FITS[:-1] + "c")).mkdir()  # another output with the same first 249 characters: not ours
    assert clean_stale(tmp_path, FITS[:-1] + "c") == []
    assert clean_stale(tmp_path, FITS) == [left] and not left.exists()


def test_write_bytes_to_a_long_name_that_fits_and_to_one_that_does_not(tmp_path):
    name = "d" * 250 + ".npz"
    write_bytes(tmp_path / name, b"x")  # the temporary name is shortened, not the file's
    assert [p.name for p in tmp_path.iterdir()] == [name]
    with pytest.raises(OutputWriteError, match="too long"):
        write_bytes(tmp_path / "sub" / LONG, b"x")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_compress_to_an_over_long_out_is_exit_5_not_an_internal_error(tmp_path):
    factory = tmp_path / "tiny.py"
    factory.write_text("from torch import nn\n\nclass Tiny(nn.Module):\n    def __init__(self):\n"
                       "        super().__init__()\n        self.fc = nn.Linear(4, 3)\n\n"
                       "    def forward(self, x):\n        return self.fc(x)\n\n\ndef build():\n    return Tiny()\n")
    res = invoke("compress", f"{factory}:build", "--input", "x:1x4", "--no-benchmark", "-o", tmp_path / LONG)
    assert_write_error(res, LONG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.py"]


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return mlp_model(tmp_path / "mlp.onnx")


def test_run_benchmark_and_report_to_an_over_long_output_are_exit_5(mlp, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((2, 4), np.float32))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_write_error(invoke("run", mlp, "--no-isolate", "--inputs", tmp_path / "in.npz", "-o",
                              tmp_path / f"{LONG}.npz"), LONG)
    assert_write_error(invoke("benchmark", mlp, "--no-isolate", "--iterations", "2", "--warmup", "0", "-o",
                              tmp_path / f"{LONG}.json"), LONG)
    res = invoke("benchmark", mlp, "--no-isolate", "--iterations", "2", "--warmup", "0", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert_write_error(invoke("report", "show", tmp_path / "r.json", "-o", tmp_path / LONG / "r.md"), LONG)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "r.json"])


# --- 2. a closed stdout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["md", "json"])
def test_a_reader_that_closes_stdout_early_ends_the_command_quietly(tmp_path, fmt):
    # ~5 MB of output: far more than a pipe holds (64 KiB, at most 1 MiB on Linux), so the child's writes
    # really hit the closed pipe, whatever the timing
    warnings = [f"warning {i}: " + "x" * 90 for i in range(50_000)]
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"schema_version": 1, "results": [], "warnings": warnings}))
    # PYTHONUNBUFFERED makes stdout a raw file whose partial write Python's text layer drops silently: the
    # broken pipe would go unnoticed instead of being handled, so the child runs with Python's default buffering
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open(tmp_path / "stderr", "wb") as err:
        child = subprocess.Popen([sys.executable, "-m", "edgesdk.cli", "report", "show", "--format", fmt, str(big)],
                                 stdout=subprocess.PIPE, stderr=err, env=env, cwd=tmp_path)
        first = child.stdout.readline()
        child.stdout.close()  # like `| head -1`
        rc = child.wait(timeout=120)
    stderr = (tmp_path / "stderr").read_text()
    assert first.strip() in (b"# edgesdk report", b"{")
    assert rc == 0, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr and "Exception ignored" not in stderr


# --- 3. noise-aware compare ----------------------------------------------------------------------------------

def _row(samples: np.ndarray, artifact: str = "m.onnx", batch: int = 1) -> dict:
    """A result row as runtimes.benchmark writes it, from given latency samples (ms)."""
    lat = latency_stats(samples)
    return {"artifact": artifact, "backend": "onnxruntime", "format": "onnx", "precision": "fp32", "batch": batch,
            "iterations": len(samples), "latency_ms": lat, "throughput": batch * 1000.0 / lat["mean"],
            "samples_ms": kept_samples(samples)}


def _report(*rows: dict) -> dict:
    return build_report(device={"cpu_model": "test CPU", "cores": 2}, results=list(rows))


def test_median_and_mean_intervals():
    rng = np.random.default_rng(0)
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None and mean_ci([1.0, 2.0]) is None  # too few to say
    stall = [0.02] * 39 + [50.0]  # one long stall among fast runs: the mean's interval stays within the samples
    assert 0.02 <= mean_ci(stall)[0] < np.mean(stall) < mean_ci(stall)[1] <= 50.0
    hits = 0
    for _ in range(400):  # seeded: the same 400 draws every run
        x = rng.exponential(size=50)
        lo, hi = median_ci(x)
        assert lo <= np.median(x) <= hi
        hits += lo <= np.log(2) <= hi  # the true median of Exp(1)
    assert 0.92 <= hits / 400 <= 1.0
    kept = kept_samples(np.arange(5000.0))  # thinned evenly, in time order, first and last kept
    assert len(kept) == MAX_SAMPLES and kept[0] == 0.0 and kept[-1] == 4999.0 and kept == sorted(kept)


def test_benchmark_rows_store_their_distribution(mlp):
    from edgesdk.runtimes import benchmark, load

    with load(mlp, threads=1, isolate=False) as sess:
        r = benchmark(sess, batch=2, warmup=2, iterations=30)
    lat = r["latency_ms"]
    assert len(r["samples_ms"]) == 30 and min(r["samples_ms"]) == pytest.approx(lat["min"])
    assert lat["p50_ci_low"] <= lat["p50"] <= lat["p50_ci_high"]
    assert lat["mean_ci_low"] <= lat["mean"] <= lat["mean_ci_high"]
    assert p50_interval(r) == (lat["p50_ci_low"], lat["p50_ci_high"])


def test_clearly_separated_distributions_are_flagged():
    rng = np.random.default_rng(1)
    base, new = _row(1.0 + 0.02 * rng.standard_normal(200)), _row(2.0 + 0.02 * rng.standard_normal(200))
    result = compare_reports(_report(base), _report(new), max_regression=0.05)
    assert result["regressed"]
    p50 = next(m for m in result["rows"][0]["metrics"] if m["metric"] == "p50_ms")
    assert p50["verdict"] == REGRESSED and p50["decided"] == APART and p50["new_ci"][0] > p50["base_ci"][1]
    assert any("p50 ms" in r and APART in r for r in result["regressions"])


def test_a_change_beyond_the_threshold_within_noise_is_not_a_regression():
    base_samples = 1.0 + 0.5 * np.random.default_rng(2).random(30)  # wide spread: 1.0 .. 1.5 ms
    base, new = _row(base_samples), _row(base_samples * 1.06)  # p50 +6%, the same spread
    bci, nci = p50_interval(base), p50_interval(new)
    assert nci[0] <= bci[1]  # the premise: the intervals overlap
    result = compare_reports(_report(base), _report(new), max_regression=0.05)
    p50 = next(m for m in result["rows"][0]["metrics"] if m["metric"] == "p50_ms")
    assert p50["change"] == pytest.approx(0.06) and p50["verdict"] == "ok" and p50["decided"] == WITHIN_NOISE
    assert not result["regressed"]
    text = compare_to_text(result)
    assert "p50 ms +6.0% within noise (95% CI overlap)" in text and "ok: no regression" in text


def test_two_runs_of_the_same_model_are_judged_on_their_intervals(mlp):
    from edgesdk.runtimes import benchmark, load

    with load(mlp, threads=1, isolate=False) as sess:
        a, b = (_report({**benchmark(sess, batch=1, warmup=3, iterations=40), "artifact": "mlp.onnx",
                         "precision": "fp32", "format": "onnx"}) for _ in range(2))
    same = compare_reports(a, a, max_regression=0.05)
    assert not same["regressed"] and all(m["verdict"] == "ok" for r in same["rows"] for m in r["metrics"])
    result = compare_reports(a, b, max_regression=0.05)
    checked = [m for r in result["rows"] for m in r["metrics"] if m["metric"] in NOISY]
    assert {m["metric"] for m in checked} == set(NOISY)
    for m in checked:  # whatever the timings: never REGRESSED while the intervals overlap
        overlap = m["new_ci"][0] <= m["base_ci"][1] and m["new_ci"][1] >= m["base_ci"][0]
        assert not (overlap and m["verdict"] == REGRESSED), m
        assert (m.get("decided") is not None) == (abs(m["change"]) > 0.05 + 1e-12), m


def test_rows_without_a_distribution_fall_back_to_the_threshold():
    rng = np.random.default_rng(3)
    base, new = _row(1.0 + 0.5 * rng.random(30)), _row(1.0 + 0.5 * rng.random(30))
    for r in (base, new):
        del r["samples_ms"]
        r["latency_ms"] = {k: v for k, v in r["latency_ms"].items() if "_ci_" not in k}  # an older report
    new["latency_ms"]["p50"] = base["latency_ms"]["p50"] * 1.06
    result = compare_reports(_report(base), _report(new), max_regression=0.05)
    p50 = next(m for m in result["rows"][0]["metrics"] if m["metric"] == "p50_ms")
    assert result["regressed"] and p50["decided"] == NO_DISTRIBUTION
    edited = _row(1.0 + 0.5 * rng.random(30))
    edited["latency_ms"]["p50"] = 99.0  # outside its own stored interval: the interval is not trusted
    assert p50_interval(edited) is None


# --- 4. the steps table names the backend behind each p50 ----------------------------------------------------

def _timed(artifact: str, backend: str, p50: float, batch: int = 1) -> dict:
    return {"artifact": artifact, "backend": backend, "format": "onnx", "precision": "fp32", "batch": batch,
            "latency_ms": {"p50": p50}}


@pytest.mark.parametrize("openvino_first", [False, True])
def test_steps_table_uses_the_default_backend_and_names_it(openvino_first):
    rows = [_timed("model.onnx", "onnxruntime", 2.0), _timed("model.onnx", "openvino", 1.0),
            _timed("model.int8.onnx", "openvino", 0.5), _timed("model.onnx", "onnxruntime", 9.0, batch=8)]
    if openvino_first:
        rows.reverse()
    arts = [{"name": "model.onnx", "stage": "export_onnx", "meta": {"stage_time_s": 1.234}},
            {"name": "model.int8.onnx", "stage": "quantize_onnx", "meta": {}}]
    report = build_report(device={}, results=rows, artifacts=arts)
    steps = {s["artifact"]: s for s in steps_rows(report)}
    assert steps["model.onnx"]["p50 ms (batch 1)"] == "2.000 (onnxruntime)"
    assert steps["model.int8.onnx"]["p50 ms (batch 1)"] == "0.500 (openvino)"  # the only backend that timed it
    assert steps["model.onnx"]["stage time s"] == "1.23" and steps["model.int8.onnx"]["stage time s"] == "-"
    assert "| stage time s |" in to_markdown(report)
    del arts[0]["meta"]["stage_time_s"]
    assert "stage time s" not in steps_rows(build_report(device={}, results=rows, artifacts=arts))[0]


# --- 5. `run` summarises outputs by their shape ---------------------------------------------------------------

def _detector(path: Path) -> Path:
    """x: float32[N, 8] -> boxes float32[N, 10, 4], logits float32[N, 5], bbox float32[N, 4]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("wb", (8, 40)), ("wl", (8, 5)), ("wx", (8, 4)))]
    inits.append(numpy_helper.from_array(np.array([-1, 10, 4], np.int64), "shape"))
    nodes = [helper.make_node("MatMul", ["x", "wb"], ["flat"]),
             helper.make_node("Reshape", ["flat", "shape"], ["boxes"]),
             helper.make_node("MatMul", ["x", "wl"], ["logits"]), helper.make_node("MatMul", ["x", "wx"], ["bbox"])]
    outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 10, 4]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("bbox", TensorProto.FLOAT, ["N", 4])]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])], outs,
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_run_prints_argmax_only_for_classifier_shaped_outputs(tmp_path, mlp):
    x = np.random.default_rng(0).random((3, 8), dtype=np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    det = _detector(tmp_path / "det.onnx")
    summary = json.loads(invoke("run", det, "--no-isolate", "--inputs", tmp_path / "in.npz", "--json").stdout)
    assert summary["boxes"]["argmax"] is None and summary["bbox"]["argmax"] is None
    assert len(summary["logits"]["argmax"]) == 3
    for s in summary.values():
        assert set(s) == {"shape", "dtype", "min", "mean", "max", "argmax"}
        assert s["min"] <= s["mean"] <= s["max"]
    assert summary["boxes"]["shape"] == [3, 10, 4]
    text = invoke("run", det, "--no-isolate", "--inputs", tmp_path / "in.npz").stdout.splitlines()
    boxes = next(ln for ln in text if ln.startswith("boxes:"))
    assert "argmax" not in boxes and "min=" in boxes and "mean=" in boxes and "max=" in boxes
    assert "argmax=" in next(ln for ln in text if ln.startswith("logits:"))
    np.savez(tmp_path / "in4.npz", x=x[:, :4])
    (single,) = json.loads(invoke("run", mlp, "--no-isolate", "--inputs", tmp_path / "in4.npz", "--json").stdout
                           ).values()
    assert single["shape"] == [3, 3] and len(single["argmax"]) == 3  # the only output, (N, C): a classifier


# --- 6. output file modes -------------------------------------------------------------------------------------

def test_written_files_follow_the_umask_at_write_time(tmp_path):
    # the umask changes after edgesdk.atomic was imported: files must still get 0666 & ~umask of the write
    code = ("import os, stat, sys; from edgesdk.atomic import staged_output_dir, write_bytes\n"
            "os.umask(0o027)\nwrite_bytes(sys.argv[1] + '/f.bin', b'x')\n"
            "with staged_output_dir(sys.argv[1] + '/out') as st:\n    write_bytes(st / 'model.bin', b'x')\n"
            "print(oct(stat.S_IMODE(os.stat(sys.argv[1] + '/f.bin').st_mode)),"
            " oct(stat.S_IMODE(os.stat(sys.argv[1] + '/out/model.bin').st_mode)))\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0o640", "0o640"]


def test_cli_outputs_get_the_usual_mode(mlp, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((2, 4), np.float32))
    assert invoke("run", mlp, "--no-isolate", "--inputs", tmp_path / "in.npz", "-o", tmp_path / "o.npz").exit_code == 0
    assert invoke("benchmark", mlp, "--no-isolate", "--iterations", "2", "-o", tmp_path / "r.json").exit_code == 0
    assert invoke("report", "show", tmp_path / "r.json", "-o", tmp_path / "r.html").exit_code == 0
    for name in ("o.npz", "r.json", "r.html"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~_umask(), name


# --- a run killed where its staging dir has no owner file -------------------------------------------------------

@pytest.mark.parametrize("where", ["after the mkdir", "after the owner file is removed"])
def test_a_staging_dir_without_owner_file_of_a_killed_run_is_cleaned(tmp_path, where):
    # the two moments a staging dir has no owner file: just created, and just before the swap. A run killed
    # there (os._exit: no clean-up at all) must not leave a dir that clean_stale keeps for an hour.
    code = ("import os, sys, pathlib\nfrom edgesdk.atomic import staged_output_dir\nwhere = sys.argv[2]\n"
            "mkdir, unlink = os.mkdir, pathlib.Path.unlink\n"
            "def kill_after_mkdir(path, *a, **k):\n    mkdir(path, *a, **k)\n"
            "    if '.edgesdk-stage-' in os.fspath(path): os._exit(9)\n"
            "def kill_after_unlink(self, *a, **k):\n    unlink(self, *a, **k)\n"
            "    if self.name == '.edgesdk-owner': os._exit(9)\n"
            "if where == 'after the mkdir': os.mkdir = kill_after_mkdir\n"
            "else: pathlib.Path.unlink = kill_after_unlink\n"
            "with staged_output_dir(sys.argv[1]) as st:\n    (st / 'manifest.json').write_bytes(b'{}')\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out"), where], capture_output=True, text=True)
    assert run.returncode == 9, run.stderr
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".edgesdk-stage-out-") and not (left / ".edgesdk-owner").exists()
    assert clean_stale(tmp_path, "out") == [left]
    assert list(tmp_path.iterdir()) == []
