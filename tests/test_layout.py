"""Sequence layouts: parallel (delayed text) and interleaved, and their training targets."""

import pytest
import torch

from flow_omni.errors import FlowOmniError
from flow_omni.layout import (
    IGNORE,
    STATE_GEN,
    STATE_PAD,
    STATE_START,
    STATE_STOP,
    LayoutConfig,
    Sample,
    build_response,
    collate,
    layout_sample,
)
from flow_omni.text import SPECIAL_TOKENS, CharTokenizer

TOK = CharTokenizer()
SP = {t: TOK.special_id(t) for t in SPECIAL_TOKENS}
D = 8


def test_parallel_response_delay():
    speech = torch.randn(5, D)
    text, state, vec = build_response(LayoutConfig(text_delay=2), "T2A", TOK.encode("hi"), speech, SP, D)
    assert text[:3] == TOK.encode("hi") + [SP["<eot>"]]
    assert all(t == SP["<tpad>"] for t in text[3:])
    assert state == [STATE_PAD, STATE_PAD, STATE_START] + [STATE_GEN] * 5 + [STATE_STOP]
    assert torch.equal(vec[3:8], speech) and vec[:3].abs().sum() == 0 and vec[8:].abs().sum() == 0


def test_interleaved_response_chunks():
    cfg = LayoutConfig(kind="interleaved", text_chunk=2, speech_chunk=3)
    speech = torch.randn(7, D)
    text, state, vec = build_response(cfg, "T2A", TOK.encode("abc"), speech, SP, D)
    # 2 text, 3 speech, then the last text token + <eot>, then the remaining 4 speech + STOP.
    assert state == [STATE_PAD] * 2 + [STATE_GEN] * 3 + [STATE_PAD] * 2 + [STATE_GEN] * 4 + [STATE_STOP]
    assert text[:2] == TOK.encode("ab") and text[5:7] == [TOK.encode("c")[0], SP["<eot>"]]
    gen_rows = torch.tensor(state) == STATE_GEN
    assert torch.equal(vec[gen_rows], speech)


def test_targets_are_next_position_in_response():
    s1 = Sample("T2T", prompt_text="ab", target_text="xyz")
    s2 = Sample("T2A", prompt_text="q", target_text="k", target_speech=torch.randn(3, D))
    seqs = [
        layout_sample(LayoutConfig(text_delay=1), s, TOK.encode(s.prompt_text), TOK.encode(s.target_text), 0, SP, D)
        for s in (s1, s2)
    ]
    b = collate(seqs, SP["<pad>"])
    text_t, state_t, speech_mask = b.targets()
    p1 = seqs[0].prompt_length
    # The <sep> position predicts the first response token; prompt positions before it predict nothing.
    assert text_t[0, p1 - 1] == TOK.encode("x")[0]
    assert (text_t[0, : p1 - 1] == IGNORE).all()
    assert text_t[0, p1 + 2] == SP["<eot>"] and (text_t[0, p1 + 3 :] == IGNORE).all()
    # Speech targets: exactly the 3 GEN positions of item 2, predicted from the position before.
    assert int(speech_mask[1].sum()) == 3 and int(speech_mask[0].sum()) == 0
    gen_pos = (b.state[1] == STATE_GEN).nonzero().squeeze(1)
    assert torch.equal(speech_mask[1].nonzero().squeeze(1), gen_pos - 1)
    assert (state_t[1][b.attention_mask[1] == 0] == IGNORE).all()


def test_left_padding_positions():
    seqs = [
        layout_sample(LayoutConfig(), Sample("T2T", prompt_text=t), TOK.encode(t), None, 0, SP, D)
        for t in ("a", "abcd")
    ]
    b = collate(seqs, SP["<pad>"], left_pad=True)
    assert b.attention_mask[0, :3].sum() == 0 and b.attention_mask[0, -1] == 1
    # Both items' last positions carry the position id of their own length - 1.
    assert b.position_ids[0, -1] == len(seqs[0].text) - 1 and b.position_ids[1, -1] == len(seqs[1].text) - 1


def test_bad_samples():
    with pytest.raises(FlowOmniError, match="unknown task"):
        Sample("X2Y", prompt_text="a")
    with pytest.raises(FlowOmniError, match="non-empty prompt_text"):
        Sample("T2A", prompt_text="   ")
    with pytest.raises(FlowOmniError, match="needs prompt_audio"):
        Sample("A2T")
    with pytest.raises(FlowOmniError, match="max_length is 8"):
        layout_sample(
            LayoutConfig(max_length=8), Sample("T2T", prompt_text="x" * 20), TOK.encode("x" * 20), None, 0, SP, D
        )


def test_mix_sample_interleaves_text_and_speech_spans():
    sp1, sp2 = torch.randn(3, D), torch.randn(2, D)
    sample = Sample("MIX", segments=[("ab", None), ("cd", sp1), ("e", None), ("fg", sp2)])
    mix = [(TOK.encode(t), s) for t, s in sample.segments]
    seq = layout_sample(LayoutConfig(), sample, [], None, 0, SP, D, mix)
    assert seq.text[:3] == [SP["<bos>"], SP["<MIX>"], SP["<sep>"]] and seq.prompt_length == 3
    resp_text, resp_state = seq.text[3:], seq.state[3:]
    assert resp_text[:2] == TOK.encode("ab")
    assert resp_state == [STATE_PAD] * 2 + [STATE_START] + [STATE_GEN] * 3 + [STATE_STOP] + [STATE_PAD] + [
        STATE_START
    ] + [STATE_GEN] * 2 + [STATE_STOP] + [STATE_PAD]
    assert resp_text[-1] == SP["<eot>"] and resp_text[7] == TOK.encode("e")[0]
    gen = torch.tensor(seq.state) == STATE_GEN
    assert torch.equal(seq.speech[gen], torch.cat([sp1, sp2]))
    batch = collate([seq], SP["<pad>"])
    text_t, state_t, speech_mask = batch.targets()
    assert int(speech_mask.sum()) == 5 and int((text_t != IGNORE).sum()) == len(resp_text)
    with pytest.raises(FlowOmniError, match="training format"):
        layout_sample(LayoutConfig(), sample, [], None, 0, SP, D)  # no spans: a generation request
    with pytest.raises(FlowOmniError, match="needs segments"):
        Sample("MIX")


def test_aligned_response_places_each_word_where_it_is_spoken():
    cfg = LayoutConfig(kind="aligned", text_delay=2)
    speech = torch.randn(12, D)
    ids = TOK.encode("anna ran")  # pieces "anna" (ids 0-3) and " ran" (ids 4-7)
    text, state, vec = build_response(cfg, "T2A", ids, speech, SP, D, onsets=[(0, 1), (4, 7)])
    tp = SP["<tpad>"]
    assert text[:12] == [tp, *ids[:4], tp, tp, *ids[4:], SP["<eot>"]]
    assert all(t == tp for t in text[12:]) and len(text) == 2 + 12 + 2
    # speech as in the parallel layout: token k at position k + text_delay + 1, so word text leads by d + 1
    parallel = build_response(LayoutConfig(text_delay=2), "T2A", ids, speech, SP, D)
    assert state == parallel[1] and torch.equal(vec, parallel[2])
    # a word due before the one before it has been written follows it at once
    late, _, _ = build_response(cfg, "T2A", ids, speech, SP, D, onsets=[(0, 0), (4, 2)])
    assert late[:9] == [*ids, SP["<eot>"]]
    with pytest.raises(FlowOmniError, match="word onsets"):
        build_response(cfg, "T2A", ids, speech, SP, D)
    with pytest.raises(FlowOmniError, match="increase"):
        build_response(cfg, "T2A", ids, speech, SP, D, onsets=[(0, 1), (9, 3)])
