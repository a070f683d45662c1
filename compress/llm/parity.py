"""LLM parity: each ONNX artifact against the PyTorch model it came from, on real text.

Three measures, each with a floor per precision (``LLM_TOLERANCES``):

- prefill logits: one forward pass over prompts cut from the eval text (empty cache, past length 0), compared
  position by position with edgesdk.parity.compare (max abs, cosine, nrmse, top-1 with the near-tie margin);
- greedy agreement with transformers' ``model.generate(do_sample=False)`` over N tokens: the artifact's own
  run (edgesdk.runtimes.generation.generate, through its KV cache) position by position, and stepwise along
  PyTorch's greedy path, near ties aside (``_greedy``);
- perplexity on the eval text (``--eval-text FILE``, else built-in English prose), ONNX / PyTorch.

Example::

    evals = eval_set(tokenizer, None)
    ref = torch_reference(model, evals, Plan())
    parity = check_artifact(session, ref, LLM_TOLERANCES["int4"], geometry=(layers, kv_heads, head_dim))
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.errors import InputError
from edgesdk.parity import Tolerance, compare


@dataclass(frozen=True)
class LLMTolerance:
    """The floors an LLM artifact must meet: the prefill-logit rule (its ``top1_margin`` also sets the near-tie
    margin of the greedy measures), the greedy agreement of its own run (``agreement_within_ties``) and stepwise,
    and the perplexity ratio (ONNX / PyTorch). None turns a floor off."""

    logits: Tolerance
    min_greedy_agreement: float | None
    min_stepwise_agreement: float | None
    max_ppl_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.to_dict(), "min_greedy_agreement": self.min_greedy_agreement,
                "min_stepwise_agreement": self.min_stepwise_agreement, "max_ppl_ratio": self.max_ppl_ratio}


# Why these numbers (measured on the trained 2-layer test llama; docs/llm.md "Compress" has the table):
# - fp32: the same arithmetic up to fused kernels (measured max abs 3e-6, cosine 1.000000, every greedy token
#   equal): edgesdk.parity's fp32 element rule loosened 10x for the builder's fused attention and norms over a
#   vocabulary-wide output, cosine 0.9999, and the artifact's own greedy run equal to transformers' (near ties of
#   0.01 std aside). A wrong rotary base, a lost mask or a shifted cache fails all three by orders.
# - int8 / int4 weight-only: floors well below what the test llama measured (int8 cosine 1.00000, stepwise 98%
#   exact, perplexity x1.0001; int4 cosine 0.9996-0.9998, stepwise 89-95% exact, perplexity x1.001-1.006) and
#   well above a broken model (a collapsed head agrees on ~1/vocab of the tokens, perplexity near the vocab
#   size). The free-running greedy text of a quantized model parts at its first flipped near tie and never
#   rejoins, so only the stepwise agreement is gated there; the own-run agreement and prefix are recorded.
# - fp16 (the builder's, weights, activations and cache in half): int8's floors; measured cosine 1.000000, max abs
#   4e-3, every greedy token equal, perplexity x1.0000.
LLM_TOLERANCES: dict[str, LLMTolerance] = {
    "fp32": LLMTolerance(Tolerance(1e-3, 1e-3, 0.9999, atol_scale=1e-4, min_top1=0.99, top1_margin=0.01), 1.0, 1.0,
                         1.001),
    "fp16": LLMTolerance(Tolerance(None, None, 0.999, min_top1=0.95, top1_margin=0.1), None, 0.85, 1.02),
    "int8": LLMTolerance(Tolerance(None, None, 0.999, min_top1=0.95, top1_margin=0.1), None, 0.85, 1.02),
    "int4": LLMTolerance(Tolerance(None, None, 0.97, min_top1=0.8, top1_margin=0.3), None, 0.6, 1.15),
}


@dataclass(frozen=True)
class Plan:
    """How much text each measure uses. Small enough for a CPU: 4 x 64 prefill tokens, 4 prompts x 16 greedy
    tokens, 8 windows x 128 tokens of perplexity."""

    prompts: int = 4
    prompt_len: int = 64
    greedy_prompts: int = 4
    greedy_prompt_len: int = 32
    greedy_tokens: int = 16
    ppl_windows: int = 8
    ppl_window: int = 128

    def fitted(self, context: int | None) -> "Plan":
        """This plan with every window inside a model context of ``context`` tokens (None: unchanged); a
        model with a 64-token position table gets 64-token prefill and perplexity windows, 32 + 16 greedy."""
        if not context:
            return self
        greedy_prompt = max(1, min(self.greedy_prompt_len, context // 2))
        return replace(self, prompt_len=min(self.prompt_len, context), greedy_prompt_len=greedy_prompt,
                       greedy_tokens=max(1, min(self.greedy_tokens, context - greedy_prompt)),
                       ppl_window=min(self.ppl_window, context))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class EvalSet:
    """The eval text, where it came from (with its sha256) and its token ids."""

    source: str
    sha256: str
    ids: np.ndarray

    def windows(self, length: int, count: int) -> np.ndarray:
        """Up to ``count`` consecutive, non-overlapping windows of ``length`` tokens, [n, length] int64."""
        n = min(count, len(self.ids) // length)
        return self.ids[:n * length].reshape(n, length).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "tokens": int(len(self.ids))}


# stdlib modules whose docstrings make the built-in eval text: English prose present on every Python install,
# none of them in examples/tinylm's training corpus, so the tiny test models see it for the first time too
_EVAL_MODULES = ("abc", "base64", "bisect", "calendar", "codecs", "copy", "fnmatch", "glob", "hashlib", "io",
                 "ipaddress", "locale", "operator", "optparse", "platform", "pprint", "queue", "sched", "secrets",
                 "shlex", "struct", "timeit", "traceback", "types", "warnings", "weakref")


def builtin_text() -> str:
    """The module docstrings of ``_EVAL_MODULES``, blank-line separated (the same text for the same Python)."""
    import importlib

    docs = []
    for name in _EVAL_MODULES:
        try:
            doc = importlib.import_module(name).__doc__
        except ImportError:  # a stripped-down Python build
            continue
        if doc and len(doc) > 200:
            docs.append(doc.strip())
    return "\n\n".join(docs)


def eval_set(tokenizer: Any, path: str | Path | None, plan: Plan = Plan()) -> EvalSet:
    """Tokenize ``--eval-text FILE`` (UTF-8 text) or the built-in text; InputError when it is too short for
    one prefill prompt."""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read --eval-text {p}", expected="a UTF-8 text file",
                             found=f"{type(e).__name__}: {e}") from None
        source = f"--eval-text {p}"
    else:
        text, source = builtin_text(), "built-in: docstrings of Python standard-library modules"
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    need = max(plan.prompt_len, plan.greedy_prompt_len, 16)
    if len(ids) < need:
        raise InputError(f"the eval text is too short: {len(ids)} tokens", expected=f"at least {need} tokens "
                         f"(better {plan.ppl_windows * plan.ppl_window})", found=source,
                         hint="give a longer --eval-text FILE (a few paragraphs of the text the model will see)")
    return EvalSet(source, hashlib.sha256(text.encode("utf-8")).hexdigest(), ids)


@dataclass
class Reference:
    """PyTorch's side of every measure, computed once per run."""

    prompts: np.ndarray
    logits: np.ndarray
    greedy_prompts: np.ndarray
    greedy: np.ndarray
    greedy_logits: np.ndarray  # PyTorch's logits at each greedy step [prompts, tokens, vocab]: the near ties
    ppl_windows: np.ndarray
    ppl: float


def torch_reference(model: Any, evals: EvalSet, plan: Plan) -> Reference:
    """The PyTorch model's prefill logits, greedy tokens (transformers' generate, EOS off so every run makes
    ``greedy_tokens``) and perplexity on the eval text."""
    import torch
    from transformers import GenerationConfig

    from edgesdk.compress.export_onnx import _quiet

    prompts = evals.windows(plan.prompt_len, plan.prompts)
    greedy_in = evals.windows(plan.greedy_prompt_len, plan.greedy_prompts)
    windows = evals.windows(min(plan.ppl_window, len(evals.ids)), plan.ppl_windows)
    with torch.no_grad(), _quiet():
        logits = model(input_ids=torch.from_numpy(prompts)).logits.float().numpy()
        ppl_logits = [model(input_ids=torch.from_numpy(w[None])).logits.float().numpy()[0] for w in windows]
        # eos_token_id=[]: never stop (None would fall back to the model's own eos and end rows early)
        cfg = GenerationConfig(do_sample=False, max_new_tokens=plan.greedy_tokens, min_new_tokens=0,
                               eos_token_id=[], pad_token_id=getattr(model.generation_config, "pad_token_id", 0) or 0)
        ids = torch.from_numpy(greedy_in)
        made = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        greedy = made[:, greedy_in.shape[1]:]
        steps = model(input_ids=made[:, :-1]).logits[:, greedy_in.shape[1] - 1:].float().numpy()
    return Reference(prompts, logits, greedy_in, greedy.numpy(), steps, windows, perplexity(ppl_logits, windows))


def perplexity(logits: list[np.ndarray], windows: np.ndarray) -> float:
    """exp(mean next-token NLL) over the windows; ``logits[i]`` is [len, vocab] for ``windows[i]``."""
    nll, count = 0.0, 0
    for lg, w in zip(logits, windows):
        x = lg[:-1].astype(np.float64)
        top = x.max(-1, keepdims=True)
        logz = (top + np.log(np.exp(x - top).sum(-1, keepdims=True)))[:, 0]
        nll += float((logz - x[np.arange(len(x)), w[1:]]).sum())
        count += len(x)
    return math.exp(nll / max(count, 1))


def onnx_logits(session: Any, ids: np.ndarray, geometry: tuple[int, int, int]) -> np.ndarray:
    """One forward pass of an LLM artifact on ``ids`` [batch, seq] with an empty cache (past length 0)."""
    layers, kv_heads, head_dim = geometry
    b, s = ids.shape
    feeds: dict[str, np.ndarray] = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                                    "attention_mask": np.ones((b, s), np.int64)}
    names = {t.name for t in session.inputs}
    if "position_ids" in names:
        feeds["position_ids"] = np.broadcast_to(np.arange(s, dtype=np.int64), (b, s)).copy()
    cache = next((t.dtype for t in session.inputs if t.name == "past_key_values.0.key"), "float32")
    empty = np.zeros((b, kv_heads, 0, head_dim), np.dtype(cache))  # float16 for an fp16 artifact
    for i in range(layers):
        feeds[f"past_key_values.{i}.key"] = feeds[f"past_key_values.{i}.value"] = empty
    return session.run(feeds)["logits"].astype(np.float32, copy=False)


def _greedy(session: Any, ref: Reference, geometry: tuple[int, int, int], margin: float) -> dict[str, Any]:
    """Greedy agreement two ways, each also "within ties": a different token counts as agreeing where PyTorch
    had it within ``margin`` x std(logits) of its own pick (a near tie the precision's noise may flip, as in
    edgesdk.parity's top-1).

    ``agreement``: the artifact's own greedy run (runtime generate: prefill, then one token at a time through
    the KV cache) against transformers' generate, position by position; after a first difference the texts
    part (``prefix_tokens`` says where), so ``agreement_within_ties`` counts a row whose first difference is a
    near tie as agreeing. ``stepwise_agreement``: along PyTorch's greedy path (one forward pass of prompt + its
    tokens), how often the artifact's argmax is PyTorch's next token, each step judged on its own."""
    from edgesdk.runtimes.generation import generate

    n, rows = ref.greedy.shape[1], np.arange(ref.greedy.shape[0])[:, None]
    made = np.asarray(generate(session, ref.greedy_prompts, max_new_tokens=n, do_sample=False,
                               eos_token_id=()))  # () never stops early, as the reference
    tie = margin * float(ref.greedy_logits.std())
    own = ref.greedy_logits[rows, np.arange(n)[None, :], ref.greedy]

    def near(tokens: np.ndarray) -> np.ndarray:  # [prompts, n]: PyTorch's lead over ``tokens`` is a near tie
        return own - ref.greedy_logits[rows, np.arange(n)[None, :], tokens] <= tie

    made = np.pad(made[:, :n], ((0, 0), (0, n - min(made.shape[1], n))), constant_values=-1)
    same = made == ref.greedy
    prefix = [int(np.argmin(r)) if not r.all() else n for r in same]
    tied = [p == n or bool(near(np.where(made >= 0, made, ref.greedy))[r, p]) for r, p in enumerate(prefix)]
    path = np.concatenate([ref.greedy_prompts, ref.greedy], axis=1)[:, :-1]
    picks = onnx_logits(session, path, geometry)[:, ref.greedy_prompts.shape[1] - 1:].argmax(-1)
    return {"agreement": float(same.mean()), "prefix_tokens": prefix,
            "agreement_within_ties": float(np.mean([n if t else p for p, t in zip(prefix, tied)]) / n),
            "stepwise_agreement": float(((picks == ref.greedy) | near(picks)).mean()),
            "stepwise_exact": float((picks == ref.greedy).mean()), "tie_margin": tie,
            "tokens": int(ref.greedy.size), "prompts": int(ref.greedy_prompts.shape[0])}


def check_artifact(session: Any, ref: Reference, tol: LLMTolerance, geometry: tuple[int, int, int]) -> dict[str, Any]:
    """The parity record of one artifact: each measure, its floor, the failures and ``passed``."""
    got = onnx_logits(session, ref.prompts, geometry)
    vocab = ref.logits.shape[-1]
    logits = compare([{"logits": ref.logits.reshape(-1, vocab)}], [{"logits": got.reshape(-1, vocab)}],
                     tolerance=tol.logits)
    greedy = _greedy(session, ref, geometry, tol.logits.top1_margin or 0.0)
    ppl = perplexity([onnx_logits(session, w[None], geometry)[0] for w in ref.ppl_windows], ref.ppl_windows)
    ratio = ppl / ref.ppl if ref.ppl > 0 else math.inf
    failures = [] if logits.passed else [f"prefill logits: {logits.failure_message()}"]
    for key, floor, what in (("agreement_within_ties", tol.min_greedy_agreement, "of its own greedy tokens equal"),
                             ("stepwise_agreement", tol.min_stepwise_agreement, "of the greedy steps pick")):
        if floor is not None and greedy[key] < floor:
            failures.append(f"greedy tokens: {greedy[key]:.1%} {what} PyTorch's (near ties aside), below the "
                            f"required {floor:.0%} (first difference after {greedy['prefix_tokens']} tokens)")
    if not ratio <= tol.max_ppl_ratio:
        failures.append(f"perplexity {ppl:.4g} vs PyTorch's {ref.ppl:.4g}: ratio {ratio:.4f}, above the allowed "
                        f"{tol.max_ppl_ratio:g}")
    d = logits.to_dict()
    return {"passed": not failures, "failures": failures,
            "prefill": {k: d[k] for k in ("max_abs_err", "cosine", "centered_cosine", "nrmse", "top1_agreement")}
            | {"tokens": int(ref.prompts.size)}, "greedy": greedy,
            "perplexity": {"onnx": ppl, "pytorch": ref.ppl, "ratio": ratio, "tokens": int(ref.ppl_windows.size)},
            "tolerance": tol.to_dict()}
