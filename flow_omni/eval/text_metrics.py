"""CER and WER after text normalisation, computed with ``jiwer``.

Both sides go through :func:`flow_omni.data.texts.normalize_text` first (lower case, no
punctuation, numbers as words, single spaces), so "Seven." and "seven" count as equal: the
metrics measure recognition, not formatting. Rates are corpus-level (total edits / total
reference length), the usual definition, rather than a mean of per-utterance rates.
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer

from flow_omni.data.texts import normalize_text


def _prepare(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no references to score")
    r = [normalize_text(x) for x in refs]
    if any(not x for x in r):
        raise ValueError("a reference is empty after normalisation; error rates are undefined for it")
    return r, [normalize_text(x) for x in hyps]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate over a corpus: (S + D + I) / reference words."""
    r, h = _prepare(refs, hyps)
    return float(jiwer.wer(r, h))


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate over a corpus (spaces count as characters, as in jiwer)."""
    r, h = _prepare(refs, hyps)
    return float(jiwer.cer(r, h))


def item_errors(
    refs: Sequence[str], hyps: Sequence[str], unit: str = "char", mean_length: float | None = None
) -> list[float]:
    """Each item's part of the corpus rate: its edits over the mean reference length, so that the mean
    of the values is :func:`cer` (``unit="char"``) or :func:`wer` (``"word"``) of the same items, and two
    systems can be compared item by item on the same references (a paired test).

    ``mean_length``: divide by this instead (:func:`mean_reference_length` of a whole test set), so that
    systems scored on different subsets of it (the sentences each one spoke) share one scale."""
    r, h = _prepare(refs, hyps)
    edits, lengths = [], []
    for ref, hyp in zip(r, h):
        o = _process(unit)(ref, hyp)
        edits.append(o.substitutions + o.deletions + o.insertions)
        lengths.append(o.hits + o.substitutions + o.deletions)
    scale = sum(lengths) / len(lengths) if mean_length is None else mean_length
    return [e / scale for e in edits]


def mean_reference_length(refs: Sequence[str], unit: str = "char") -> float:
    """The mean length of the normalised references, in characters (spaces count) or words."""
    r, _ = _prepare(refs, refs)
    return sum(o.hits for o in map(_process(unit), r, r)) / len(r)


def _process(unit: str):
    if unit not in ("char", "word"):
        raise ValueError(f"unit {unit!r}: expected 'char' or 'word'")
    return jiwer.process_characters if unit == "char" else jiwer.process_words
