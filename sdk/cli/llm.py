"""Language-model commands: ``generate`` (no torch needed)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from edgesdk.atomic import json_text
from edgesdk.errors import ArtifactError, InputError

from .common import _NO_ISOLATE_HELP

_LM_DIR = ("a language-model folder (model.onnx, tokenizer.json) or an artifact directory of `edgesdk compress` "
           "with a text-generation artifact")


def _lm_artifact(root: Path, artifact: str | None) -> str | None:
    """The manifest entry to run: ``artifact`` when given (its layout is checked once loaded), else the first
    text-generation entry."""
    from edgesdk.manifest import read_manifest

    if artifact is not None:
        return artifact
    entries = [e for e in read_manifest(root)["artifacts"] if isinstance(e, dict)]
    for e in entries:
        if e.get("task") == "text-generation":
            return e.get("name")
    raise ArtifactError(f"{root} holds no language model", expected="a manifest entry with task text-generation",
                        found="artifacts: " + (", ".join(f"{e.get('name')} ({e.get('task') or e.get('format')})"
                                                         for e in entries) or "none"),
                        hint="pass the directory of a compressed language model, or --artifact NAME")


def _open_lm(path: str, artifact: str | None, **load_options: Any) -> Any:
    """Load the language model at ``path`` (a folder, a model file in one, or an artifact directory, whose
    files the manifest vouches for) and check that it is in the edgesdk LM layout."""
    from edgesdk.runtimes import load
    from edgesdk.runtimes.generation import kv_layout

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist", expected=_LM_DIR)
    if p.is_dir() and (p / "manifest.json").is_file():
        sess = load(p, artifact=_lm_artifact(p, artifact), **load_options)
    elif p.is_dir():
        if not (p / "model.onnx").is_file():
            raise ArtifactError(f"{p} holds neither manifest.json nor model.onnx", expected=_LM_DIR,
                                found=", ".join(sorted(f.name for f in p.iterdir())[:12]) or "an empty folder")
        sess = load(p / "model.onnx", **load_options)
    else:
        sess = load(p, **load_options)
    try:
        kv_layout(sess)
    except Exception:
        sess.close()
        raise
    return sess


@click.command("generate")
@click.argument("path", type=click.Path())
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--artifact", help="The manifest entry to run (default: the first text-generation one).")
@click.option("--do-sample", is_flag=True, help="Sample instead of greedy decoding.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample among the k likeliest (0: all).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling mass (1: all).")
@click.option("--seed", type=int, help="Seed of the sampler (reproducible runs).")
@click.option("--engine", type=click.Choice(["auto", "onnxruntime", "genai"]), default="auto", show_default=True,
              help="auto: onnxruntime-genai where it is installed and the folder has genai_config.json, else "
                   "edgesdk's loop on onnxruntime.")
@click.option("--threads", type=int, help="Intra-op threads of the onnxruntime loop.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto (the onnxruntime loop).")
@click.option("--no-isolate", is_flag=True, help=_NO_ISOLATE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print {text, tokens, ttft_ms, tokens_per_s, ...} at the end "
              "instead of streaming the text.")
@click.pass_context
def generate(ctx: click.Context, path: str, prompt: str, max_new_tokens: int, artifact: str | None,
             do_sample: bool, temperature: float, top_k: int, top_p: float, seed: int | None, engine: str,
             threads: int | None, device: str, no_isolate: bool, as_json: bool) -> None:
    """Continue PROMPT with the language model at PATH, streaming the text as the tokens arrive.

    PATH is a language-model folder or an artifact directory (its files checked against the manifest).
    ``ttft_ms`` is the time to the first token; ``tokens_per_s`` the decode rate after it.
    """
    from edgesdk.runtimes.generation import generate as run_generate
    from edgesdk.runtimes.generation import resolve_engine
    from edgesdk.runtimes.tokenizer import Tokenizer

    sess = _open_lm(path, artifact, threads=threads, device=device, isolate=not no_isolate)
    try:
        tok = Tokenizer.from_dir(sess.path.parent)
        ids = tok.encode(prompt)
        if not ids:
            raise InputError("the prompt gives no tokens", found=repr(prompt), hint="pass some text with --prompt")
        if engine == "auto" and (threads is not None or device not in ("auto", "cpu")):
            engine = "onnxruntime"  # onnxruntime-genai takes its threads and device from genai_config.json
        if engine != "onnxruntime":
            sess.close()  # onnxruntime-genai loads the folder itself: free this copy of the weights first
        engine = resolve_engine(sess, engine)
        if engine == "onnxruntime":
            sess.load()  # again, when auto found that onnxruntime-genai cannot run this folder (no-op if open)
        if not ctx.find_root().obj.get("quiet"):
            click.echo(f"{sess.path} ({engine})", err=True)
        text, marks = tok.stream(), []

        def show(step: Any) -> None:
            marks.append(time.perf_counter_ns())
            if not as_json:
                click.echo(text.push(int(step[0])), nl=False)
                sys.stdout.flush()

        t0 = time.perf_counter_ns()
        out = run_generate(sess, [ids], max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed, stream=show, engine=engine)[0].tolist()
        t1 = time.perf_counter_ns()
    finally:
        sess.close()
    n = len(out)
    rate = (n - 1) / ((marks[-1] - marks[0]) / 1e9) if n > 1 and marks[-1] > marks[0] else (
        n / ((t1 - t0) / 1e9) if n else None)
    if as_json:
        click.echo(json_text({"text": tok.decode(out), "tokens": out, "ttft_ms": (marks[0] - t0) / 1e6 if marks
                              else None, "tokens_per_s": rate, "prompt_tokens": len(ids), "engine": engine,
                              "model": str(sess.path)}))
    else:
        click.echo(text.flush())
