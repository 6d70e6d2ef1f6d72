"""The built-in character tokenizer."""

import pytest

from flow_omni.errors import ConfigError
from flow_omni.text import SPECIAL_TOKENS, CharTokenizer, load_text_tokenizer


def test_char_roundtrip_and_specials():
    tok = CharTokenizer()
    text = "Hello, world! 12 + 30 = 42?"
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    # Accents are stripped rather than lost; specials never leak into decoded text.
    assert tok.decode(tok.encode("café")) == "cafe"
    assert tok.decode([tok.special_id("<bos>")] + ids + [tok.special_id("<eot>")]) == text
    assert len({tok.special_id(t) for t in SPECIAL_TOKENS}) == len(SPECIAL_TOKENS)
    with pytest.raises(KeyError, match="unknown special token"):
        tok.special_id("<nope>")
    again = load_text_tokenizer(tok.spec())
    assert again.encode(text) == ids
    with pytest.raises(ConfigError, match="unknown text tokenizer kind"):
        load_text_tokenizer({"kind": "bpe"})
    assert tok.encode("€")[0] == tok.special_id("<unk>")
