"""GrowingCache: the same keys, values and outputs as transformers' DynamicCache, past every doubling."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaModel, MistralConfig, MistralModel

from flow_omni import FlowOmni, FlowOmniConfig, GenerationConfig, Sample
from flow_omni.layout import STATE_GEN, STATE_START
from flow_omni.models.kv_cache import MIN_CAPACITY, GrowingCache, GrowingLayer


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return LlamaModel(cfg).eval()


def _decode(model, cache, prompt: int, steps: int, batch: int = 2) -> tuple[list[torch.Tensor], object]:
    """Hidden states of a prompt then ``steps`` one-position steps, with a left-padded first item."""
    torch.manual_seed(1)
    x = torch.randn(batch, prompt + steps, model.config.hidden_size)
    mask = torch.ones(batch, prompt, dtype=torch.long)
    mask[0, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    outs = []
    with torch.no_grad():
        out = model(inputs_embeds=x[:, :prompt], attention_mask=mask, position_ids=pos, past_key_values=cache)
        outs.append(out.last_hidden_state)
        for t in range(prompt, prompt + steps):
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], 1)
            pos = pos[:, -1:] + 1
            out = model(inputs_embeds=x[:, t : t + 1], attention_mask=mask, position_ids=pos, past_key_values=cache)
            outs.append(out.last_hidden_state)
    return outs, cache


def test_growing_cache_matches_dynamic_cache_across_doublings(llama):
    steps = 3 * MIN_CAPACITY  # the buffers double twice
    ref, ref_cache = _decode(llama, DynamicCache(), prompt=10, steps=steps)
    got, cache = _decode(llama, GrowingCache(llama.config), prompt=10, steps=steps)
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    assert cache.layers[0]._keys.shape[-2] > 2 * MIN_CAPACITY  # it did grow
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(cache.layers, ref_cache.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    assert cache.get_seq_length() == ref_cache.get_seq_length() == 10 + steps


def test_growing_cache_writes_in_place_between_doublings(llama):
    """A step's rows go into the buffer it already has; a new buffer only when it is full."""
    cache = GrowingCache(llama.config)
    x = torch.randn(1, 200, llama.config.hidden_size)
    buffers, capacity = set(), []
    with torch.no_grad():
        for t in range(200):
            llama(inputs_embeds=x[:, t : t + 1], position_ids=torch.tensor([[t]]), past_key_values=cache)
            layer = cache.layers[0]
            buffers.add(layer._keys.data_ptr())
            capacity.append(layer._keys.shape[-2])
            assert layer.keys.data_ptr() == layer._keys.data_ptr()  # a view of the buffer, not a copy
    assert sorted(set(capacity)) == [MIN_CAPACITY, 2 * MIN_CAPACITY + 2, 4 * MIN_CAPACITY + 6]
    assert len(buffers) == len(set(capacity))


def test_growing_cache_edits_keep_the_buffers_in_step(llama):
    _, cache = _decode(llama, GrowingCache(), prompt=10, steps=20)
    _, ref = _decode(llama, DynamicCache(), prompt=10, steps=20)
    for c in (cache, ref):
        c.crop(-5)
        c.reorder_cache(torch.tensor([1, 0]))
        c.batch_repeat_interleave(2)
        c.batch_select_indices(torch.tensor([0, 3]))
    x = torch.randn(2, 1, llama.config.hidden_size)
    pos = torch.tensor([[25], [25]])
    with torch.no_grad():
        a = llama(inputs_embeds=x, position_ids=pos, past_key_values=ref).last_hidden_state
        b = llama(inputs_embeds=x, position_ids=pos, past_key_values=cache).last_hidden_state
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(cache.layers, ref.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    assert cache.get_seq_length() == 26 and cache.layers[0]._n == 26


def test_sliding_window_layers_keep_their_kind():
    cfg = MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
    )
    model = MistralModel(cfg).eval()
    cache = GrowingCache(cfg)
    assert not any(isinstance(layer, GrowingLayer) for layer in cache.layers)
    ref, _ = _decode(model, DynamicCache(config=cfg), prompt=6, steps=20)
    got, _ = _decode(model, cache, prompt=6, steps=20)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_generation_with_either_cache_is_the_same():
    """A speaking model (untrained, biased to speak every step) past two doublings of the buffers."""
    torch.manual_seed(0)
    model = FlowOmni(FlowOmniConfig.preset("tiny", r=4)).eval()
    with torch.no_grad():
        model.state_head.bias[STATE_START] = model.state_head.bias[STATE_GEN] = 100.0
    speech = model.prepare_audio(0.1 * torch.randn(8000))
    prompts = [Sample("T2A", prompt_text="hello there"), Sample("A2A", prompt_audio=speech)]
    out, used = {}, []
    forward = model.backbone.base_model.forward

    def spy(*args, past_key_values=None, **kwargs):
        used.append(type(past_key_values))
        return forward(*args, past_key_values=past_key_values, **kwargs)

    model.backbone.base_model.forward = spy
    for cache in ("growing", "dynamic"):
        used.clear()
        out[cache] = model.generate(prompts, GenerationConfig(max_new_positions=150, steps=2, kv_cache=cache))
        assert set(used) == {GrowingCache if cache == "growing" else DynamicCache}
    for a, b in zip(out["growing"], out["dynamic"]):
        assert a.text_ids == b.text_ids and a.states == b.states and a.positions == b.positions
        torch.testing.assert_close(a.speech_tokens, b.speech_tokens, rtol=1e-4, atol=1e-4)
    assert out["growing"][0].speech_tokens.shape[0] > 2 * MIN_CAPACITY
