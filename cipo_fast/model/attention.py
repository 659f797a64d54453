"""Packed attention: one flat stream of sequences per micro-batch, each attending only to itself.

A micro-batch is one token stream holding several sequences back to back (`cipo_fast.data.packing`). On
CUDA with flash-attn installed, transformers' `flash_attention_2` takes the sequence boundaries
(`cu_seq_lens_*`). Everywhere else the registered `cipo_varlen` attention runs causal SDPA once per
sequence: exact isolation, no `[T, T]` mask, and SDPA's flash kernel (O(T) memory) instead of the masked
math path a 4D block-diagonal mask would force (which also costs `T^2` memory and compute across
sequences). A segment may also attend to a prefix range of the stream (`cipo_prefixes`): how a pair's
rejected side sees the prefix it shares with the chosen side when the pair is packed with prefix sharing.

A prefix-sharing segment (queries: its own T tokens; keys: the P prefix tokens, then its own) is causal
attention *lower-right* aligned, which SDPA's `is_causal` (top-left) is not, so it needs a mask and the
math path: `[H, T, P + T]` scores in memory and no skipping of the masked half. For long segments the
prefix's own queries are put in front instead: `[P + T]` queries over `[P + T]` keys is plain causal
attention (flash kernel), whose last T rows are exactly the segment's (the prefix rows are dropped, and
get no gradient from here). It costs (P + T)^2 / 2 scores against the math path's T (P + T), and the
flash kernel is slower per score on small blocks; measured on the AMD EPYC host (9 heads, 3 KV heads,
d 64, forward + backward): P = 64, T = 4096: 702 ms padded vs 1415 ms masked; T = 2048: 221 vs 411 ms;
T = 256: 8.7 vs 7.4 ms; P = T = 512: 61 vs 45 ms. Hence padded when T >= `PADDED_MIN_TOKENS` and
P <= T / 2.

Under bf16 autocast on the CPU, a segment shorter than `BF16_MIN_TOKENS` runs its attention in fp32
(autocast off, q / k / v upcast; the output goes back to bf16 in the next matmul): PyTorch's CPU flash
kernel is slower in bf16 than in fp32 on short blocks. Measured on the AMD EPYC host (avx512_bf16; 8
segments of T tokens, 9 heads, 3 KV heads, d 64, forward + backward), bf16 / fp32 time: T = 128: 2.17,
T = 256: 1.29, T = 512: 0.75, T = 1024: 0.80.

Outside packed training calls (generation with a KV cache), `cipo_varlen` is plain SDPA with the mask
transformers builds.
"""

from __future__ import annotations

import importlib.util
import itertools

import torch
import torch.nn.functional as F

VARLEN_ATTN = "cipo_varlen"
# a prefix-sharing segment this long (and its prefix at most half as long) runs padded
PADDED_MIN_TOKENS = 1024
# under CPU bf16 autocast, shorter segments attend in fp32 (module docstring)
BF16_MIN_TOKENS = 384


def _sdpa(q, k, v, **kw):
    """`F.scaled_dot_product_attention`, in fp32 for a short segment under CPU bf16 autocast."""
    if q.device.type == "cpu" and q.shape[2] < BF16_MIN_TOKENS and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw)
    return F.scaled_dot_product_attention(q, k, v, **kw)


def _varlen_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal SDPA per packed sequence. query [1, H, T, D], key/value [1, Hkv, T, D] -> [1, T, H, D]."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[2] != key.shape[2]:
        # not a packed training call (e.g. generation with a KV cache): plain SDPA with the given mask
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    assert query.shape[0] == 1, "packed attention expects a batch of one flat stream"
    bounds = cu.tolist()
    prefixes = kwargs.get("cipo_prefixes")
    prefixes = prefixes if prefixes is not None else [(0, 0)] * (len(bounds) - 1)
    gqa = query.shape[1] != key.shape[1]
    drop = dropout if module.training else 0.0
    outs = []
    for (a, b), (pa, pb) in zip(itertools.pairwise(bounds), prefixes):
        if pb > pa:  # the segment's queries see the whole prefix, then their own tokens causally
            k = torch.cat((key[:, :, pa:pb], key[:, :, a:b]), dim=2)
            v = torch.cat((value[:, :, pa:pb], value[:, :, a:b]), dim=2)
            if b - a >= PADDED_MIN_TOKENS and 2 * (pb - pa) <= b - a:  # the module docstring's rule
                q = torch.cat((query[:, :, pa:pb], query[:, :, a:b]), dim=2)
                full = _sdpa(q, k, v, is_causal=True, scale=scaling, dropout_p=drop, enable_gqa=gqa)
                outs.append(full[:, :, pb - pa :])
                continue
            mask = torch.ones(b - a, pb - pa + b - a, dtype=torch.bool, device=query.device).tril(pb - pa)
            outs.append(
                _sdpa(query[:, :, a:b], k, v, attn_mask=mask, scale=scaling, dropout_p=drop, enable_gqa=gqa)
            )
        else:
            outs.append(
                _sdpa(
                    query[:, :, a:b],
                    key[:, :, a:b],
                    value[:, :, a:b],
                    is_causal=True,
                    scale=scaling,
                    dropout_p=drop,
                    enable_gqa=gqa,
                )
            )
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _varlen_mask(attention_mask=None, **kwargs):
    """No mask for packed training calls (isolation comes from `cu_seq_lens`); SDPA's mask for generation."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


def register_varlen_attention() -> None:
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(VARLEN_ATTN, _varlen_sdpa)
    AttentionMaskInterface.register(VARLEN_ATTN, _varlen_mask)


def pick_attention(device: torch.device) -> str:
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return VARLEN_ATTN


def packed_kwargs(cu_seqlens: torch.Tensor, max_seqlen: int, prefixes: tuple | None = None) -> dict:
    """The keyword arguments transformers forwards to the attention function for packed sequences."""
    kw = dict(
        cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=max_seqlen, max_length_k=max_seqlen
    )
    if prefixes is not None:
        kw["cipo_prefixes"] = prefixes
    return kw
