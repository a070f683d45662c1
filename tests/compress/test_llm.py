"""`edgesdk compress` of causal language models: Hugging Face folders (and a factory) in, KV-cache ONNX artifact
directories out, by onnxruntime-genai's builder (llama, qwen2, phi3) and by torch export (GPT-2), with int4/int8
weight-only artifacts, parity on real text, tokens/s, and clear errors that leave nothing behind.

Real runs on tiny models made offline (examples/tinylm): vocab 1024, 2 layers. The int4 test model is trained for
a few seconds first: on random weights every logit is a near tie, which no quantized model can keep.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgesdk.cli import main
from tests.llm_fixtures import _example

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("transformers")


def _compress(*args: object) -> object:
    return CliRunner().invoke(main, ["compress", *map(str, args)])


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """One byte-level BPE tokenizer (vocab 1024) on the standard library's docstrings, shared by every model."""
    folder = tmp_path_factory.mktemp("tokenizer")
    _example("hf").save_tokenizer(folder, _example("corpus").stdlib_text(), vocab_size=1024)
    return folder


def _folder(root: Path, tokenizer_dir: Path, arch: str, train_steps: int = 0, **sizes: object) -> Path:
    """A Hugging Face folder of ``arch`` next to the shared tokenizer, random weights (seed 0), optionally
    trained ``train_steps`` steps on the corpus so its next-token choices are clear."""
    folder = root / arch
    shutil.copytree(tokenizer_dir, folder)
    hf = _example("hf")
    model = hf.save_model(folder, arch, **{"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, **sizes})
    if train_steps:
        hf.save_model(folder, arch, model=_train(model, folder, train_steps))
    return folder


def _train(model: object, folder: Path, steps: int) -> object:
    import torch
    from transformers import AutoTokenizer

    corpus = _example("corpus")
    text, _ = corpus.split(corpus.stdlib_text())
    ids = torch.tensor(AutoTokenizer.from_pretrained(str(folder))(text, add_special_tokens=False)["input_ids"])
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (16,), generator=gen)
        x = torch.stack([ids[i:i + 64] for i in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _entry(out: Path, name: str) -> dict:
    return next(a for a in _manifest(out)["artifacts"] if a["name"] == name)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, tokenizer_dir):
    """A trained llama folder compressed to fp32 + int4 with the CLI (builder route)."""
    root = tmp_path_factory.mktemp("llama")
    folder = _folder(root, tokenizer_dir, "llama", train_steps=120, hidden=128)
    out = root / "out"
    res = _compress(folder, "--quantize", "int4", "--prompt-len", "32", "--gen-len", "16", "--threads", "2",
                    "-o", out)
    assert res.exit_code == 0, res.output
    return folder, out, res.output


def test_llama_folder_becomes_fp32_and_int4_artifacts_that_verify_and_load(llama_run):
    from edgesdk.manifest import verify_entry
    from edgesdk.runtimes import load

    _, out, output = llama_run
    manifest = _manifest(out)
    assert manifest["task"] == "text-generation" and [a["name"] for a in manifest["artifacts"]] == ["fp32", "int4"]
    for entry in manifest["artifacts"]:
        name = entry["name"]
        assert entry["path"] == f"{name}/model.onnx" and entry["task"] == "text-generation"
        assert verify_entry(out, entry) == out / name / "model.onnx"
        listed = {x["path"] for x in entry["external_data"]}
        assert {f"{name}/{f}" for f in ("model.onnx.data", "tokenizer.json", "tokenizer_config.json",
                                        "generation_config.json", "genai_config.json")} <= listed
        assert entry["meta"]["route"] == "onnxruntime-genai builder"
        assert entry["meta"]["ops"]["GroupQueryAttention"] == 2
        with load(out, artifact=name) as sess:
            assert sess.generate(np.array([[5, 6, 7]]), max_new_tokens=4).shape == (1, 4)
    assert "MatMul" not in _entry(out, "int4")["meta"]["ops"] and _entry(out, "int4")["meta"]["ops"]["MatMulNBits"]
    assert "int4" in output and "decode tok/s" in output and (out / "report.md").is_file()


def test_int4_is_smaller_and_records_its_quantization(llama_run):
    _, out, _ = llama_run
    fp32, int4 = _entry(out, "fp32"), _entry(out, "int4")
    ratio = int4["weights_bytes"] / fp32["weights_bytes"]
    assert ratio <= 0.40, ratio  # measured 0.30: the fp32 embedding (1024 x 128) stays, as on the builder
    q = int4["meta"]["quantization"]
    assert (q["bits"], q["block_size"], q["symmetric"], q["method"]) == (4, 32, True, "rtn")
    assert q["graph"]["lm_head"] == "int4" and q["graph"]["embedding"] == "fp32 (Gather)"
    assert q["graph"]["float_matmuls"] == 0 and q["graph"]["accuracy_level"] == [4]


def test_parity_numbers_are_recorded_and_pass(llama_run):
    _, out, _ = llama_run
    fp32, int4 = _entry(out, "fp32")["parity"], _entry(out, "int4")["parity"]
    assert fp32["passed"] and int4["passed"], (fp32["failures"], int4["failures"])
    # within ties: a trained CPU model may hold a near tie that 1e-6 of float noise flips on another machine
    assert fp32["greedy"]["agreement_within_ties"] == 1.0
    assert fp32["prefill"]["cosine"] >= 0.9999 and abs(fp32["perplexity"]["ratio"] - 1) < 1e-3
    assert int4["prefill"]["cosine"] >= int4["tolerance"]["logits"]["min_cosine"]
    assert int4["perplexity"]["ratio"] <= int4["tolerance"]["max_ppl_ratio"]
    assert int4["perplexity"]["pytorch"] < 300  # trained: far below the vocabulary size of an untrained model
    for name in ("fp32", "int4"):
        bench = _entry(out, name)["benchmark"]
        assert bench["decode_tokens_per_s"] > 0 and bench["prompt_len"] == 32 and bench["gen_len"] == 16


def test_a_failing_artifact_fails_the_run_and_writes_nothing(llama_run, tmp_path, monkeypatch):
    from edgesdk.compress.llm import parity

    folder, _, _ = llama_run
    strict = parity.LLMTolerance(parity.Tolerance(None, None, 0.99999), None, 0.999, 1.0001)
    monkeypatch.setitem(parity.LLM_TOLERANCES, "int4", strict)  # a floor no int4 model meets
    out = tmp_path / "out"
    res = _compress(folder, "--quantize", "int4", "--no-benchmark", "-o", out)
    assert res.exit_code == 3, res.output
    assert "int4" in res.output and "nothing was written" in res.output and not out.exists()
    assert not list(tmp_path.iterdir())  # no staging leftovers either
    res = _compress(folder, "--quantize", "int4", "--no-benchmark", "--allow-mismatch", "-o", out)
    assert res.exit_code == 3 and _entry(out, "int4")["status"] == "parity_failed"


def test_fp16_from_the_builder_holds_parity_and_decodes_through_its_cache(llama_run, tmp_path):
    """fp16 weights, activations and KV cache: parity runs the cache decode loop (the generate that onnxruntime's
    CPU buffer reuse broke on the first step after a prefill), and the session says reuse is off."""
    from edgesdk.runtimes import load

    folder, _, _ = llama_run
    out = tmp_path / "out"
    res = _compress(folder, "--quantize", "fp16", "--no-benchmark", "-o", out)
    assert res.exit_code == 0, res.output
    fp16 = _entry(out, "fp16")
    assert fp16["meta"]["route"] == "onnxruntime-genai builder" and fp16["parent"] == "fp32"
    ins = {s["name"]: s["dtype"] for s in fp16["meta"]["io"]["inputs"]}
    assert ins["past_key_values.0.key"] == "float16" and "position_ids" in ins
    p = fp16["parity"]
    assert p["passed"], p["failures"]
    assert p["prefill"]["cosine"] >= 0.9999 and p["greedy"]["stepwise_agreement"] >= 0.95, p
    assert fp16["weights_bytes"] < 0.6 * _entry(out, "fp32")["weights_bytes"]
    with load(out, artifact="fp16") as sess:
        assert any("buffer reuse is off" in n for n in sess.notes)
        ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
        assert sess.generate(ids, max_new_tokens=6).shape == (2, 6)  # several decode steps through the cache
        from edgesdk.errors import InputError
        from edgesdk.runtimes.generation import resolve_engine

        assert resolve_engine(sess, "auto") == "onnxruntime"  # genai would crash on it (no way to turn reuse off)
        with pytest.raises(InputError, match="fp16 model on the CPU crashes onnxruntime-genai"):
            resolve_engine(sess, "genai")
    res = CliRunner().invoke(main, ["generate", str(out), "--artifact", "fp16", "--prompt", "def", "--max-new-tokens",
                                    "4"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output


def test_an_artifact_slower_than_fp32_is_said_plainly():
    from types import SimpleNamespace

    from edgesdk.llm import _slower_than_fp32

    def art(precision: str, rate: float | None) -> SimpleNamespace:
        return SimpleNamespace(name=precision, precision=precision, meta={"benchmark": {"decode_tokens_per_s": rate}})

    said = _slower_than_fp32([art("fp32", 100.0), art("fp16", 54.0), art("int4", 120.0), art("int8", None)])
    assert len(said) == 1 and said[0].startswith("fp16 decodes at 54.0 tokens/s, 0.54x the fp32 artifact's 100.0")
    assert "no fp16 arithmetic" in said[0]
    assert _slower_than_fp32([art("fp32", 100.0), art("int4", 80.0)])[0].endswith("smaller, not faster here")


def test_fp16_of_a_torch_export_model_is_refused_before_anything_is_exported(tmp_path, tokenizer_dir):
    folder = _folder(tmp_path, tokenizer_dir, "gpt2")
    out = tmp_path / "out"
    res = _compress(folder, "--quantize", "fp16", "-o", out)
    assert res.exit_code == 2 and "fp16 comes from onnxruntime-genai's builder" in res.output, res.output
    assert "exporting" not in res.output and "Traceback" not in res.output and not out.exists()


def test_gpt2_goes_through_torch_export_in_the_same_layout(tmp_path, tokenizer_dir):
    folder = _folder(tmp_path, tokenizer_dir, "gpt2")
    out = tmp_path / "out"
    res = _compress(folder, "--quantize", "int4", "--prompt-len", "16", "--gen-len", "8", "-o", out)
    assert res.exit_code == 0, res.output
    fp32, int4 = _entry(out, "fp32"), _entry(out, "int4")
    assert fp32["meta"]["route"] == int4["meta"]["route"] == "torch export"
    ins = {s["name"]: s["shape"] for s in fp32["meta"]["io"]["inputs"]}
    outs = {s["name"]: s["shape"] for s in fp32["meta"]["io"]["outputs"]}
    assert ins["input_ids"] == ["batch_size", "sequence_length"]
    assert ins["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert ins["past_key_values.1.value"] == ["batch_size", 4, "past_sequence_length", 16]
    assert outs["logits"] == ["batch_size", "sequence_length", 1024]
    assert outs["present.0.key"] == ["batch_size", 4, "total_sequence_length", 16]
    assert set(ins) == {"input_ids", "attention_mask", *(f"past_key_values.{i}.{k}" for i in (0, 1)
                                                         for k in ("key", "value"))}
    assert fp32["parity"]["passed"] and fp32["parity"]["greedy"]["agreement_within_ties"] == 1.0
    assert fp32["parity"]["prefill"]["max_abs_err"] < 1e-4
    # Conv1D exports as Gemm, the tied LM head as MatMul(Transpose(wte)): both become MatMulNBits
    assert "Gemm" not in int4["meta"]["ops"] and int4["meta"]["quantization"]["graph"]["lm_head"] == "int4"
    assert int4["meta"]["quantization"]["graph"]["matmulnbits"] == 9 and int4["parity"]["passed"]
    assert (out / "fp32" / "genai_config.json").is_file() and (out / "int4" / "tokenizer.json").is_file()


@pytest.mark.parametrize("arch,extra", [("qwen2", {}), ("phi3", {"original_max_position_embeddings": 512})])
def test_qwen2_and_phi3_go_through_the_builder(tmp_path, tokenizer_dir, arch, extra):
    from edgesdk.llm import LLMOptions, compress_llm

    folder = _folder(tmp_path, tokenizer_dir, arch, **extra)
    precisions = ("int8",) if arch == "qwen2" else ()
    result = compress_llm(str(folder), tmp_path / "out", LLMOptions(precisions=precisions, benchmark=False))
    assert [a["name"] for a in result.manifest["artifacts"]] == ["fp32", *precisions]
    for entry in result.manifest["artifacts"]:
        assert entry["meta"]["route"] == "onnxruntime-genai builder" and not result.manifest["warnings"]
        assert entry["parity"]["passed"], entry["parity"]["failures"]
        assert entry["meta"]["ops"]["GroupQueryAttention"] == 2
    assert result.manifest["artifacts"][0]["parity"]["greedy"]["agreement_within_ties"] == 1.0
    if precisions:
        assert result.manifest["artifacts"][1]["meta"]["quantization"]["graph"]["bits"] == [8]


def test_a_model_the_builder_would_miswire_goes_through_torch_export(tmp_path, tokenizer_dir):
    """hidden 256: the MLP's 1024 outputs equal the vocabulary, which the builder takes for the LM head (one
    layer is enough to hold such an MLP, and torch export of a 256-wide model is the slow part)."""
    from edgesdk.llm import LLMOptions, compress_llm

    folder = _folder(tmp_path, tokenizer_dir, "llama", hidden=256, layers=1)
    result = compress_llm(str(folder), tmp_path / "out", LLMOptions(benchmark=False))
    (entry,) = result.manifest["artifacts"]
    assert entry["meta"]["route"] == "torch export" and "mistakes for the LM head" in result.manifest["warnings"][0]
    assert entry["parity"]["passed"] and entry["parity"]["prefill"]["cosine"] > 0.9999


def test_a_factory_returning_a_causal_lm_is_detected(tmp_path, tokenizer_dir):
    shutil.copytree(tokenizer_dir, tmp_path / "lm")
    factory = tmp_path / "lm" / "model.py"
    factory.write_text(
        "import sys, torch, transformers\n"
        f"sys.path.insert(0, {str(_example('hf').__file__.rsplit('/', 1)[0])!r})\n"
        "from hf import config\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return transformers.AutoModelForCausalLM.from_config(config('llama', 1024, hidden=64))\n")
    out = tmp_path / "out"
    res = _compress(f"{factory}:build", "--no-benchmark", "-o", out)  # no --input: a causal LM is detected
    assert res.exit_code == 0, res.output
    entry = _entry(out, "fp32")
    assert entry["meta"]["route"] == "onnxruntime-genai builder" and entry["parity"]["passed"]
    assert _manifest(out)["model"]["source"] == f"factory {factory}:build"


def test_a_folder_without_tokenizer_or_config_is_refused_and_nothing_written(tmp_path, tokenizer_dir):
    folder = _folder(tmp_path, tokenizer_dir, "llama")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).unlink()
    res = _compress(folder, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "has no tokenizer" in res.output and "tokenizer.save_pretrained" in res.output
    (folder / "config.json").unlink()
    res = _compress(folder, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "without config.json" in res.output
    assert not (tmp_path / "out").exists()


def test_int4_on_a_model_that_is_no_language_model_is_a_clear_error(tmp_path):
    res = _compress("tests/models.py:Residual", "--input", "x:1x3x16x16", "--quantize", "int4", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "causal language model's Linear/MatMul" in res.output and "int8" in res.output
    res = _compress("tests/models.py:Residual", "--task", "text-generation", "--quantize", "int4", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "not a transformers causal LM" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,needle", [
    (["--quantize", "int3"], "not a precision for language models"),
    (["--int4-method", "hqq", "--quantize", "int8"], "hqq applies to int4 only"),
    (["--targets", "tflite"], "--targets does not apply to a language model"),
])
def test_bad_llm_flags_are_refused_before_loading(tmp_path, args, needle):
    (tmp_path / "m").mkdir()
    res = _compress(tmp_path / "m", *args, "-o", tmp_path / "o")
    assert res.exit_code == 2 and needle in res.output, res.output


def test_weight_only_quantization_of_a_graph_without_matmul_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgesdk.compress.llm.quantize import WeightOnly, quantize_onnx
    from edgesdk.errors import InputError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    with pytest.raises(InputError, match="no Linear/MatMul layer to quantize"):
        quantize_onnx(tmp_path / "relu.onnx", tmp_path / "q" / "model.onnx", WeightOnly(bits=4).checked())
    assert not (tmp_path / "q").exists()


def test_benchmark_of_an_llm_directory_reports_tokens_per_second(llama_run):
    """`edgesdk benchmark DIR` times text-generation entries by generating, at compress's lengths."""
    from edgesdk.cli import main

    _, out, _ = llama_run
    res = CliRunner().invoke(main, ["benchmark", str(out), "--iterations", "1", "--json", "--no-isolate"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert {r["artifact"] for r in rows} == {"fp32", "int4"}
    for r in rows:
        assert r["task"] == "text-generation" and (r["prompt_len"], r["gen_len"]) == (32, 16)
        assert r["decode_tokens_per_s"] > 0 and r["ttft_ms"] > 0 and r["parity_passed"] is True
    report = json.loads(res.stdout)
    from edgesdk.report import to_markdown
    from edgesdk.report.html_view import to_html

    md, html = to_markdown(report), to_html(report)
    assert "## Language models (timed by generating)" in md and "decode tok/s" in md
    assert "| fp32 | onnxruntime | onnx |" not in md  # no empty per-batch latency rows for language models
    assert "Language models (timed by generating)" in html and "decode tok/s" in html
