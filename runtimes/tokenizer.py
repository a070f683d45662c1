"""The tokenizer of a language-model folder without torch or transformers: ``tokenizer.json`` through the
``tokenizers`` package (imported on first use), special token ids from generation_config.json /
genai_config.json and tokenizer_config.json.

Example::

    tok = Tokenizer.from_dir("out/int4")
    ids, mask = tok.encode_batch(["def main():", "import"])     # left padded int64 arrays
    print(tok.decode(sess.generate(ids, attention_mask=mask)[0]))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgesdk.errors import ArtifactError, BackendUnavailableError, InputError

from .generation import _first, _read_json, lm_config


def _token_text(value: Any) -> str | None:
    """A special token of tokenizer_config.json: a string, or an AddedToken dict with its ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    """Encode text to token ids and decode them back; ``bos/eos/pad`` ids as the model folder says."""

    def __init__(self, tokenizer: Any, *, bos_token_id: int | None = None, eos_token_ids: Sequence[int] = (),
                 pad_token_id: int | None = None) -> None:
        self._tok = tokenizer
        self.bos_token_id = bos_token_id
        self.eos_token_ids = tuple(eos_token_ids)
        self.pad_token_id = _first(pad_token_id, self.eos_token_ids[0] if self.eos_token_ids else None, 0)

    @classmethod
    def from_dir(cls, folder: str | Path) -> "Tokenizer":
        """The tokenizer of a model folder (tokenizer.json, a Hugging Face fast tokenizer); ArtifactError when the
        folder has none or it cannot be read."""
        folder = Path(folder)
        file = folder / "tokenizer.json"
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder", expected="a language-model folder with tokenizer.json")
        if not file.is_file():
            raise ArtifactError(f"{folder} has no tokenizer", expected="tokenizer.json (a Hugging Face fast tokenizer) "
                                "beside the model", found=", ".join(sorted(p.name for p in folder.iterdir())[:12]),
                                hint="copy tokenizer.json and tokenizer_config.json from the Hugging Face model "
                                     "folder, or re-run `edgesdk compress`, which writes them")
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as e:
            raise BackendUnavailableError("the tokenizers package is not installed",
                                          hint="pip install 'edgesdk[llm]'") from e
        try:
            tok = HFTokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises its own Exception subclass for unreadable files
            raise ArtifactError(f"{file} is not a tokenizer the tokenizers package can read",
                                found=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                                hint="copy it again from the model folder") from e
        special = _read_json(folder / "tokenizer_config.json")

        def token_id(key: str) -> int | None:
            text = _token_text(special.get(key))
            return tok.token_to_id(text) if text is not None else None

        config = lm_config(folder)
        eos = config.eos_token_ids or tuple(i for i in (token_id("eos_token"),) if i is not None)
        return cls(tok, bos_token_id=_first(config.bos_token_id, token_id("bos_token")), eos_token_ids=eos,
                   pad_token_id=_first(config.pad_token_id, token_id("pad_token")))

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (with the special tokens the tokenizer's post-processor adds, as transformers)."""
        if not isinstance(text, str):
            raise InputError("encode takes a string", found=type(text).__name__)
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 [len(texts), longest], left padded with the pad id: what
        ``generate`` takes for a batch."""
        rows = [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]
        if not rows or not all(rows):
            raise InputError("encode_batch needs texts that each give at least one token",
                             found=f"{len(rows)} texts, token counts {[len(r) for r in rows]}")
        width = max(map(len, rows))
        ids = np.full((len(rows), width), self.pad_token_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for r, row in enumerate(rows):
            ids[r, width - len(row):], mask[r, width - len(row):] = row, 1
        return ids, mask

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream(self) -> "TextStream":
        """A decoder for tokens arriving one at a time (``generate(stream=...)``)."""
        return TextStream(self)


class TextStream:
    """Turns tokens arriving one by one into text pieces: decodes the tokens so far and hands out what is new,
    holding back an incomplete character (a byte-level BPE splits UTF-8 characters across tokens)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._sent = 0

    def push(self, token_id: int) -> str:
        """Add one token; the text it completes ('' while a character is still incomplete)."""
        self._ids.append(int(token_id))
        text = self._tok.decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        new, self._sent = text[self._sent:], len(text)
        return new

    def flush(self) -> str:
        """The text not handed out yet (an incomplete character at the end, once no more tokens come)."""
        text = self._tok.decode(self._ids)
        new, self._sent = text[self._sent:], len(text)
        return new
