"""Text tokenizers: a built-in character tokenizer for the presets, or the backbone's own."""

from flow_omni.text.tokenizer import SPECIAL_TOKENS, CharTokenizer, HFTokenizer, TextTokenizer, load_text_tokenizer

__all__ = ["CharTokenizer", "HFTokenizer", "SPECIAL_TOKENS", "TextTokenizer", "load_text_tokenizer"]
