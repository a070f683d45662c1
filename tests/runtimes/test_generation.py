"""Text generation with a KV cache (edgesdk.runtimes.generation, `edgesdk generate`) on real tiny models: a
random-weight llama made offline, exported fp32 and int4 by onnxruntime-genai's model builder."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.atomic import sha256_file
from edgesdk.cli import main
from edgesdk.errors import ArtifactError, InputError
from edgesdk.runtimes import load
from edgesdk.runtimes.generation import KVLayout, generate, kv_layout
from edgesdk.runtimes.llm_bench import benchmark_generate
from edgesdk.runtimes.tokenizer import Tokenizer
from tests.llm_fixtures import build_onnx, make_hf_folder

PROMPTS = ["def main():\n    return", "The quick brown fox", "import"]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"hf": the Hugging Face folder, "fp32": its ONNX folder, "int4": the int4 one}; read-only."""
    root = tmp_path_factory.mktemp("tiny-lm")
    hf = make_hf_folder(root / "hf")
    return {"hf": hf, **build_onnx(hf, root)}


@pytest.fixture(scope="module")
def fp32(tiny_lm):
    with load(tiny_lm["fp32"] / "model.onnx", threads=1) as sess:
        yield sess


@pytest.fixture(scope="module")
def tok(tiny_lm) -> Tokenizer:
    return Tokenizer.from_dir(tiny_lm["fp32"])


def test_layout_of_the_builders_fp32_and_int4_models(tiny_lm):
    want = KVLayout(layers=2, kv_heads=2, head_dim=32, dtype="float32", position_ids=False, vocab=1024)
    for precision in ("fp32", "int4"):
        with load(tiny_lm[precision] / "model.onnx") as sess:
            assert kv_layout(sess) == want


def test_greedy_equals_transformers_generate(tiny_lm, fp32, tok):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(tiny_lm["hf"]))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm["hf"])).eval()
    for prompt in PROMPTS[:2]:
        ids = hf_tok(prompt)["input_ids"]
        assert tok.encode(prompt) == ids  # the torch-free tokenizer agrees with transformers
        with torch.no_grad():
            want = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  max_new_tokens=20, do_sample=False)[0, len(ids):].tolist()
        got = fp32.generate([ids], max_new_tokens=20)
        assert got.dtype == np.int64 and got[0].tolist() == want and len(want) >= 16


def test_int4_and_genai_engine_give_the_plain_loops_greedy_tokens(tiny_lm, tok):
    ids = np.array([tok.encode(PROMPTS[0])[:4], tok.encode(PROMPTS[1])[:4]])  # one length: what genai takes
    for precision in ("fp32", "int4"):
        with load(tiny_lm[precision] / "model.onnx") as sess:
            plain = generate(sess, ids, max_new_tokens=12)
            assert plain.shape == (2, 12) and ((0 <= plain) & (plain < 1024)).all()
            np.testing.assert_array_equal(generate(sess, ids, max_new_tokens=12, engine="genai"), plain)


def test_sampling_is_seeded_and_top_k_1_or_a_tiny_top_p_is_greedy(fp32, tok):
    ids = [tok.encode(PROMPTS[1])]
    greedy = fp32.generate(ids, max_new_tokens=12)
    a = fp32.generate(ids, max_new_tokens=12, do_sample=True, temperature=1.5, top_k=50, top_p=0.9, seed=7)
    b = fp32.generate(ids, max_new_tokens=12, do_sample=True, temperature=1.5, top_k=50, top_p=0.9, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, greedy)  # high temperature on a random model: 12 argmaxes in a row is not luck
    np.testing.assert_array_equal(fp32.generate(ids, max_new_tokens=12, do_sample=True, top_k=1, seed=1), greedy)
    np.testing.assert_array_equal(fp32.generate(ids, max_new_tokens=12, do_sample=True, top_p=1e-6, seed=2), greedy)


def test_eos_stops_each_row_and_the_call_when_all_are_done(fp32, tok):
    ids = np.array([tok.encode(PROMPTS[0])[:4], tok.encode(PROMPTS[1])[:4]])
    free = fp32.generate(ids, max_new_tokens=12, eos_token_id=())
    stop = int(free[0, 3])
    first = int(np.argmax(free[0] == stop))
    steps = []
    out = fp32.generate(ids, max_new_tokens=12, eos_token_id=stop, stream=lambda t: steps.append(t))
    assert out.shape[0] == 2 and len(steps) == out.shape[1]
    np.testing.assert_array_equal(out[0, :first + 1], free[0, :first + 1])
    assert (out[0, first + 1:] == 2).all()  # the pad id of genai_config.json after the row's eos
    hits = np.flatnonzero(free[1] == stop)
    assert out.shape[1] == (max(first, hits[0]) + 1 if hits.size else 12)
    np.testing.assert_array_equal(np.stack(steps, 1), out)
    alone = fp32.generate(ids[:1], max_new_tokens=12, eos_token_id=stop)
    np.testing.assert_array_equal(alone[0], free[0, :first + 1])


def test_a_padded_batch_equals_each_prompt_alone(fp32, tok):
    ids, mask = tok.encode_batch(PROMPTS)
    assert not mask.all()  # left padded: the prompts have different lengths
    batch = fp32.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=())
    for row, prompt in enumerate(PROMPTS):
        alone = fp32.generate([tok.encode(prompt)], max_new_tokens=10, eos_token_id=())
        np.testing.assert_array_equal(batch[row], alone[0])
    rows = [tok.encode(p) for p in PROMPTS]
    width = max(map(len, rows))
    right = np.array([r + [2] * (width - len(r)) for r in rows])  # the same prompts right padded
    right_mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    np.testing.assert_array_equal(
        fp32.generate(right, attention_mask=right_mask, max_new_tokens=10, eos_token_id=()), batch)


def test_two_threads_on_one_session_equal_sequential_runs(fp32, tok):
    prompts = [[tok.encode(PROMPTS[0])], [tok.encode(PROMPTS[1])]]
    want = [fp32.generate(p, max_new_tokens=16, eos_token_id=()) for p in prompts]
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                got[i].append(fp32.generate(prompts[i], max_new_tokens=16, eos_token_id=()))
        except BaseException as e:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # no timeout: the work itself ends (or raises, recorded in errors)
    assert not errors, errors
    for i in (0, 1):
        assert len(got[i]) == 3
        for out in got[i]:
            np.testing.assert_array_equal(out, want[i])


def test_bad_inputs_and_non_lm_models_raise_edgesdk_errors(fp32, mlp, tok):
    with pytest.raises(InputError, match="the prompt is 600 tokens; the model's context is 512"):
        fp32.generate([[5] * 600], max_new_tokens=4)
    assert fp32.generate([[5] * 500], max_new_tokens=64, eos_token_id=()).shape == (1, 12)  # ends at the context
    with load(mlp) as other, pytest.raises(ArtifactError, match="KV-cache layout the runtime does not recognise"):
        other.generate([[1, 2]])
    with pytest.raises(InputError, match="temperature=0"):
        fp32.generate([[5, 6]], do_sample=True, temperature=0)
    with pytest.raises(InputError, match="top_p=0"):
        fp32.generate([[5, 6]], do_sample=True, top_p=0)
    with pytest.raises(InputError, match="integer token ids"):
        fp32.generate(np.ones((1, 3), np.float32))
    with pytest.raises(InputError, match="outside the vocabulary"):
        fp32.generate([[5, 4096]])
    with pytest.raises(InputError, match="rows of different lengths"):
        fp32.generate([[5, 6], [7]])
    with pytest.raises(InputError, match="max_new_tokens"):
        fp32.generate([[5]], max_new_tokens=-1)
    ids, mask = tok.encode_batch(PROMPTS)
    with pytest.raises(InputError, match="different lengths"):
        fp32.generate(ids, attention_mask=mask, engine="genai")
    with pytest.raises(InputError, match="unknown engine"):
        fp32.generate([[5]], engine="vllm")
    assert fp32.generate([[5]], max_new_tokens=0).shape == (1, 0)


def test_benchmark_generate_reports_counts_and_positive_rates(tiny_lm, fp32):
    for precision in ("fp32", "int4"):
        with load(tiny_lm[precision] / "model.onnx", threads=1) as sess:
            r = benchmark_generate(sess, prompt_len=16, gen_len=8, batch=2, warmup=0, iterations=2)
        assert (r["prompt_len"], r["gen_len"], r["batch"], r["iterations"], len(r["runs"])) == (16, 8, 2, 2, 2)
        for key in ("ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "tokens_per_s", "peak_rss_mb"):
            assert r[key] > 0 and all(run[key] > 0 for run in r["runs"] if key in run)
        assert r["engine"] == "onnxruntime" and r["backend"] == "onnxruntime"
    with pytest.raises(InputError, match="context is 512"):
        benchmark_generate(fp32, prompt_len=500, gen_len=64)


def _artifact_dir(tiny_lm: dict[str, Path], mlp: Path, out: Path) -> Path:
    """An artifact directory as compress writes it for an LLM: the fp32 folder plus a non-LLM entry."""
    shutil.copytree(tiny_lm["fp32"], out / "fp32")
    shutil.copy(mlp, out / "mlp.onnx")

    def rec(rel: str) -> dict[str, str]:
        return {"path": rel, "sha256": sha256_file(out / rel)}

    side = ["model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json"]
    entries = [{"name": "mlp", "format": "onnx", **rec("mlp.onnx")},
               {"name": "fp32", "format": "onnx", "task": "text-generation", **rec("fp32/model.onnx"),
                "external_data": [rec(f"fp32/{f}") for f in side]}]
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": entries}))
    return out


def test_cli_generate_streams_text_prints_json_and_exits_2_on_bad_folders(tiny_lm, tok, mlp, tmp_path):
    with load(tiny_lm["fp32"] / "model.onnx") as sess:
        want = generate(sess, [tok.encode("def f(x):")], max_new_tokens=8)[0]
    runner = CliRunner()
    res = runner.invoke(main, ["generate", str(tiny_lm["fp32"]), "--prompt", "def f(x):", "--max-new-tokens", "8",
                               "--engine", "onnxruntime", "--no-isolate"])
    assert res.exit_code == 0, res.output
    assert res.stdout == tok.decode(want) + "\n"
    out = _artifact_dir(tiny_lm, mlp, tmp_path / "out")
    res = runner.invoke(main, ["generate", str(out), "--prompt", "def f(x):", "--max-new-tokens", "8", "--json"])
    assert res.exit_code == 0, res.output  # the text-generation entry, isolated load, engine auto
    got = json.loads(res.stdout)
    assert got["tokens"] == want.tolist() and got["text"] == tok.decode(want)
    assert got["ttft_ms"] > 0 and got["tokens_per_s"] > 0 and got["model"].endswith("fp32/model.onnx")
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("model.onnx", "model.onnx.data", "genai_config.json"):
        shutil.copy(tiny_lm["fp32"] / f, bare / f)
    for args, message in (([str(bare)], "has no tokenizer"), ([str(tmp_path / "nothing")], "does not exist"),
                          ([str(out), "--artifact", "mlp"], "KV-cache layout"),
                          ([str(tiny_lm["fp32"]), "--max-new-tokens", "-1"], "max_new_tokens")):
        res = runner.invoke(main, ["generate", *args, "--prompt", "hello", "--no-isolate"])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output


def test_generation_imports_no_torch(tiny_lm):
    code = ("import sys\n"
            "import edgesdk.runtimes.generation as g\n"
            "from edgesdk.runtimes import load\n"
            "from edgesdk.runtimes.tokenizer import Tokenizer\n"
            f"folder = {str(tiny_lm['int4'])!r}\n"
            "tok = Tokenizer.from_dir(folder)\n"
            "with load(folder + '/model.onnx') as s:\n"
            "    for engine in ('onnxruntime', 'genai'):\n"
            "        assert g.generate(s, [tok.encode('x = 1')], max_new_tokens=4, engine=engine).shape[0] == 1\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_auto_falls_back_to_the_plain_loop_where_genai_cannot_load_the_folder(tiny_lm, tmp_path, caplog):
    """A folder whose genai_config names a model type onnxruntime-genai does not know (as the torch-export route
    writes for architectures outside its list): "auto" runs edgesdk's loop and says why; asking for genai fails
    clearly; closing the session frees the genai model kept for it."""
    import logging

    from edgesdk.runtimes import generation
    from edgesdk.runtimes.generation import resolve_engine

    folder = tmp_path / "unknown-type"
    shutil.copytree(tiny_lm["fp32"], folder)
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["type"] = "no-such-architecture"
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    with load(folder / "model.onnx") as sess:
        with caplog.at_level(logging.WARNING):
            assert resolve_engine(sess, "auto") == "onnxruntime"
        assert any("using edgesdk's loop" in r.message for r in caplog.records)
        with pytest.raises(ArtifactError, match="onnxruntime-genai cannot load"):
            generate(sess, [[5, 6, 7]], max_new_tokens=2, engine="genai")
        assert resolve_engine(sess, "auto", eos_token_id=()) == "onnxruntime"  # never-stop runs are the loop's
    with load(tiny_lm["fp32"] / "model.onnx") as good:
        assert resolve_engine(good, "auto") == "genai" and good in generation._GENAI_MODELS
    assert good not in generation._GENAI_MODELS  # close() released onnxruntime-genai's copy of the weights
