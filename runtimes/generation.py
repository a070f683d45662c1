"""Text generation for causal language models with a KV cache, without torch: a greedy or sampling loop over
any Session that runs the "edgesdk LM layout" (the layout of onnxruntime-genai's model builder, see
docs/llm.md), or onnxruntime-genai's own generator on the same folder.

The plain loop (``engine="onnxruntime"``, the default) prefills the prompt once with an empty cache, then feeds
one token at a time with the ``present.*`` outputs of the last step as the ``past_key_values.*`` inputs. It
works on every backend that runs the ONNX file, honours the Session's device and threads, keeps all its state
in locals (concurrent calls on one session are safe) and gives the same seeded samples on every machine.
``engine="genai"`` runs onnxruntime-genai (preallocated cache buffers, no copy per step: faster on long
sequences) on the model's folder; ``engine="auto"`` takes it where it applies.

Imports numpy only; onnxruntime-genai is imported when its engine is used.

Example::

    sess = load("out", artifact="int4")
    ids = generate(sess, np.array([[5, 6, 7]]), max_new_tokens=16)              # greedy, [1, <=16]
    ids = sess.generate([[5, 6, 7]], do_sample=True, top_p=0.9, seed=0)        # the same, as a method
"""
from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError, InputError

ENGINES = ("onnxruntime", "genai", "auto")
_LAYOUT = ("input_ids int64 [batch, seq], attention_mask int64 [batch, total_seq], optional position_ids, "
           "past_key_values.{i}.key/.value [batch, kv_heads, past_seq, head_dim] -> logits [batch, seq, vocab], "
           "present.{i}.key/.value (docs/llm.md)")
_LAYOUT_HINT = ("export the model with a KV cache in this layout (`edgesdk compress` of a Hugging Face folder, or "
                "python -m onnxruntime_genai.models.builder)")
_CACHE_NAME = re.compile(r"^(past_key_values|present)\.(\d+)\.(key|value)$")


@dataclass(frozen=True)
class KVLayout:
    """How a causal LM takes and returns its KV cache: layer count, cache shape and dtype, and whether the
    positions are an input (else the graph derives them from the attention mask, like onnxruntime's
    GroupQueryAttention)."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    position_ids: bool
    vocab: int | None

    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        """The ``past_key_values.*`` feeds of the prefill: past_seq 0."""
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), np.dtype(self.dtype))
        return {name: empty for name in self.past_names()}

    @staticmethod
    def carry(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``present.*`` outputs of a step renamed as the ``past_key_values.*`` feeds of the next."""
        return {"past_key_values" + name[7:]: a for name, a in outputs.items() if name.startswith("present.")}


def _cache_specs(specs: Sequence[Any], prefix: str) -> dict[tuple[int, str], Any]:
    return {(int(m.group(2)), m.group(3)): s for s in specs
            if (m := _CACHE_NAME.match(s.name)) and m.group(1) == prefix}


def _cache_dim(specs: Sequence[Any], axis: int, known: int | None, what: str, model: str) -> int:
    """A fixed dimension of the cache tensors (kv heads, head dim), from the specs or else the model's config."""
    fixed = {s.shape[axis] for s in specs if isinstance(s.shape[axis], int)}
    if len(fixed) == 1:
        return fixed.pop()
    if not fixed and known:
        return int(known)
    raise ArtifactError(f"{model}: a KV-cache layout the runtime does not recognise: the cache's {what} is "
                        + ("not the same in every layer" if fixed else "not fixed in the graph"),
                        expected=f"one fixed {what} in the past_key_values shapes, or genai_config.json / "
                                 "config.json beside the model saying it",
                        found=", ".join(f"{s.name}: {list(s.shape)}" for s in specs[:4]), hint=_LAYOUT_HINT)


def kv_layout(session: Any) -> KVLayout:
    """Detect the edgesdk LM layout from ``session.inputs``/``outputs``; ArtifactError naming what is missing or
    not recognised when the model does not follow it (an image classifier, another cache convention)."""
    ins, outs = {s.name: s for s in session.inputs}, {s.name: s for s in session.outputs}
    path = Path(session.path) if getattr(session, "path", None) else None
    model = f"{path.parent.name}/{path.name}" if path else "model"
    past, present = _cache_specs(list(ins.values()), "past_key_values"), _cache_specs(list(outs.values()), "present")
    layers = 1 + max((i for i, _ in past), default=-1)
    wanted_in = ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(layers)
                                                   for kv in ("key", "value")]
    wanted_out = ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    problems = [f"input {n}: missing" for n in wanted_in if n not in ins]
    problems += [f"output {n}: missing" for n in wanted_out if n not in outs]
    problems += [f"input {n}: not part of the layout" for n in ins if n not in wanted_in and n != "position_ids"]
    problems += [f"{s.name}: rank {len(s.shape)}, expected 4" for s in (*past.values(), *present.values())
                 if len(s.shape) != 4]
    if not layers or problems:
        found = "; ".join(problems if layers else ["no past_key_values.{i}.key/.value inputs", *problems[:3]])
        raise ArtifactError(f"{model}: a KV-cache layout the runtime does not recognise (not a causal LM in the "
                            "edgesdk LM layout)", expected=_LAYOUT, found=found, hint=_LAYOUT_HINT)
    caches = list(past.values())
    dtypes = {s.dtype for s in caches}
    if len(dtypes) != 1 or not dtypes <= {"float32", "float16"}:
        raise ArtifactError(f"{model}: a KV-cache layout the runtime does not recognise: cache dtype "
                            f"{', '.join(sorted(dtypes))}", expected="float32 or float16 past_key_values",
                            hint=_LAYOUT_HINT)
    config = lm_config(path.parent) if path else LMConfig()
    vocab = outs["logits"].shape[-1]
    return KVLayout(layers=layers, kv_heads=_cache_dim(caches, 1, config.kv_heads, "kv-head count", model),
                    head_dim=_cache_dim(caches, 3, config.head_size, "head dimension", model),
                    dtype=dtypes.pop(), position_ids="position_ids" in ins,
                    vocab=vocab if isinstance(vocab, int) else config.vocab_size)


@dataclass(frozen=True)
class LMConfig:
    """What the JSON files beside a model say about generating with it (None: not said)."""

    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    context_length: int | None = None
    head_size: int | None = None
    kv_heads: int | None = None
    vocab_size: int | None = None
    genai: bool = False  # the folder has genai_config.json (onnxruntime-genai can run it)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not readable JSON", found=f"{type(e).__name__}: {e}",
                            hint="copy the model folder again, or re-run `edgesdk compress`") from e
    return data if isinstance(data, dict) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _ids(value: Any) -> tuple[int, ...]:
    """Token ids as a tuple: one id, a list of them, or nothing (None, or anything else)."""
    if _is_int(value):
        return (int(value),)
    return tuple(int(v) for v in value if _is_int(v)) if isinstance(value, (list, tuple)) else ()


_CONFIGS: dict[tuple[str, tuple[int, ...]], LMConfig] = {}


def lm_config(folder: str | Path) -> LMConfig:
    """Read genai_config.json, generation_config.json and config.json of a model folder (cached while the files
    are unchanged). Token ids: generation_config first (what the model was tuned to stop at); context length:
    genai_config's ``context_length``, else config's ``max_position_embeddings``, else generation_config's
    ``max_length``."""
    folder = Path(folder)
    files = [folder / n for n in ("genai_config.json", "generation_config.json", "config.json")]
    key = (str(folder), tuple(f.stat().st_mtime_ns if f.is_file() else 0 for f in files))
    if key not in _CONFIGS:
        genai_file, gen, hf = (_read_json(f) for f in files)
        genai = genai_file.get("model") if isinstance(genai_file.get("model"), dict) else {}
        decoder = genai.get("decoder") if isinstance(genai.get("decoder"), dict) else {}
        heads = hf.get("num_attention_heads")
        hf_head = hf.get("head_dim") or (hf["hidden_size"] // heads if hf.get("hidden_size") and heads else None)
        eos = _ids(gen.get("eos_token_id")) or _ids(genai.get("eos_token_id")) or _ids(hf.get("eos_token_id"))
        _CONFIGS[key] = LMConfig(
            eos_token_ids=eos,
            bos_token_id=_first(gen.get("bos_token_id"), genai.get("bos_token_id"), hf.get("bos_token_id")),
            pad_token_id=_first(gen.get("pad_token_id"), genai.get("pad_token_id"), hf.get("pad_token_id")),
            context_length=_first(genai.get("context_length"), hf.get("max_position_embeddings"),
                                  hf.get("n_positions"), gen.get("max_length")),
            head_size=_first(decoder.get("head_size"), hf_head),
            kv_heads=_first(decoder.get("num_key_value_heads"), hf.get("num_key_value_heads"), heads),
            vocab_size=_first(genai.get("vocab_size"), hf.get("vocab_size")), genai=bool(genai_file))
    return _CONFIGS[key]


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked from the last logits: argmax, or a sample after temperature, top-k and
    top-p (nucleus) filtering, drawn from a seeded numpy Generator."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def check(self) -> "Sampling":
        """Raise InputError for values that cannot mean anything (checked even when greedy: a typo shows)."""
        bad = []
        number = (int, float, np.integer, np.floating)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, number) or not self.temperature > 0:
            bad.append(f"temperature={self.temperature!r} (must be > 0; use do_sample=False for greedy)")
        if not _is_int(self.top_k) or self.top_k < 0:
            bad.append(f"top_k={self.top_k!r} (an integer >= 0; 0 keeps every token)")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, number) or not 0 < self.top_p <= 1:
            bad.append(f"top_p={self.top_p!r} (in (0, 1]; 1 keeps every token)")
        if self.seed is not None and not _is_int(self.seed):
            bad.append(f"seed={self.seed!r} (an integer or None)")
        if bad:
            raise InputError("bad sampling settings", expected="temperature > 0, top_k >= 0, 0 < top_p <= 1",
                             found="; ".join(bad))
        return self

    def pick(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The next token of each row of ``logits`` [batch, vocab], int64 [batch]."""
        x = logits.astype(np.float32, copy=False)
        if not self.do_sample:
            return x.argmax(-1)
        x = x / np.float32(self.temperature)
        if 0 < self.top_k < x.shape[-1]:
            kth = np.partition(x, -self.top_k, axis=-1)[:, -self.top_k, None]
            x = np.where(x < kth, -np.inf, x)
        p = np.exp(x - x.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        if self.top_p < 1:  # keep the most likely tokens until their mass reaches top_p
            order = np.argsort(-p, axis=-1, kind="stable")
            sorted_p = np.take_along_axis(p, order, -1)
            sorted_p[np.cumsum(sorted_p, -1) - sorted_p >= self.top_p] = 0
            p = np.zeros_like(p)
            np.put_along_axis(p, order, sorted_p, -1)
        cdf = np.cumsum(p, -1)
        u = rng.random((len(x), 1)) * cdf[:, -1:]
        return np.minimum((cdf <= u).sum(-1), x.shape[-1] - 1).astype(np.int64)


class _Tokens:
    """The generated tokens of one call: finished rows get ``pad``; each step goes to ``stream``."""

    def __init__(self, batch: int, steps: int, eos: tuple[int, ...], pad: int,
                 stream: Callable[[np.ndarray], Any] | None) -> None:
        self.out = np.full((batch, steps), pad, np.int64)
        self.done = np.zeros(batch, bool)
        self.eos, self.pad, self.stream, self.n = np.asarray(eos, np.int64), pad, stream, 0

    def add(self, picked: np.ndarray) -> np.ndarray:
        """Record one step's tokens; returns them (int64 [batch], pad where a row had finished)."""
        tok = np.where(self.done, self.pad, picked).astype(np.int64)
        self.out[:, self.n] = tok
        self.n += 1
        if self.eos.size:
            self.done |= np.isin(tok, self.eos)
        if self.stream is not None:
            self.stream(tok.copy())
        return tok

    def finished(self) -> bool:
        return bool(self.done.all()) or self.n == self.out.shape[1]

    def result(self) -> np.ndarray:
        return self.out[:, :self.n]


def _plain_loop(session: Any, layout: KVLayout, ids: np.ndarray, lengths: np.ndarray, sampling: Sampling,
                tokens: _Tokens) -> np.ndarray:
    """Prefill once, then one token per step, feeding ``present`` back as ``past``. The rows are right padded
    (real tokens first): a graph that derives positions from the mask's sum (GroupQueryAttention) and one that
    masks pads out of a 4-D mask both see each row as if it were alone."""
    batch, seq = ids.shape
    rng = np.random.default_rng(sampling.seed)
    rows, ones = np.arange(batch), np.ones((batch, 1), np.int64)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, **layout.empty_cache(batch)}
    if layout.position_ids:
        feeds["position_ids"] = np.repeat(np.arange(seq, dtype=np.int64)[None], batch, 0)
    last = lengths - 1  # where each row's next-token logits are in the prefill
    while True:
        out = session.run(feeds)
        tok = tokens.add(sampling.pick(out["logits"][rows, last], rng))
        if tokens.finished():
            return tokens.result()
        mask = np.concatenate([mask, ones], 1)
        feeds = {"input_ids": tok[:, None], "attention_mask": mask, **layout.carry(out)}
        if layout.position_ids:
            feeds["position_ids"] = (lengths + tokens.n - 1)[:, None]
        last = np.zeros(batch, np.int64)


log = logging.getLogger(__name__)
_GENAI_MODELS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_GENAI_LOCK = threading.Lock()


def release(session: Any) -> None:
    """Drop the onnxruntime-genai model kept for ``session`` (its own copy of the weights): Session.close calls it."""
    with _GENAI_LOCK:
        _GENAI_MODELS.pop(session, None)


def _genai_model(session: Any) -> Any:
    """The onnxruntime-genai Model of the session's folder, loaded once per session (it is shareable between
    threads; each call makes its own Generator)."""
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise BackendUnavailableError("onnxruntime-genai is not installed", hint="pip install 'edgesdk[llm]', or "
                                      "use engine='onnxruntime'") from e
    with _GENAI_LOCK:
        if session not in _GENAI_MODELS:
            try:
                _GENAI_MODELS[session] = og.Model(str(Path(session.path).parent))
            except Exception as e:  # onnxruntime-genai raises plain RuntimeErrors
                raise ArtifactError(f"onnxruntime-genai cannot load {Path(session.path).parent}",
                                    found=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                                    hint="check genai_config.json, or use engine='onnxruntime'") from e
        return _GENAI_MODELS[session]


def _genai_loop(session: Any, ids: np.ndarray, sampling: Sampling, config: LMConfig, tokens: _Tokens) -> np.ndarray:
    """onnxruntime-genai's generator on the session's folder (same prompt, same settings, same bookkeeping)."""
    import onnxruntime_genai as og

    model = _genai_model(session)
    batch, seq = ids.shape
    steps = tokens.out.shape[1]
    opts: dict[str, Any] = {"max_length": seq + steps, "batch_size": batch, "do_sample": sampling.do_sample}
    if sampling.do_sample:
        opts.update(temperature=float(sampling.temperature), top_p=float(sampling.top_p),
                    top_k=sampling.top_k or int(config.vocab_size or 1 << 30))
        if sampling.seed is not None:
            opts["random_seed"] = int(sampling.seed)
    if not tokens.eos.size:  # no stop token: genai would still stop at its own, so hold it off to the end
        opts["min_length"] = seq + steps
    params = og.GeneratorParams(model)
    params.set_search_options(**opts)
    gen = og.Generator(model, params)
    gen.append_tokens(ids.astype(np.int32))
    while not gen.is_done():
        gen.generate_next_token()
        tokens.add(np.asarray(gen.get_next_tokens(), np.int64).reshape(batch))
        if tokens.finished():
            break
    return tokens.result()


_HALF_ON_CPU = ("an fp16 model on the CPU crashes onnxruntime-genai on its first decode step (onnxruntime's buffer "
                "reuse mis-sizes the casts it inserts around ops without fp16 kernels; genai cannot turn it off)")


def _half_on_cpu(session: Any) -> bool:
    """An fp16 cache (the builder's fp16 graph) in a session on the CPU EP only."""
    providers = getattr(session, "providers", None) or []
    on_cpu = all((p[0] if isinstance(p, tuple) else p) == "CPUExecutionProvider" for p in providers)
    return on_cpu and any(t.dtype == "float16" for t in getattr(session, "inputs", ()) if "past_key_values" in t.name)


def resolve_engine(session: Any, engine: str = "auto", *, ragged: bool = False,
                   eos_token_id: int | Sequence[int] | None = None) -> str:
    """The engine that will run: ``engine`` itself ("onnxruntime", or "genai" after checking it can), or for
    "auto" genai when onnxruntime-genai is installed, the model's folder has genai_config.json, the session is
    an onnxruntime one, the prompts have one length and the stop tokens are the model's own (or none); else
    the plain loop."""
    import importlib.util

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", expected=" or ".join(ENGINES), found=repr(engine))
    path = getattr(session, "path", None)
    config = lm_config(Path(path).parent) if path else LMConfig()
    own_eos = eos_token_id is None or not _ids(eos_token_id) or set(_ids(eos_token_id)) == set(config.eos_token_ids)
    if engine == "auto":
        # "never stop" (eos_token_id=()) is the plain loop's: genai masks the eos logit instead (min_length), which
        # changes the tokens where greedy would pick eos
        never_stops = eos_token_id is not None and not _ids(eos_token_id)
        usable = (config.genai and getattr(session, "backend", None) == "onnxruntime" and not ragged and own_eos
                  and not never_stops and not _half_on_cpu(session)
                  and importlib.util.find_spec("onnxruntime_genai") is not None)
        if usable:
            try:
                _genai_model(session)  # a model_type genai does not know (a torch-export folder, say) fails here
            except ArtifactError as e:
                log.warning("onnxruntime-genai cannot run %s (%s); using edgesdk's loop", Path(path).parent, e.found)
                usable = False
        return "genai" if usable else "onnxruntime"
    if engine == "genai":
        why = ("the model's folder has no genai_config.json" if not config.genai else
               "the prompts have different lengths (onnxruntime-genai mishandles padded batches)" if ragged else
               "onnxruntime-genai stops at the eos of genai_config.json only" if not own_eos else
               _HALF_ON_CPU if _half_on_cpu(session) else None)
        if why:
            raise InputError(f"engine='genai' cannot run this: {why}", hint="use engine='onnxruntime' (the plain "
                             "loop runs any model in the layout, any batch, any stop tokens)")
    return engine


def _prompt(input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated prompts as (ids int64 [batch, seq] right padded, real lengths int64 [batch]): the tokens where
    ``attention_mask`` is 1 (left or right padding alike), moved to the front of each row."""
    try:
        ids = np.asarray(input_ids)
    except ValueError:  # a list of rows of different lengths
        raise InputError("input_ids has rows of different lengths", expected="one length per batch, padding marked "
                         "by attention_mask", hint="pad the rows (Tokenizer.encode_batch does) and pass "
                         "attention_mask") from None
    if ids.ndim == 1:
        ids = ids[None]
    if ids.dtype.kind not in "iu" or ids.ndim != 2 or 0 in ids.shape:
        raise InputError("input_ids must be integer token ids [batch, seq]",
                         expected="a non-empty int array of rank 1 or 2 (e.g. np.array([[5, 6, 7]]))",
                         found=f"{ids.dtype}{list(ids.shape)}")
    mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all() or not mask.any(1).all():
        raise InputError("attention_mask must be 0/1 of the shape of input_ids, with a 1 in every row",
                         expected=f"{list(ids.shape)} of 0 (padding) and 1 (token)",
                         found=f"{mask.dtype}{list(mask.shape)}, values {np.unique(mask)[:5].tolist()}")
    lengths = mask.sum(1).astype(np.int64)
    packed = np.zeros((len(ids), int(lengths.max())), np.int64)
    for r in range(len(ids)):
        packed[r, :lengths[r]] = ids[r][mask[r] == 1]
    return packed, lengths


def _check_room(ids: np.ndarray, vocab: int | None, limit: int | None, max_new_tokens: int) -> int:
    """How many tokens can be generated after ``ids`` (at most ``max_new_tokens``, within the context ``limit``);
    InputError for ids outside the vocabulary, or a prompt that leaves no room."""
    if vocab is not None and (ids.min() < 0 or ids.max() >= vocab):
        raise InputError("input_ids holds ids outside the vocabulary", expected=f"0 <= id < {vocab}",
                         found=f"ids from {ids.min()} to {ids.max()}", hint="encode with the model's own tokenizer")
    if limit is None:
        return max_new_tokens
    if ids.shape[1] >= limit and max_new_tokens:
        raise InputError(f"the prompt is {ids.shape[1]} tokens; the model's context is {limit}, which leaves no room "
                         "to generate", expected=f"a prompt of at most {limit - 1} tokens",
                         found=f"{ids.shape[1]} tokens", hint="shorten the prompt (or keep only its end)")
    return min(max_new_tokens, limit - ids.shape[1])


def generate(session: Any, input_ids: Any, *, max_new_tokens: int = 64, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             eos_token_id: int | Sequence[int] | None = None, seed: int | None = None,
             stream: Callable[[np.ndarray], Any] | None = None, attention_mask: Any = None,
             engine: str = "onnxruntime") -> np.ndarray:
    """Generate up to ``max_new_tokens`` tokens after each prompt; returns int64 [batch, n] (the prompt not
    included; rows that stopped early are padded with the pad id).

    ``input_ids`` [batch, seq] (or [seq]) with ``attention_mask`` marking padding (left or right); greedy unless
    ``do_sample`` (then ``temperature``, ``top_k``, ``top_p``, ``seed``). ``eos_token_id``: None stops at the
    model's own (generation_config.json / genai_config.json), ``()`` never stops early. ``stream(tokens)`` is
    called after every step with int64 [batch]. Generation ends at the model's context length; a prompt that
    fills it is an InputError. ``engine``: see the module docstring and ``resolve_engine``.
    """
    sampling = Sampling(do_sample, temperature, top_k, top_p, seed).check()
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise InputError("max_new_tokens must be an integer >= 0", found=repr(max_new_tokens))
    path = getattr(session, "path", None)
    config = lm_config(Path(path).parent) if path else LMConfig()
    ids, lengths = _prompt(input_ids, attention_mask)
    ragged = bool((lengths != ids.shape[1]).any())
    engine = resolve_engine(session, engine, ragged=ragged, eos_token_id=eos_token_id)
    layout = kv_layout(session) if engine == "onnxruntime" else None  # genai reads its own genai_config.json
    steps = _check_room(ids, layout.vocab if layout else config.vocab_size, config.context_length, max_new_tokens)
    eos = config.eos_token_ids if eos_token_id is None else _ids(eos_token_id)
    pad = _first(config.pad_token_id, eos[0] if eos else None, 0)
    if steps == 0:
        return np.zeros((len(ids), 0), np.int64)
    tokens = _Tokens(len(ids), steps, eos, pad, stream)
    if layout is None:
        return _genai_loop(session, ids, sampling, config, tokens)
    return _plain_loop(session, layout, ids, lengths, sampling, tokens)
