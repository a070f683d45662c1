"""Causal-LM intake: a local Hugging Face folder (config.json, safetensors weights, a tokenizer) or a factory
(``file.py:build`` through edgesdk.intake.build_model) returning a transformers causal LM. Nothing is downloaded:
transformers runs offline, with ``local_files_only`` and no remote code.

Every later step works from one folder (the builder reads folders), so a factory's model is saved into a
temporary folder next to its tokenizer.

Example::

    with open_source("./my-llm") as src:
        src.architecture, src.num_layers, src.kv_heads, src.head_dim, src.side_files()
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgesdk.errors import InputError, ModelLoadError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")
# any one of these (or the vocab.json + merges.txt pair) makes a loadable tokenizer
_TOKENIZER_CORE = ("tokenizer.json", "tokenizer.model", "vocab.txt")
SIDE_FILES = (*TOKENIZER_FILES, "generation_config.json")
_FOLDER_HINT = ("a Hugging Face model folder as save_pretrained writes it: config.json, model.safetensors "
                "(or its shards), tokenizer.json (or tokenizer.model) and tokenizer_config.json")


@dataclass
class LLMSource:
    """A causal LM ready to export: the folder holding its config, weights and tokenizer, the loaded fp32 PyTorch
    model (the parity reference) and its tokenizer, and the KV-cache geometry both export routes need."""

    folder: Path
    model: Any
    tokenizer: Any
    origin: str
    architecture: str
    model_type: str
    num_layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int

    def side_files(self) -> list[Path]:
        """The tokenizer and generation-config files of the folder, copied next to every artifact."""
        return [self.folder / n for n in SIDE_FILES if (self.folder / n).is_file()]

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the model."""
        return {"source": self.origin, "architecture": self.architecture, "model_type": self.model_type,
                "num_layers": self.num_layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "vocab_size": self.vocab_size,
                "parameters": int(sum(p.numel() for p in self.model.parameters()))}


def _import_transformers() -> Any:
    """transformers, imported with its import-time noise (torchao's warnings, native load failures) kept off the
    console."""
    from edgesdk.compress.export_onnx import _quiet

    with _quiet():
        import transformers
        from transformers.models.auto import modeling_auto  # noqa: F401 - the causal-LM name table
    return transformers


def is_causal_lm_name(architecture: str) -> bool:
    """Whether a config's architecture names a causal LM class (``LlamaForCausalLM``, ``GPT2LMHeadModel``)."""
    names = _import_transformers().models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return architecture.endswith(("ForCausalLM", "LMHeadModel")) or \
        architecture in set(names.values())


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a transformers causal LM (a PreTrainedModel that can generate, not encoder-decoder)."""
    try:
        pretrained = _import_transformers().PreTrainedModel
    except ImportError:
        return False
    if not isinstance(model, pretrained) or getattr(model.config, "is_encoder_decoder", False):
        return False
    return bool(getattr(model, "can_generate", lambda: False)()) and is_causal_lm_name(type(model).__name__)


def has_linear(model: Any) -> bool:
    """Whether ``model`` has a layer weight-only quantization can take (nn.Linear, or GPT-2's Conv1D)."""
    import torch

    return any(isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D" for m in model.modules())


def check_folder(folder: Path) -> dict[str, Any]:
    """The folder's config, after checking it is a local causal-LM folder with weights and a tokenizer."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise InputError(f"{folder} is a folder without config.json", expected=_FOLDER_HINT,
                         found=_listing(folder), hint="pass the folder save_pretrained wrote (edgesdk never "
                                                      "downloads a model), or a file.py:factory")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{cfg_file} is not valid JSON", found=str(e)) from None
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise InputError(f"{cfg_file} names no architecture", expected='"architectures": ["...ForCausalLM"]',
                         found=f"architectures: {archs!r}", hint="save the model with save_pretrained, which writes it")
    if not is_causal_lm_name(archs[0]):
        raise InputError(f"{folder} holds a {archs[0]}, not a causal language model",
                         expected="a text-generation model (an architecture ending in ForCausalLM or LMHeadModel)",
                         found=f"architectures: {', '.join(archs)}",
                         hint="edgesdk compresses other models from a file.py:factory with --input")
    names = {p.name for p in folder.iterdir()}
    if not names & set(_TOKENIZER_CORE) and not {"vocab.json", "merges.txt"} <= names:
        raise InputError(f"{folder} has no tokenizer", expected="tokenizer.json (or tokenizer.model, or vocab.json "
                         "with merges.txt) next to config.json", found=_listing(folder),
                         hint="save the tokenizer into the folder: tokenizer.save_pretrained(folder)")
    if not any(n.endswith(".safetensors") for n in names):
        why = "only PyTorch pickles (pytorch_model.bin)" if any(n.endswith(".bin") for n in names) else _listing(folder)
        raise InputError(f"{folder} has no safetensors weights", expected="model.safetensors (or its shards)",
                         found=why, hint="edgesdk never unpickles weights: re-save with "
                                         "model.save_pretrained(folder, safe_serialization=True)")
    if config.get("auto_map"):
        raise InputError(f"{folder} needs custom code from the folder (auto_map in config.json)",
                         expected="an architecture built into transformers", found=f"auto_map: {config['auto_map']}",
                         hint="edgesdk does not run code that ships inside a model folder")
    return config


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return f"files: {', '.join(names[:12]) or 'none'}" + (" ..." if len(names) > 12 else "")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """transformers and huggingface_hub offline for the block: a missing file is an error, never a download."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_folder(folder: Path) -> tuple[Any, Any]:
    """(fp32 causal LM in eval mode, tokenizer) from a checked folder; loading errors are ModelLoadError."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgesdk.compress.export_onnx import _first_line, _quiet

    try:
        with offline(), _quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                         dtype=torch.float32)
    except Exception as e:  # transformers raises many types (OSError, ValueError, KeyError...)
        raise ModelLoadError(f"transformers cannot load the model in {folder}", found=_first_line(e),
                             hint="check that config.json, the weights and the tokenizer belong together (load it "
                                  "with AutoModelForCausalLM.from_pretrained to see the full error)") from e
    return model.eval(), tokenizer


def _tokenizer_dir(ref: str, given: str | Path | None) -> Path:
    """Where a factory's tokenizer lives: ``--tokenizer DIR``, else the factory file's folder."""
    if given is not None:
        path = Path(given)
        return path.parent if path.is_file() else path
    mod = ref.rpartition(":")[0]
    if mod.endswith(".py") and Path(mod).parent.joinpath("tokenizer.json").is_file():
        return Path(mod).parent
    raise InputError(f"the factory {ref} returned a language model but no tokenizer was given",
                     expected="--tokenizer DIR (a folder with tokenizer.json), or tokenizer.json next to the .py file",
                     hint="the tokenizer makes the parity prompts and ships in the artifact folder")


def cache_geometry(model: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of the model's KV cache, read from one 2-token forward (configs name these
    differently: n_head, num_key_value_heads, head_dim...)."""
    import torch

    from edgesdk.compress.export_onnx import _first_line, _quiet

    try:
        with torch.no_grad(), _quiet():
            out = model(input_ids=torch.tensor([[1, 2]]), use_cache=True)
    except Exception as e:  # the model's own code
        raise ModelLoadError(f"a forward pass of {type(model).__name__} with a KV cache failed",
                             found=_first_line(e), hint="check the model runs with use_cache=True") from e
    layers = kv_tensors(out)
    if not layers:
        raise ModelLoadError(f"{type(model).__name__} returned no KV cache", expected="past key/values per layer",
                             hint="the model must support use_cache=True")
    k = layers[0][0]
    return len(layers), int(k.shape[1]), int(k.shape[3])


def kv_tensors(out: Any) -> list[tuple[Any, Any]]:
    """[(key, value) per layer] from a transformers output's cache (``cache`` in transformers 5, else
    ``past_key_values``; a Cache object or the legacy tuple of tuples)."""
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        return []
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v, *_ in cache]


def _source(folder: Path, model: Any, tokenizer: Any, origin: str) -> LLMSource:
    layers, kv_heads, head_dim = cache_geometry(model)
    cfg = model.config
    return LLMSource(folder=folder, model=model, tokenizer=tokenizer, origin=origin,
                     architecture=(getattr(cfg, "architectures", None) or [type(model).__name__])[0],
                     model_type=str(getattr(cfg, "model_type", "")), num_layers=layers, kv_heads=kv_heads,
                     head_dim=head_dim, vocab_size=int(model.get_output_embeddings().weight.shape[0]))


@contextlib.contextmanager
def open_source(ref: str, *, tokenizer: str | Path | None = None, model: Any = None) -> Iterator[LLMSource]:
    """The causal LM named by ``ref``: a folder, or a factory (``model`` when the caller built it already); a
    factory's model lives in a temporary folder until the block ends."""
    path = Path(ref)
    if path.is_dir():
        check_folder(path)
        net, tok = load_folder(path)
        yield _source(path, net, tok, f"folder {ref}")
        return
    from edgesdk.intake import build_model

    net = model if model is not None else build_model(ref)
    if not is_causal_lm(net):
        raise InputError(f"{ref} returned a {type(net).__name__}, not a transformers causal LM",
                         expected="a model with generate() and a KV cache (AutoModelForCausalLM and the like) for "
                                  "--task text-generation", found=f"{type(net).__module__}.{type(net).__name__}",
                         hint="drop --task text-generation for other models (they take --input), or return a "
                              "transformers *ForCausalLM from the factory")
    tok_dir = _tokenizer_dir(ref, tokenizer)
    from transformers import AutoTokenizer

    with offline():
        try:
            tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True, trust_remote_code=False)
        except Exception as e:  # transformers' own error types
            raise InputError(f"no tokenizer could be loaded from {tok_dir}", found=f"{type(e).__name__}: {e}"[:300],
                             hint="--tokenizer DIR must hold tokenizer.json (tokenizer.save_pretrained writes it)") from e
    with tempfile.TemporaryDirectory(prefix="edgesdk-llm-") as tmp:
        from edgesdk.compress.export_onnx import _quiet

        net = net.float().eval()  # the builder reads the saved folder: fp32 weights for the fp32 reference
        with _quiet():
            net.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        yield _source(Path(tmp), net, tok, f"factory {ref}")
