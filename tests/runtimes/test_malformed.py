"""Malformed-file corpus: >= 300 mutants per format (truncations, bit flips, overwrites, empty files, Git LFS
pointers, HTML, JSON, wrong extensions, huge declared dimensions). Loading each in safe mode gives the SDK's
own error naming the file, or a model that still loads and runs; never a crash or hang of the caller."""
from __future__ import annotations

import json
import random
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgesdk.errors import EdgeSDKError
from edgesdk.runtimes import load
from edgesdk.runtimes.safety import probe
from tests.conftest import DIGITS_MODEL

SPECIAL = {
    "empty": b"",
    "lfs-pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2149\nsize 1048576\n",
    "html": b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please log in</body></html>",
    "json": b'{"error": "not found"}',
    "zeros": bytes(4096),
    "text": b"this is not a model\n" * 20,
}


def mutants(data: bytes, suffix: str, folder: Path, n: int, seed: int) -> dict[Path, str]:
    """``n`` mutants of ``data`` plus the special files; path -> kind."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[Path, str] = {}

    def put(kind: str, blob: bytes, ext: str = suffix) -> None:
        p = folder / f"{len(out):04d}-{kind}{ext}"
        p.write_bytes(blob)
        out[p] = kind

    for kind, blob in SPECIAL.items():
        put(kind, blob)
    for i in range(n):
        b = bytearray(data)
        kind = ("truncate", "flip", "overwrite", "structure-flip")[i % 4]
        if kind == "truncate":
            b = b[:rng.randrange(1, len(b))]
        elif kind in ("flip", "structure-flip"):
            # structure-flip: within the first and last KB, where the graph / flatbuffer tables sit
            edge = min(1024, len(b) // 2)
            for _ in range(rng.randint(1, 16)):
                j = rng.randrange(len(b)) if kind == "flip" else rng.choice(
                    [rng.randrange(edge), len(b) - 1 - rng.randrange(edge)])
                b[j] ^= 1 << rng.randrange(8)
        else:
            j = rng.randrange(len(b))
            k = rng.randint(1, 64)
            b[j:j + k] = bytes(rng.randrange(256) for _ in range(min(k, len(b) - j)))
        put(kind, bytes(b))
    return out


@pytest.fixture(scope="module")
def corpus(digits_artifacts, tmp_path_factory) -> dict[str, dict[Path, str]]:
    root = tmp_path_factory.mktemp("corpus")
    onnx_bytes = (digits_artifacts / "model.onnx").read_bytes()
    sets = {"onnx": mutants(onnx_bytes, ".onnx", root / "onnx", 400, seed=1)}
    # huge declared dimensions: an input of 2**40 elements, and an initializer claiming 2**40 elements
    m = onnx.load(str(digits_artifacts / "model.onnx"))
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 2**40
    p = root / "onnx" / "huge-input.onnx"
    onnx.save(m, str(p))
    sets["onnx"][p] = "huge-dims"
    m = onnx.load(str(digits_artifacts / "model.onnx"))
    init = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    init.dims[0] = 2**40
    p = root / "onnx" / "huge-initializer.onnx"
    onnx.save(m, str(p))
    sets["onnx"][p] = "huge-dims"
    if pytest.importorskip("ai_edge_litert") and __import__("importlib").util.find_spec("litert_torch"):
        import torch

        from edgesdk.compress.export_tflite import export_tflite
        from edgesdk.intake import build_model

        src = root / "digits.tflite"
        export_tflite(build_model(f"{DIGITS_MODEL}:build"), {"x": torch.rand(1, 1, 8, 8)}, src)
        tfl = src.read_bytes()
        sets["tflite"] = mutants(tfl, ".tflite", root / "tflite", 400, seed=2)
        # wrong extensions, both ways
        for name, blob in (("tflite-named-onnx.onnx", tfl), ("onnx-named-tflite.tflite", onnx_bytes)):
            (root / "tflite" / name).write_bytes(blob)
            sets["tflite"][root / "tflite" / name] = "wrong-extension"
    return sets


def _classify(paths: list[Path]) -> list:
    """Probe in two parallel children (2 cores); each child handles many files and is replaced on a crash."""
    halves = [paths[0::2], paths[1::2]]
    results: list[list] = [[], []]

    def work(i: int) -> None:
        results[i] = probe(halves[i], timeout_s=90)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_path = {r.path: r for r in results[0] + results[1]}
    return [by_path[str(p)] for p in paths]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_malformed_corpus(corpus, fmt):
    if fmt not in corpus:
        pytest.skip("LiteRT or litert-torch is not installed")
    files = corpus[fmt]
    assert len(files) >= 300
    results = _classify(list(files))
    table: Counter = Counter()
    problems = []
    for path, r in zip(files, results):
        kind = files[path]
        err = r.to_error()
        if r.outcome == "ok":
            table[(kind, "loaded and ran")] += 1
            continue
        assert isinstance(err, EdgeSDKError)
        label = r.outcome if r.outcome in ("crashed", "hung") else f"refused: {type(err).__name__}"
        table[(kind, label)] += 1
        text = err.format()
        if path.name not in text:
            problems.append(f"{path.name}: message does not name the file: {text[:200]}")
        if r.error and r.error.get("unwrapped"):
            problems.append(f"{path.name}: a raw {r.error['unwrapped']} escaped edgesdk's error types")
        if r.outcome == "hung":
            problems.append(f"{path.name}: hung past the timeout")
    width = max(len(k) for k, _ in table)
    print(f"\n{fmt}: {len(files)} malformed files, each loaded in safe mode (child process)")
    for (kind, label), count in sorted(table.items()):
        print(f"  {kind:<{width}}  {label:<34} {count:>4}")
    totals = Counter(label for (_, label), c in table.items() for _ in range(c))
    print("  totals: " + json.dumps(dict(totals)))
    assert problems == [], "\n".join(problems[:20])


@pytest.mark.slow
def test_safe_load_api_and_cli_on_a_sample(corpus, tmp_path):
    """The public entry points (load(..., isolate=True) and the CLI) give SDK errors on malformed files."""
    from click.testing import CliRunner

    from edgesdk.cli import main

    np.savez(tmp_path / "x.npz", x=np.zeros((1, 1, 8, 8), np.float32))
    sample = [p for fmt in corpus for p, kind in list(corpus[fmt].items())[:18] if "flip" not in kind]
    refused = 0
    for path in sample:
        try:
            with load(path, isolate=True) as sess:
                sess.run({s.name: np.zeros((1, *s.shape[1:]), s.dtype) for s in sess.inputs})
        except EdgeSDKError as e:
            refused += 1
            assert path.name in e.format()
        res = CliRunner().invoke(main, ["run", str(path), "--inputs", str(tmp_path / "x.npz")])
        assert "Traceback" not in res.output
        assert res.exit_code == 0 or "error:" in res.output
    print(f"\nsafe load API + CLI on {len(sample)} malformed files: {refused} refused with SDK errors, no crash")
    assert refused >= len(sample) // 2
