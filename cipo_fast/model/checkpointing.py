"""Activation checkpointing that keeps attention's outputs instead of recomputing them.

Checkpointing a decoder layer stores only its input and runs the layer's forward pass a second time in
the backward pass. At long sequences the most expensive thing it recomputes is attention: the causal
SDPA kernel costs ~2 T^2 d FLOPs per layer and sequence (QK^T and PV over the causal half) against the
layer's GEMMs' 2 T P_layer (7.1 M T for a SmolLM2-135M layer: attention costs more from T ~ 6k), and the
recomputation adds a second forward pass to the kernel's forward + backward (backward ~2.5 forwards),
~22 % of its time. Yet what the kernel hands to its backward pass is small: its output `[T, H, D]` and
log-sum-exp `[H, T]`, i.e. T (d + H) numbers per layer, about what the checkpoint itself stores (the
layer's input, T d).

So the layers are checkpointed *selectively* (PyTorch's selective activation checkpointing,
`torch.utils.checkpoint.create_selective_checkpoint_contexts`, PyTorch >= 2.4): the outputs of the SDPA
kernels in `saved_ops()` are kept from the forward pass, and the recomputation replays everything else
(norms, projections, RoPE, the MLP, whose outputs are several times T d each) while it takes the
kernel's results from that store. The gradients are the same bits as with full recomputation (the
kernel's inputs are recomputed exactly; tests/test_checkpointing.py compares them and counts the kernel
calls). Memory: + 4 T (d + H) bytes per layer in fp32 — 70 kB per token for SmolLM2-135M (30 layers,
d = 576, H = 9), 1.15 GB at 16k tokens. `keep_attention=False` is plain full recomputation.

This is the reverse of Megatron-LM's "selective activation recomputation" (Korthikanti et al. 2022,
arXiv 2205.05198), which recomputes attention because without a fused kernel its `[H, T, T]`
intermediates are what dominates memory; with a flash kernel there are none, and the FLOPs are what is
left to save.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def saved_ops() -> list:
    """The SDPA kernels this PyTorch has (CPU flash; CUDA flash / memory-efficient / cuDNN) and flash-attn's
    varlen kernel when that package registered it: the ops whose outputs are kept."""
    ops = []
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    ):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops.append(op.default)
    # flash-attn >= 2.6 registers its kernels as torch custom ops (transformers' flash_attention_2)
    with contextlib.suppress(AttributeError, RuntimeError):
        ops.append(torch.ops.flash_attn._flash_attn_varlen_forward.default)
    return ops


def checkpoint_kwargs(keep_attention: bool) -> dict:
    """Keyword arguments of `torch.utils.checkpoint.checkpoint` (non-reentrant; with `keep_attention`, the
    selective policy of the module docstring)."""
    kwargs = {"use_reentrant": False}
    if keep_attention:
        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, saved_ops())
    return kwargs


def enable_checkpointing(model, every: int, keep_attention: bool = True) -> None:
    """Checkpoint every `every`-th decoder layer of a transformers model (`every` >= 1)."""
    kwargs = checkpoint_kwargs(keep_attention)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(kwargs, every_n_layers=every)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False
