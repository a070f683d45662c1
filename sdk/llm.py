"""The LLM compress pipeline (``edgesdk compress ./my-llm/``): intake -> one artifact folder per precision
(KV-cache ONNX by the builder or torch export, weight-only int4/int8) -> parity against PyTorch -> tokens/s ->
manifest.json, report.json and report.md, written as a whole (edgesdk.atomic: a failing artifact leaves
nothing behind, and the manifest comes last, vouching for every file with its sha256).

The directory ``runtimes.load(OUT, artifact="int4")`` opens::

    OUT/manifest.json  report.json  report.md
    OUT/fp32/  model.onnx  model.onnx.data  tokenizer.json  tokenizer_config.json  generation_config.json
               genai_config.json
    OUT/int4/  ... the same files

Example::

    result = compress_llm("./my-llm", "out", LLMOptions(precisions=("fp32", "int4")))
    result.manifest["artifacts"][1]["parity"]["perplexity"]["ratio"]
"""
from __future__ import annotations

import datetime as _dt
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .atomic import sha256_file, staged_output_dir, write_json, write_text
from .errors import ExportError, InputError, ParityError
from .manifest import SCHEMA_VERSION
from .version import __version__

log = logging.getLogger(__name__)
TASK = "text-generation"


@dataclass(frozen=True)
class LLMOptions:
    """What the CLI's LLM flags set: the precisions (fp32 always, first: the reference artifact), the int4
    choices, the eval text, the benchmark's prompt and generation lengths."""

    precisions: tuple[str, ...] = ("fp32",)
    int4_block_size: int = 32
    int4_asym: bool = False
    int4_method: str = "rtn"
    eval_text: str | None = None
    prompt_len: int = 128
    gen_len: int = 128
    tokenizer: str | None = None
    threads: int | None = None
    benchmark: bool = True
    allow_mismatch: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(["fp32", *self.precisions])))  # fp32 first
        if self.int4_method != "rtn" and "int4" not in self.precisions:
            raise InputError(f"--int4-method {self.int4_method} applies to int4 only",
                             found=f"--quantize {','.join(self.precisions)}", hint="add int4 to --quantize")

    def quant_for(self, precision: str) -> Any:
        """The WeightOnly choice for ``int4``/``int8`` (None for fp32 and fp16)."""
        from edgesdk.compress.llm.quantize import WEIGHT_ONLY, WeightOnly

        if precision not in WEIGHT_ONLY:
            return None
        bits = int(precision[3:])
        return WeightOnly(bits=bits, block_size=self.int4_block_size, symmetric=not self.int4_asym,
                          method=self.int4_method if bits == 4 else "rtn").checked()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_precisions(text: str | None) -> tuple[str, ...]:
    """``--quantize int4,fp32`` -> ("fp32", "int4"): known names, no repeats, fp32 added first."""
    from edgesdk.compress.llm.quantize import PRECISIONS

    names = [t.strip().lower() for t in (text or "").split(",") if t.strip()]
    bad = [n for n in names if n not in PRECISIONS]
    if bad:
        raise InputError(f"--quantize {text!r} is not a precision for language models",
                         expected=f"a comma list of {', '.join(PRECISIONS)} (e.g. int4,fp32)", found=", ".join(bad),
                         hint="int4 and int8 are weight-only (MatMulNBits), fp16 is half precision throughout; fp32 is always "
                              "made as the reference")
    return tuple(dict.fromkeys(["fp32", *names]))


@dataclass
class LLMResult:
    out_dir: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    markdown: str

    @property
    def passed(self) -> bool:
        return all((a.get("parity") or {}).get("passed") for a in self.manifest["artifacts"])


def compress_llm(model: str, out_dir: str | Path, options: LLMOptions, *, built: Any = None,
                 progress: Callable[[str], None] | None = None) -> LLMResult:
    """Compress the causal LM ``model`` (a folder, or a factory; ``built`` when the caller called it already)
    into ``out_dir``. Raises ParityError (nothing written) when an artifact misses its floors, unless
    ``options.allow_mismatch``."""
    from edgesdk.compress.llm.intake import open_source
    from edgesdk.compress.llm.parity import Plan, eval_set, torch_reference

    say = progress or (lambda _m: None)
    for p in options.precisions:
        options.quant_for(p)  # flag errors before anything is loaded
    say(f"loading {model}")
    with open_source(model, tokenizer=options.tokenizer, model=built) as src, \
            tempfile.TemporaryDirectory(prefix="edgesdk-llm-work-") as work:
        _check_lengths(src, options)
        plan = Plan().fitted(_context(src))
        evals = eval_set(src.tokenizer, options.eval_text, plan)
        say("running the PyTorch reference (prefill logits, greedy tokens, perplexity)")
        ref = torch_reference(src.model, evals, plan)
        with staged_output_dir(out_dir) as stage:
            arts, warnings = _export_all(src, options, stage, Path(work), say)
            _judge(arts, src, ref, options, say)
            if options.benchmark:
                _benchmark(arts, options, say)
                warnings += _slower_than_fp32(arts)
            manifest, report, md = _write(stage, src, arts, evals, plan, options, warnings)
    return LLMResult(Path(out_dir), manifest, report, md)


def _context(src: Any) -> int | None:
    """The model's context in tokens (its position table or rotary cache), when its config says."""
    cfg = src.model.config
    return next((getattr(cfg, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                 if getattr(cfg, k, None)), None)


def _check_lengths(src: Any, options: LLMOptions) -> None:
    """--prompt-len + --gen-len must fit the model's context (its position table or rotary cache)."""
    context = _context(src)
    if options.prompt_len < 1 or options.gen_len < 1:
        raise InputError("--prompt-len and --gen-len must be positive",
                         found=f"{options.prompt_len} and {options.gen_len}")
    if context and options.prompt_len + options.gen_len > context:
        raise InputError(f"--prompt-len {options.prompt_len} + --gen-len {options.gen_len} exceeds the model's "
                         f"context of {context} tokens", expected=f"a sum of at most {context}",
                         hint="shorten the benchmark's prompt or generation")


def _export_all(src: Any, options: LLMOptions, stage: Path, work: Path,
                say: Callable[[str], None]) -> tuple[list[Any], list[str]]:
    """One artifact per precision, fp32 first; the builder route falls back to torch export (with a warning)
    when the builder cannot build this model's config."""
    from edgesdk.compress.llm.export import ROUTE_TORCH, BuilderFailed, export_artifact, refuse_unmade, route_for
    from edgesdk.pipeline import Artifact

    (route, why), warnings, arts = route_for(src), [], []
    if why:
        warnings.append(f"{src.architecture} is exported with torch export: {why}")
    for precision in options.precisions:  # refused before any export runs
        refuse_unmade(src, precision, route)
    fp32 = None
    for precision in options.precisions:
        quant = options.quant_for(precision)
        say(f"exporting {precision} ({route})")
        try:
            made = export_artifact(src, precision, quant, stage / precision, work, route, fp32)
        except BuilderFailed as e:
            if precision != "fp32":  # the builder made fp32 but not this: no other route makes it the same way
                raise ExportError(f"onnxruntime-genai's builder could not build the {precision} artifact of "
                                  f"{src.architecture}", found=e.reason,
                                  hint="try another --int4-block-size, --int4-method hqq, or leave it out") from e
            shutil.rmtree(stage / precision, ignore_errors=True)  # whatever the builder left half-written
            warnings.append(f"onnxruntime-genai's builder could not build {src.architecture} ({e.reason}); "
                            "exported with torch export instead")
            log.warning(warnings[-1])
            route = ROUTE_TORCH
            say(f"exporting {precision} ({route})")
            made = export_artifact(src, precision, quant, stage / precision, work, route, fp32)
            made.meta["builder_failed"] = e.reason
        fp32 = fp32 or made
        arts.append(Artifact(name=precision, path=made.path, format="onnx", precision=precision,
                             inputs=made.meta["io"]["inputs"], outputs=made.meta["io"]["outputs"], stage="llm",
                             parent=None if precision == "fp32" else "fp32", meta=made.meta))
    return arts, warnings


def _session(path: Path, threads: int | None) -> Any:
    from edgesdk.runtimes import load

    return load(path, backend="onnxruntime", threads=threads)


def _judge(arts: list[Any], src: Any, ref: Any, options: LLMOptions, say: Callable[[str], None]) -> None:
    """Parity of every artifact (``art.parity``); ParityError listing the failures unless allow_mismatch."""
    from edgesdk.compress.llm.parity import LLM_TOLERANCES, check_artifact

    geometry = (src.num_layers, src.kv_heads, src.head_dim)
    failures = []
    for art in arts:
        say(f"checking {art.name} against PyTorch")
        sess = _session(art.path, options.threads)
        try:
            art.parity = check_artifact(sess, ref, LLM_TOLERANCES[art.precision], geometry)
        finally:
            sess.close()
        if not art.parity["passed"]:
            art.status = "parity_failed"
            failures += [f"{art.name}: {f}" for f in art.parity["failures"]]
    if failures and not options.allow_mismatch:
        raise ParityError("LLM artifacts differ from PyTorch beyond tolerance; nothing was written",
                          found="\n            ".join(failures),
                          hint="try a smaller --int4-block-size (32), --int4-method hqq, or int8; check the "
                               "--eval-text is text the model knows; or keep the artifacts anyway with "
                               "--allow-mismatch (they are then marked in the manifest)")


def _benchmark(arts: list[Any], options: LLMOptions, say: Callable[[str], None]) -> None:
    """tokens/s of every artifact (edgesdk.runtimes.generation.benchmark_generate), in ``art.meta``."""
    from edgesdk.runtimes.llm_bench import benchmark_generate

    for art in arts:
        say(f"timing {art.name}: {options.prompt_len} prompt + {options.gen_len} generated tokens")
        sess = _session(art.path, options.threads)
        try:
            art.meta["benchmark"] = benchmark_generate(sess, prompt_len=options.prompt_len,
                                                       gen_len=options.gen_len, batch=1)
        finally:
            sess.close()


def _slower_than_fp32(arts: list[Any]) -> list[str]:
    """A warning for each artifact that decodes slower than the fp32 one on this machine, measured side by side:
    fp16 on a CPU without fp16 arithmetic, int4 with the wrong kernels - smaller is not faster there."""
    def rate(a: Any) -> float | None:
        return (a.meta.get("benchmark") or {}).get("decode_tokens_per_s")

    ref = next((rate(a) for a in arts if a.precision == "fp32"), None)
    said = []
    for a in arts:
        if a.precision != "fp32" and ref and rate(a) and rate(a) < ref:
            said.append(f"{a.name} decodes at {rate(a):.1f} tokens/s, {rate(a) / ref:.2f}x the fp32 artifact's "
                        f"{ref:.1f} on this machine: it is smaller, not faster here"
                        + (" (this CPU has no fp16 arithmetic: onnxruntime converts around the ops it lacks fp16 "
                           "kernels for); ship fp32 or int4 on it, fp16 pays on GPUs and CPUs with fp16 arithmetic"
                           if a.precision == "fp16" else ""))
            log.warning(said[-1])
    return said


def _entry(stage: Path, art: Any) -> dict[str, Any]:
    """The manifest entry of one artifact: the pipeline's entry (model file and weights with sha256) plus
    the folder's tokenizer and config files, the task, parity and benchmark at the top level."""
    entry = art.to_manifest(stage)
    listed = {x["path"] for x in entry.get("external_data", [])} | {entry["path"]}
    for f in sorted(art.path.parent.iterdir()):
        rel = f.relative_to(stage).as_posix()
        if f.is_file() and rel not in listed:
            entry.setdefault("external_data", []).append({"path": rel, "sha256": sha256_file(f),
                                                          "size_bytes": f.stat().st_size})
    meta = dict(entry["meta"])
    entry["benchmark"] = meta.pop("benchmark", None)
    entry["meta"] = meta
    entry["task"] = TASK
    entry["total_size_bytes"] = entry["size_bytes"] + sum(x["size_bytes"] for x in entry["external_data"])
    entry["weights_bytes"] = sum(x["size_bytes"] for x in entry["external_data"] if x["path"].endswith(".data"))
    return entry


def _write(stage: Path, src: Any, arts: list[Any], evals: Any, plan: Any, options: LLMOptions,
           warnings: list[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """report.json, report.md, then manifest.json (last) into the staging dir."""
    from edgesdk.report import build_report
    from edgesdk.runtimes.fingerprint import device_fingerprint

    entries = [_entry(stage, a) for a in arts]
    recipe = {"task": TASK, **options.to_dict(), "parity_plan": plan.to_dict()}
    report = build_report(device=device_fingerprint(), results=[], recipe=recipe, artifacts=entries,
                          baseline={"backend": "torch", "accuracy": None, "metric": None})
    report["warnings"] = warnings
    report["llm"] = {"model": src.describe(), "eval": evals.to_dict()}
    md = llm_markdown(report)
    manifest = {"schema_version": SCHEMA_VERSION, "edgesdk_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "task": TASK,
                "recipe": recipe, "model": src.describe(), "eval": evals.to_dict(), "warnings": warnings,
                "artifacts": entries, "reports": ["report.json", "report.md"]}
    write_json(stage / "report.json", report)
    write_text(stage / "report.md", md)
    write_json(stage / "manifest.json", manifest)  # last: it vouches for the files above
    return manifest, report, md


def _num(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def llm_markdown(report: dict[str, Any]) -> str:
    """report.md of an LLM run: one row per artifact with its route, size, parity and tokens/s."""
    from edgesdk.report import device_summary, fmt_size

    model = report["llm"]["model"]
    lines = ["# edgesdk report: language model", "", f"Model: {model['architecture']} from {model['source']} "
             f"({model['parameters']:,} parameters)", "Device: " + device_summary(report.get("device") or {}),
             f"Eval text: {report['llm']['eval']['source']} ({report['llm']['eval']['tokens']} tokens)", "",
             "| artifact | route | size | parity | prefill cosine | max abs | top-1 | greedy (own run / stepwise) | "
             "perplexity (ONNX / PyTorch) | prefill tok/s | decode tok/s | TTFT ms |", "|" + "---|" * 12]
    for a in report["artifacts"]:
        p, b = a.get("parity") or {}, a.get("benchmark") or {}
        pre, gr, pp = p.get("prefill", {}), p.get("greedy", {}), p.get("perplexity", {})
        lines.append(f"| {a['name']} | {a['meta']['route']} | {fmt_size(a.get('total_size_bytes'))} | "
                     f"{'pass' if p.get('passed') else '**FAIL**'} | {_num(pre.get('cosine'), '.6f')} | "
                     f"{_num(pre.get('max_abs_err'), '.3g')} | {_num(pre.get('top1_agreement'), '.1%')} | "
                     f"{_num(gr.get('agreement'), '.0%')} / {_num(gr.get('stepwise_agreement'), '.0%')} | "
                     f"{_num(pp.get('onnx'), '.4g')} / "
                     f"{_num(pp.get('pytorch'), '.4g')} | {_num(b.get('prefill_tokens_per_s'), '.1f')} | "
                     f"{_num(b.get('decode_tokens_per_s'), '.1f')} | {_num(b.get('ttft_ms'), '.1f')} |")
    lines += [f"- warning: {w}" for w in report.get("warnings") or []]
    return "\n".join(lines) + "\n"
