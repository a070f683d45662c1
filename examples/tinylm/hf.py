"""Hugging Face model folders made here, offline: a byte-level BPE tokenizer trained on the standard
library's docstrings, and causal LMs of several architectures from a config (random weights or trained
by train.py). What `edgesdk compress ./folder` takes as a local LLM.

    save_tokenizer("tiny/", stdlib_text(), vocab_size=1024)
    save_model("tiny/", "llama", hidden=128, layers=2, heads=4, kv_heads=2)   # config.json + model.safetensors
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def save_tokenizer(out: str | Path, text: str, vocab_size: int = 1024) -> Any:
    """Train a byte-level BPE on ``text`` and save it as a fast tokenizer (tokenizer.json and
    tokenizer_config.json) in ``out``; return the transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.split("\n\n"), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"],
                                   pad_token=SPECIAL["pad"], unk_token=SPECIAL["unk"])
    Path(out).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast


def config(arch: str, vocab: int, hidden: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2,
           context: int = 512, **extra: Any) -> Any:
    """A transformers config of ``arch`` (llama, qwen2, phi3, gpt2, mistral) with these sizes, token ids of
    save_tokenizer's special tokens (bos 0, eos 1, pad 2)."""
    import transformers as tf

    ids = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context,
                             **{"bos_token_id": 0, "eos_token_id": 1}, **extra)
    cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "phi3": tf.Phi3Config,
           "mistral": tf.MistralConfig}[arch]
    return cls(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 4 if arch != "phi3" else hidden * 3,
               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
               max_position_embeddings=context, tie_word_embeddings=False, **ids, **extra)


def save_model(out: str | Path, arch: str = "llama", seed: int = 0, model: Any = None, **sizes: Any) -> Any:
    """Save a causal LM (``model``, or a new one with seeded random weights) with its config and a
    generation config into ``out``, next to the tokenizer; return the model."""
    import torch
    import transformers as tf

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    if model is None:
        torch.manual_seed(seed)
        model = tf.AutoModelForCausalLM.from_config(config(arch, len(tok), **sizes)).eval()
    model.generation_config = tf.GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model.save_pretrained(str(out), safe_serialization=True)
    return model
