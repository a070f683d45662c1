"""Timing of text generation: time to first token, prefill and decode tokens/s, peak RSS.

Apart from ``generation`` because it shares the peak-RSS reading of ``bench`` (the timing loop of every
backend), which imports the Session module, which delegates ``Session.generate`` to ``generation``: one module
for both would close an import cycle.

Example::

    r = benchmark_generate(load("out", artifact="int4"), prompt_len=128, gen_len=128)
    print(r["ttft_ms"], r["decode_tokens_per_s"])
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgesdk.errors import InputError

from .bench import _peak_rss_mb
from .generation import generate, kv_layout, lm_config, resolve_engine


def _one_run(session: Any, ids: np.ndarray, gen_len: int, engine: str) -> dict[str, float]:
    """Generate exactly ``gen_len`` tokens (greedy, no stop token) and time it with perf_counter_ns: the first
    token ends the prefill, the rest are the decode."""
    clock, marks = time.perf_counter_ns, []
    t0 = clock()
    out = generate(session, ids, max_new_tokens=gen_len, eos_token_id=(), engine=engine,
                   stream=lambda _: marks.append(clock()))
    t1 = clock()
    if out.shape[1] != gen_len:  # the context ran out (checked before, so a model that lies about it)
        raise InputError(f"generated {out.shape[1]} tokens, not {gen_len}",
                         hint="lower prompt_len + gen_len to fit the model's context")
    batch, prompt_len = ids.shape
    ttft, decode, total = (marks[0] - t0) / 1e9, (marks[-1] - marks[0]) / 1e9, (t1 - t0) / 1e9
    return {"ttft_ms": ttft * 1e3, "decode_s": decode, "total_s": total,
            "prefill_tokens_per_s": batch * prompt_len / ttft,
            "decode_tokens_per_s": batch * (gen_len - 1) / decode if gen_len > 1 and decode > 0 else None,
            "tokens_per_s": batch * gen_len / total}


def benchmark_generate(session: Any, *, prompt_len: int = 128, gen_len: int = 128, batch: int = 1,
                       warmup: int = 1, iterations: int = 3, engine: str = "onnxruntime",
                       seed: int = 0) -> dict[str, Any]:
    """Time generation on random prompts of ``prompt_len`` tokens: ``gen_len`` new tokens per row, greedy with
    no stop token so that every iteration does the same work. Returns the medians over ``iterations``
    (``ttft_ms``, ``prefill_tokens_per_s``, ``decode_tokens_per_s`` after the first token, ``tokens_per_s``:
    generated tokens over the whole call), ``peak_rss_mb``, the settings, and each iteration's numbers under
    ``runs``."""
    sizes = {"prompt_len": prompt_len, "gen_len": gen_len, "batch": batch, "iterations": iterations}
    least = {**{k: (v, 1) for k, v in sizes.items()}, "warmup": (warmup, 0)}
    bad = [f"{k}={v!r}" for k, (v, low) in least.items() if not isinstance(v, int) or isinstance(v, bool) or v < low]
    if bad:
        raise InputError("benchmark_generate needs prompt_len, gen_len, batch, iterations >= 1 and warmup >= 0",
                         found=", ".join(bad))
    engine = resolve_engine(session, engine)
    limit = lm_config(session.path.parent).context_length if getattr(session, "path", None) else None
    if limit is not None and prompt_len + gen_len > limit:
        raise InputError(f"prompt_len + gen_len is {prompt_len + gen_len}; the model's context is {limit}",
                         expected=f"prompt_len + gen_len <= {limit}", hint="shorten the prompt or the generation")
    vocab = kv_layout(session).vocab or 2
    ids = np.random.default_rng(seed).integers(0, vocab, (batch, prompt_len), dtype=np.int64)
    runs = [_one_run(session, ids, gen_len, engine) for _ in range(warmup + iterations)][warmup:]

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return float(np.median(values)) if values else None

    keys = ("ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "tokens_per_s")
    return {"backend": getattr(session, "backend", type(session).__name__), "engine": engine,
            "threads": getattr(session, "threads", None), **sizes, "warmup": warmup,
            **{k: median(k) for k in keys}, "peak_rss_mb": _peak_rss_mb(), "runs": runs}
