"""The stage cache (edgesdk.stage_cache): real compress runs sharing one cache directory, and two processes
storing one key at once. torch is imported inside the tests so the spawned store workers start light."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from edgesdk.stage_cache import ENTRY_FILE, StageCache


def _model(seed: int):
    import torch

    from tests.models import ConvBnRelu

    torch.manual_seed(seed)
    return ConvBnRelu().eval()


def _inputs(name: str = "ConvBnRelu"):
    from tests.models import make_inputs

    return make_inputs(name, 1)


CALIB = {"x": np.random.default_rng(0).random((16, 3, 16, 16), dtype=np.float32)}


def _compress(model, out: Path, cache: Path, **options):
    import edgesdk

    # the TorchScript exporter: the cache does not care which one ran, and it starts in a fraction of the time
    return edgesdk.compress(model, _inputs(type(model).__name__), out_dir=out, benchmark=False, cache_dir=cache,
                            exporter="legacy", **options)


def _by_name(result) -> dict[str, dict]:
    return {a["name"]: a for a in result.manifest["artifacts"]}


def _cache(result) -> dict[str, dict]:
    return {a.name: a.meta["cache"] for a in result.artifacts}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stage-cache")


@pytest.fixture(scope="module")
def first(cache_dir, tmp_path_factory):
    """An FP32 export and an int8-dynamic quantization of one model, computed into the shared cache."""
    return _compress(_model(0), tmp_path_factory.mktemp("first") / "out", cache_dir, quantize="int8-dynamic")


def test_a_second_identical_run_hits_every_stage_with_identical_files(first, cache_dir, tmp_path):
    assert [c["hit"] for c in _cache(first).values()] == [False, False]
    again = _compress(_model(0), tmp_path / "out", cache_dir, quantize="int8-dynamic")
    cache = _cache(again)
    assert [c["hit"] for c in cache.values()] == [True, True]
    assert {n: c["key"] for n, c in cache.items()} == {n: c["key"] for n, c in _cache(first).items()}
    assert all(c["saved_s"] is not None for c in cache.values())
    a, b = _by_name(first), _by_name(again)
    assert a.keys() == b.keys() == {"model.onnx", "model.int8dyn.onnx"}
    for name in a:
        assert b[name]["sha256"] == a[name]["sha256"]
        assert b[name]["parity"] == a[name]["parity"] and b[name]["parity"]["passed"]
        assert b[name]["meta"]["cache"]["hit"] is True  # the manifest records it
    assert (tmp_path / "out" / "model.onnx").read_bytes() == (first.out_dir / "model.onnx").read_bytes()


def test_other_quantize_settings_reuse_the_export_and_miss_the_quantization(first, cache_dir, tmp_path):
    run = _compress(_model(0), tmp_path / "out", cache_dir, quantize="int8", calib_data=CALIB)
    cache, before = _cache(run), _cache(first)
    assert cache["model.onnx"] == {**before["model.onnx"], "hit": True, "saved_s": cache["model.onnx"]["saved_s"]}
    assert cache["model.int8.onnx"]["hit"] is False
    assert cache["model.int8.onnx"]["key"] != before["model.int8dyn.onnx"]["key"]
    again = _compress(_model(0), tmp_path / "out2", cache_dir, quantize="int8", calib_data=CALIB,
                      calib_method="entropy")
    assert _cache(again)["model.onnx"]["hit"] is True
    assert _cache(again)["model.int8.onnx"]["hit"] is False  # calib_method is read by quantize_onnx


def test_other_weights_miss(first, cache_dir, tmp_path):
    run = _compress(_model(1), tmp_path / "out", cache_dir, quantize="int8-dynamic")
    assert [c["hit"] for c in _cache(run).values()] == [False, False]
    assert _by_name(run)["model.onnx"]["sha256"] != _by_name(first)["model.onnx"]["sha256"]


def test_a_pruned_model_is_restored_with_a_working_module(first, cache_dir, tmp_path):
    import torch

    model = _model(0)
    opts = dict(prune=0.3, recover_steps=2, prune_round_to=None, calib_data=CALIB)  # fixed steps: no clock
    made = _compress(model, tmp_path / "a", cache_dir, **opts)
    again = _compress(model, tmp_path / "b", cache_dir, **opts)
    assert [c["hit"] for c in _cache(made).values()] == [True, False, False]  # the FP32 export is first's
    assert [c["hit"] for c in _cache(again).values()] == [True, True, True]
    pruned = next(a for a in again.artifacts if a.format == "torch")
    assert pruned.meta["params"] < sum(p.numel() for p in model.parameters())  # something was pruned
    # the restored module is the one that was made: it runs, and the pruned export gated against it passes
    x = _inputs()["x"]
    first_pruned = next(a for a in made.artifacts if a.format == "torch").module
    with torch.no_grad():
        assert torch.equal(pruned.module(x), first_pruned(x))
    a, b = _by_name(made), _by_name(again)
    for name in ("model.pruned.safetensors", "model.pruned.onnx"):
        assert b[name]["sha256"] == a[name]["sha256"]
    assert b["model.pruned.onnx"]["parity"] == a["model.pruned.onnx"]["parity"]
    assert b["model.pruned.onnx"]["parity"]["passed"]
    assert b["model.pruned.safetensors"]["meta"]["vs_original"] == a["model.pruned.safetensors"]["meta"]["vs_original"]


def test_a_recovery_hook_is_never_cached(tmp_path):
    """A Python callable cannot be hashed: the key says why not, instead of guessing."""
    import edgesdk.compress.stages  # noqa: F401  (registers the stages)
    from edgesdk.pipeline import STAGES, StageContext
    from edgesdk.recipe import Recipe

    ctx = StageContext(model=_model(0), example_inputs=_inputs(), recipe=Recipe(), workdir=tmp_path,
                       output_names=["y"], recovery_hook=lambda model, data: model)
    cache = StageCache(tmp_path / "cache")
    key, why = cache.stage_key(STAGES["prune"], None, ctx)
    assert key is None and "ctx.recovery_hook" in why and "callable" in why
    ctx.recovery_hook = None
    assert cache.stage_key(STAGES["prune"], None, ctx)[0] is not None


def _store_worker(root: str, work: str, barrier, results) -> None:
    """Write the same stage output as the other worker, then store it under one key once both are ready."""
    work_dir = Path(work)
    work_dir.mkdir(parents=True)
    (work_dir / "model.onnx").write_bytes(b"same bytes in both processes" * 1000)
    cache = StageCache(root)
    record = {"stage": "export_onnx", "stage_time_s": 1.0, "targets": {},
              "artifact": {"name": "model.onnx", "path": "model.onnx"}}
    barrier.wait()
    results.put(str(cache.store("k" * 64, {"model.onnx": work_dir / "model.onnx"}, record)))


def test_two_processes_storing_one_key_leave_one_valid_entry(tmp_path):
    mp = multiprocessing.get_context("spawn")
    barrier, results = mp.Barrier(2), mp.Queue()
    root = tmp_path / "cache"
    procs = [mp.Process(target=_store_worker, args=(str(root), str(tmp_path / f"w{i}"), barrier, results))
             for i in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert got == [str(root / ("k" * 64))] * 2  # both see the one entry as theirs
    assert sorted(p.name for p in root.iterdir()) == ["k" * 64]  # no temporary dir left behind
    entry = StageCache(root).lookup("k" * 64)
    assert entry is not None and entry.files == ["model.onnx"]
    assert sorted(p.name for p in entry.dir.iterdir()) == [ENTRY_FILE, "model.onnx"]
    assert (entry.dir / "model.onnx").read_bytes() == b"same bytes in both processes" * 1000


def test_the_cli_reuses_stages_with_cache_dir(tmp_path):
    import json

    from click.testing import CliRunner
    from safetensors.torch import save_file

    from edgesdk.cli import main

    save_file(_model(0).state_dict(), str(tmp_path / "w.safetensors"))
    factory = f"{Path(__file__).resolve().parents[1] / 'models.py'}:ConvBnRelu"

    def run(out: str) -> dict:
        res = CliRunner().invoke(main, ["compress", factory, "--weights", str(tmp_path / "w.safetensors"),
                                        "--input", "x:1x3x16x16", "--no-benchmark", "--exporter", "legacy",
                                        "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / out)],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return json.loads((tmp_path / out / "manifest.json").read_text())["artifacts"][0]["meta"]["cache"]

    made, again = run("a"), run("b")
    assert (made["hit"], again["hit"]) == (False, True) and made["key"] == again["key"]
