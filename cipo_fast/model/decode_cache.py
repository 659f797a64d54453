"""The KV cache of `generation.decode`: allocated once, attended over its filled positions only.

transformers' `StaticCache` allocates `[B, H, max_len, D]` keys and values per layer up front, so a
decoding step only writes its new position (a growing `DynamicCache` concatenates every step, which costs
as much as the LM head at a 135M model's size). But each step then attends over all `max_len` positions,
the unfilled ones masked out: with 768 new tokens, a step early in a trace reads ~10x the keys it has,
and a CPU decode step's attention costs in proportion to the keys it reads.

`decode_cache` is that `StaticCache` with each full-attention layer replaced by a `FilledLayer`: the same
buffers and writes, but attention gets the filled prefix `[:, :, :filled]` (a view, no copy) and the
mask is sized to it (`get_mask_sizes`). The softmax over the masked positions of the full buffer is
exactly zero there, so the outputs are the same up to the order of float additions. Selecting rows
(`Cache.reorder_cache`: shared prefills, ended rows leaving the batch) copies the filled positions only.
Layers of other kinds (sliding windows) are left as `StaticCache` makes them.

Under autocast the keys and values reach the cache in different dtypes (the value projection's output is
bf16; the keys leave the rotary embedding in the fp32 of its cos/sin tables). transformers 5.25 (this
project's venv) allocates each buffer in its own tensor's dtype; 5.17 (the GPU check's machine) allocates
both in the keys' and fails at the first value write. `decode_cache` therefore replaces the full-attention layers
in both forms: `CastSafeLayer` (the whole buffer attended, `decode(filled_only=False)`) allocates each
buffer in its own dtype, and `FilledLayer` is that plus the filled positions.
"""

from __future__ import annotations

from functools import cache

import torch


@cache
def _layer_classes():
    from transformers.cache_utils import StaticLayer

    class CastSafeLayer(StaticLayer):
        """A `StaticLayer` whose value buffer has the values' dtype, whatever the release allocates."""

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor, *args) -> None:
            super().lazy_initialization(key_states, value_states, *args)
            if self.values.dtype != value_states.dtype:
                self.values = torch.zeros_like(self.values, dtype=value_states.dtype)

    class FilledLayer(CastSafeLayer):
        """A `StaticLayer` whose `update` returns the positions written so far, not the whole buffer. Its
        writes must be contiguous from position 0, as `decode`'s are (the prompt, then one per step)."""

        def __init__(self, max_cache_len: int, **kwargs):
            super().__init__(max_cache_len=max_cache_len, **kwargs)
            self.filled = 0

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            keys, values = super().update(key_states, value_states, *args, **kwargs)
            self.filled += key_states.shape[-2]
            return keys[:, :, : self.filled], values[:, :, : self.filled]

        def get_mask_sizes(self, query, *args) -> tuple[int, int]:
            # transformers 5.2x passes the query length; earlier 5.x releases the query's cache positions
            length = query if isinstance(query, int) else int(query.shape[0])
            return self.filled + length, 0

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            """The rows `beam_idx`, filled positions copied (the base class copies the whole allocation:
            at 768 new tokens and a quarter of a trace written, ~4x the bytes, twice the memory at once);
            the rest of the new buffers is written before attention reads it."""
            if not self.is_initialized:
                return
            idx = beam_idx.to(self.keys.device)
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = old.new_empty((idx.numel(), *old.shape[1:]))
                new[:, :, : self.filled] = old[idx, :, : self.filled]
                setattr(self, name, new)

        def reset(self) -> None:
            super().reset()
            self.filled = 0

    return StaticLayer, CastSafeLayer, FilledLayer


def decode_cache(config, max_cache_len: int, filled_only: bool = True):
    """A `StaticCache` for `max_cache_len` positions whose full-attention layers attend over their filled
    positions only (`FilledLayer`), or over the whole buffer (`CastSafeLayer`) without `filled_only`."""
    from transformers import StaticCache

    kv = StaticCache(config=config, max_cache_len=max_cache_len)
    static, whole, filled = _layer_classes()
    for i, layer in enumerate(getattr(kv, "layers", [])):
        if type(layer) is static:
            kv.layers[i] = (filled if filled_only else whole)(max_cache_len=layer.max_cache_len)
    return kv
