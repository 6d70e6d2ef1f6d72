"""Text tokenizers with the special tokens the speech-text layout needs.

Two implementations share one small interface (:class:`TextTokenizer`):

* :class:`CharTokenizer` — one id per character, built in, no files; the presets use it because a
  tiny model trained on a CPU learns spelling far faster from characters than from a 50k-entry BPE.
* :class:`HFTokenizer` — the backbone's own ``transformers`` tokenizer (pretrained backbones), with
  our special tokens added; the model resizes its embeddings to match.

Special tokens (their ids are fixed by each tokenizer; look them up with :meth:`special_id`):
``<pad>`` batch padding, ``<bos>`` sequence start, ``<eot>`` end of text, ``<tpad>`` "no text at this
position" in the text stream while speech continues, ``<sep>`` end of the prompt, and one task tag per
format ``<A2T>``, ``<T2A>``, ``<A2A>``, ``<T2T>``.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from flow_omni.errors import ConfigError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eot>", "<tpad>", "<sep>", "<A2T>", "<T2A>", "<A2A>", "<T2T>", "<unk>", "<MIX>")
#: The characters of the default CharTokenizer: printable ASCII minus tabs/newlines.
DEFAULT_CHARS = "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c")


class TextTokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def special_id(self, token: str) -> int: ...

    def spec(self) -> dict: ...

    def unknown_characters(self, text: str) -> list[str]: ...


class _SpecialTokens:
    """Shared lookup of the special-token ids (``self._special`` is filled by the subclass)."""

    _special: dict[str, int]

    def special_id(self, token: str) -> int:
        try:
            return self._special[token]
        except KeyError:
            raise KeyError(f"unknown special token {token!r}; known: {list(SPECIAL_TOKENS)}") from None


class CharTokenizer(_SpecialTokens):
    """Characters ↔ ids; unknown characters map to ``<unk>`` after NFKD accent stripping."""

    def __init__(self, chars: str = DEFAULT_CHARS) -> None:
        if len(set(chars)) != len(chars):
            raise ConfigError("CharTokenizer: the character list has duplicates")
        self.chars = chars
        self.itos = list(SPECIAL_TOKENS) + list(chars)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.vocab_size = len(self.itos)
        self._special = {t: self.stoi[t] for t in SPECIAL_TOKENS}

    def encode(self, text: str) -> list[int]:
        unk = self._special["<unk>"]
        out = []
        for ch in text:
            idx = self.stoi.get(ch)
            if idx is None or ch in SPECIAL_TOKENS:
                base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
                idx = self.stoi.get(base, unk) if len(base) == 1 else unk
            out.append(idx)
        return out

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of ``text`` that :meth:`encode` reads as ``<unk>``, each once, in order."""
        unk = self._special["<unk>"]
        return list(dict.fromkeys(ch for ch, idx in zip(text, self.encode(text)) if idx == unk))

    def decode(self, ids: Sequence[int]) -> str:
        n_special = len(SPECIAL_TOKENS)
        return "".join(self.itos[i] for i in ids if n_special <= i < self.vocab_size)

    def spec(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class HFTokenizer(_SpecialTokens):
    """A ``transformers`` tokenizer plus our special tokens (added if missing)."""

    def __init__(self, tokenizer) -> None:  # a PreTrainedTokenizerBase
        self.tok = tokenizer
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        self.vocab_size = len(tokenizer)
        self._special = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        self._special_ids = set(self._special.values())

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> HFTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path), **kwargs))

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def unknown_characters(self, text: str) -> list[str]:
        """The characters of ``text`` that the tokenizer reads as its unknown token, each once, in order
        (none for byte-level BPEs, which have no unknown token)."""
        unk = self.tok.unk_token_id
        if unk is None or unk not in self.encode(text):
            return []
        return list(dict.fromkeys(ch for ch in text if unk in self.encode(ch)))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([i for i in ids if i not in self._special_ids], skip_special_tokens=True)

    def save(self, directory: str | Path) -> None:
        self.tok.save_pretrained(str(directory))

    def spec(self) -> dict:
        return {"kind": "hf"}


def unknown_characters_message(tokenizer: TextTokenizer, text: str) -> str | None:
    """A line naming the characters of ``text`` that ``tokenizer`` reads as ``<unk>``, or None when it
    knows them all. The model cannot tell one ``<unk>`` from another, so an emoji, a CJK character or a
    control character in a prompt is lost without a trace unless someone says so."""
    chars = tokenizer.unknown_characters(text)
    if not chars:
        return None
    listed = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in chars)
    return f"{len(chars)} character(s) are not in the text tokenizer and are read as <unk>: {listed}"


def load_text_tokenizer(spec: dict, directory: str | Path | None = None) -> TextTokenizer:
    """Rebuild a tokenizer from its stored ``spec`` (HF tokenizers are read from ``directory``)."""
    kind = spec.get("kind")
    if kind == "char":
        return CharTokenizer(spec.get("chars", DEFAULT_CHARS))
    if kind == "hf":
        if directory is None:
            raise ConfigError("an 'hf' text tokenizer needs the directory it was saved in")
        return HFTokenizer.from_pretrained(directory)
    raise ConfigError(f"unknown text tokenizer kind {kind!r}; expected 'char' or 'hf'")
