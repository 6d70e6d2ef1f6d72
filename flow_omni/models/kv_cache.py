"""A key/value cache for step-by-step decoding whose appends do not copy what is already cached.

`transformers`' ``DynamicCache`` appends each step's keys and values with ``torch.cat``, which copies
the whole cache: at position ``n`` a step moves ``n`` rows per layer, so the cost of a step grows
with the position. :class:`GrowingCache` keeps each layer's keys and values in a buffer with spare
room that doubles when full, writes a step's rows in place, and hands attention a view of the filled
part: the same tensors ``DynamicCache`` would return, without the copy.

It is for decoding under ``torch.no_grad()``: the views share their buffer's version counter, so
autograd would refuse a backward through keys that a later step has written next to.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

#: Rows a layer's buffer holds at first (it doubles from there).
MIN_CAPACITY = 64


class GrowingLayer(DynamicLayer):
    """One layer's keys and values ``(B, H, n, D)``, as views of buffers ``(B, H, capacity, D)``."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._adopt(key_states[..., :0, :], value_states[..., :0, :])

    def _adopt(self, keys: torch.Tensor, values: torch.Tensor, room: int = 0) -> None:
        """Make ``keys``/``values`` the cached rows, in new buffers with space for ``room`` more."""
        n = keys.shape[-2]
        capacity = max(MIN_CAPACITY, 2 * (n + room))
        self._keys = keys.new_empty(*keys.shape[:-2], capacity, keys.shape[-1])
        self._values = values.new_empty(*values.shape[:-2], capacity, values.shape[-1])
        self._keys[..., :n, :] = keys
        self._values[..., :n, :] = values
        self._n = n
        self.keys, self.values = self._keys[..., :n, :], self._values[..., :n, :]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self._n, key_states.shape[-2]
        if n == 0 and key_states.shape[:-2] != self._keys.shape[:-2]:  # still empty: take the batch as it comes
            self._adopt(key_states[..., :0, :], value_states[..., :0, :], room=add)
        if n + add > self._keys.shape[-2]:
            self._adopt(self.keys, self.values, room=add)
        self._keys[..., n : n + add, :] = key_states
        self._values[..., n : n + add, :] = value_states
        self._n = n + add
        self.keys, self.values = self._keys[..., : self._n, :], self._values[..., : self._n, :]
        return self.keys, self.values

    # The inherited edits (crop, beam reorder, batch selection) replace ``keys``/``values`` with new
    # tensors; the buffers then follow them.
    def _follow(self) -> None:
        if self.is_initialized:
            self._adopt(self.keys, self.values)

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._follow()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._follow()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._follow()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._follow()

    def offload(self):
        raise NotImplementedError("GrowingLayer does not offload; use DynamicCache(offloading=True)")

    def reset(self) -> None:
        self._keys = self._values = None
        self._n = 0
        super().reset()


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` whose full-attention layers are :class:`GrowingLayer` s.

    With the model's ``config``, the layers follow its layer types as ``DynamicCache``'s do (a
    sliding-window layer keeps its own kind); without, a growing layer is added per attention layer as
    the model first writes it.
    """

    def __init__(self, config=None) -> None:
        super().__init__(config=config)
        if self.layers:
            self.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]
        else:
            self.layer_class_to_replicate = GrowingLayer
