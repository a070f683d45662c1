"""The language-model side of ``edgesdk compress``: its flags (``llm_options``), when a MODEL is a causal LM
(``wants_llm``) and the run (``run_llm``: edgesdk.llm.compress_llm, then the report and the exit code).

    edgesdk compress ./my-llm/ --quantize int4,fp32 --int4-block-size 64 --eval-text held_out.txt -o out
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from edgesdk.atomic import json_text
from edgesdk.errors import InputError

from .common import _say

TASKS = ("auto", "text-generation")

_LLM_FLAGS = (
    click.option("--task", type=click.Choice(TASKS), default="auto", show_default=True,
                 help="text-generation compresses MODEL as a causal LM (detected for a Hugging Face folder and for "
                      "a factory returning a transformers *ForCausalLM without --input)."),
    click.option("--int4-block-size", type=click.Choice(["32", "64", "128"]), default="32", show_default=True,
                 help="LLM int4/int8: weights per quantization block (smaller: more accurate, larger file)."),
    click.option("--int4-asym", is_flag=True, help="LLM int4/int8: asymmetric blocks (a zero point each)."),
    click.option("--int4-method", type=click.Choice(["rtn", "hqq"]), default="rtn", show_default=True,
                 help="LLM int4: round-to-nearest, or HQQ (half-quadratic, fits the zero points; asymmetric)."),
    click.option("--eval-text", type=click.Path(dir_okay=False), metavar="FILE",
                 help="LLM parity text (UTF-8): prompts and perplexity (default: built-in English prose)."),
    click.option("--prompt-len", type=int, default=128, show_default=True, help="LLM benchmark prompt tokens."),
    click.option("--gen-len", type=int, default=128, show_default=True, help="LLM benchmark generated tokens."),
    click.option("--tokenizer", "tokenizer_dir", type=click.Path(), metavar="DIR",
                 help="LLM from a factory: the folder holding its tokenizer.json (default: the factory's folder)."),
)

# flags of the model compress path that mean nothing for a language model (name -> its flag)
_NOT_FOR_LLM = {"input_specs": "--input", "example_inputs": "--example-inputs", "calib": "--calib",
                "eval_data": "--eval-data", "prune_text": "--prune", "targets": "--targets",
                "recipe_file": "--recipe", "weights": "--weights", "metric": "--metric",
                "unsafe_unpickle_model": "--unsafe-unpickle-model", "preprocess_text": "--preprocess"}


def llm_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the LLM flags to the compress command."""
    for flag in reversed(_LLM_FLAGS):
        fn = flag(fn)
    return fn


def wants_llm(model: str, o: dict[str, Any]) -> tuple[bool, Any]:
    """(compress ``model`` as a causal LM?, the model when it had to be built to tell). A folder or
    ``--task text-generation`` is one; a factory given without --input/--example-inputs is one when it
    returns a transformers causal LM (then built here, once). ``--quantize int4`` or a comma list on anything
    else is an InputError."""
    if o["task"] == "text-generation" or Path(model).is_dir():
        return True, None
    built = None
    if not o["input_specs"] and not o["example_inputs"] and not o["dry_run"] and ":" in model:
        from edgesdk.compress.llm.intake import is_causal_lm
        from edgesdk.intake import build_model

        built = build_model(model)
        if is_causal_lm(built):
            return True, built
    q = o["quantize"] or ""
    if "int4" in q or "," in q or q == "fp32":
        what = type(built).__name__ if built is not None else f"{model} with --input"
        raise InputError(f"--quantize {q} is weight-only quantization of a causal language model's Linear/MatMul "
                         "layers", expected="a Hugging Face LM folder, or --task text-generation with a factory "
                                            "returning a transformers causal LM",
                         found=f"{what}: not compressed as a language model",
                         hint="for other models use --quantize int8, int8-dynamic, fp16 or bf16")
    return False, None


def _llm_flags_misused(o: dict[str, Any]) -> None:
    given = [flag for key, flag in _NOT_FOR_LLM.items() if o.get(key)]
    if given:
        raise InputError(f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not apply to a language model",
                         expected="for LLMs: --quantize fp32|int4|int8 (comma list), --int4-block-size, --int4-asym, "
                                  "--int4-method, --eval-text, --prompt-len, --gen-len, --tokenizer, --threads, "
                                  "--no-benchmark, --allow-mismatch, -o", found=" ".join(given),
                         hint="drop them; the LLM artifacts are ONNX with a KV cache, checked on --eval-text")


def _options(o: dict[str, Any]) -> Any:
    from edgesdk.llm import LLMOptions, parse_precisions

    return LLMOptions(precisions=parse_precisions(o["quantize"]), int4_block_size=int(o["int4_block_size"]),
                      int4_asym=o["int4_asym"], int4_method=o["int4_method"], eval_text=o["eval_text"],
                      prompt_len=o["prompt_len"], gen_len=o["gen_len"], tokenizer=o["tokenizer_dir"],
                      threads=o["threads"], benchmark=not o["no_benchmark"], allow_mismatch=o["allow_mismatch"])


def run_llm(ctx: click.Context, model: str, o: dict[str, Any], built: Any) -> None:
    """Compress the causal LM ``model``: print the report; exit 3 when artifacts kept by --allow-mismatch fail."""
    _llm_flags_misused(o)
    options = _options(o)
    for p in options.precisions:
        options.quant_for(p)  # the flag errors, before anything is loaded
    if o["dry_run"]:
        click.echo(json.dumps({"model": model, "task": "text-generation", "out": o["out_dir"],
                               "llm": options.to_dict()}, indent=2))
        return
    from edgesdk.llm import compress_llm

    t0 = time.perf_counter()
    result = compress_llm(model, o["out_dir"], options, built=built, progress=_say(ctx))
    click.echo(json_text(result.report) if o["as_json"] else result.markdown)
    if not o["as_json"] and not ctx.obj.get("quiet"):
        files = sorted(p.name for p in Path(result.out_dir).iterdir())
        click.echo(f"wrote {result.out_dir} ({', '.join(files)}) in {time.perf_counter() - t0:.1f} s")
    if not result.passed:
        click.secho("warning: some artifacts failed the LLM parity checks and were kept because of "
                    "--allow-mismatch", fg="yellow", err=True)
        sys.exit(3)
