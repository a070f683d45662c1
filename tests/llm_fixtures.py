"""Tiny causal LMs for tests, made offline in seconds: a Hugging Face folder (examples/tinylm: a byte-level BPE
tokenizer trained on standard-library docstrings, random llama weights) and its KV-cache ONNX folders from
onnxruntime-genai's model builder (the edgesdk LM layout, docs/llm.md).

    hf = make_hf_folder(tmp / "hf")
    onnx = build_onnx(hf, tmp, ("fp32", "int4"))    # {"fp32": tmp/"fp32", "int4": tmp/"int4"}
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
TINYLM = ROOT / "examples" / "tinylm"


def _example(name: str) -> ModuleType:
    """An examples/tinylm module under a private name (other examples have modules of the same names)."""
    spec = importlib.util.spec_from_file_location(f"tinylm_{name}", TINYLM / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_hf_folder(folder: Path, arch: str = "llama", **sizes: Any) -> Path:
    """A Hugging Face causal-LM folder: tokenizer (vocab 1024; bos 0, eos 1, pad 2) and random weights."""
    hf = _example("hf")
    hf.save_tokenizer(folder, _example("corpus").stdlib_text(), vocab_size=1024)
    hf.save_model(folder, arch, **{"hidden": 128, "layers": 2, "heads": 4, "kv_heads": 2, **sizes})
    return folder


def build_onnx(hf: Path, out: Path, precisions: Iterable[str] = ("fp32", "int4")) -> dict[str, Path]:
    """Run onnxruntime-genai's model builder on ``hf`` once per precision into ``out/PRECISION`` (model.onnx,
    model.onnx.data, genai_config.json, tokenizer files).

    In this process, as its CLI runs it (parse_extra_options + create_model) and as edgesdk's compress does: a
    builder subprocess per precision spends most of its time importing torch and transformers again."""
    import contextlib
    import io

    from onnxruntime_genai.models import builder

    made = {}
    for p in precisions:
        args = (None, str(hf), str(out / p), p, "cpu", str(out / f"cache-{p}"))
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                builder.create_model(*args, **builder.parse_extra_options(*args, []))
        except Exception as e:  # the builder raises bare Exception, ValueError, KeyError...
            raise AssertionError(f"model builder failed for {p}: {e!r}\n{log.getvalue()[-3000:]}") from e
        assert (out / p / "model.onnx").is_file(), f"model builder wrote no model for {p}:\n{log.getvalue()[-3000:]}"
        made[p] = out / p
    return made
