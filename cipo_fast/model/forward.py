"""The forward pass of a packed micro-batch, ending in completion log-prob sums instead of logits.

The LM head is not run by the model: `forward_hidden` returns final hidden states and the loss path calls
`cipo_fast.ops.logprobs.sequence_logprobs` with the output-embedding weight (tied or not). Models that
transform logits are handled from their config (`final_logit_softcapping`, `logit_scale`,
`logits_scaling`: `HeadSpec`), and `check_logits_path` compares the fused path against the model's own
logits on a probe, so a model with some other transform fails loudly instead of training on wrong
log-probs. `token_stats` keeps the per-token values instead of sums, with the mean and variance of
`log p` under the model's own distribution (membership inference, `cipo_fast.eval.mia`).

Under FSDP2 (`cipo_fast.train.distributed.shard_model`) the decoder is entered through a forward method of
the sharded root (`SHARDED_DECODER`), so FSDP gathers the embeddings, final norm and LM head around it,
and the head weight is read after that forward, when it is whole (`lm_head_weight`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from cipo_fast.model.attention import VARLEN_ATTN, packed_kwargs
from cipo_fast.model.loading import base_model


def supports_prefix_sharing(model) -> bool:
    """Whether the model's attention reads the prefix ranges of prefix-shared packing."""
    return getattr(base_model(model).config, "_attn_implementation", None) == VARLEN_ATTN


@dataclass(frozen=True)
class HeadSpec:
    """How final hidden states become logits: `z = softcap(scale * h W^T)`."""

    scale: float = 1.0
    softcap: float | None = None


def head_spec(model) -> HeadSpec:
    cfg = base_model(model).config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    scale = 1.0
    if getattr(text_cfg, "logit_scale", None) not in (None, 1.0):  # Cohere: logits * logit_scale
        scale *= float(text_cfg.logit_scale)
    if getattr(text_cfg, "logits_scaling", None) not in (None, 1.0):  # Granite: logits / logits_scaling
        scale /= float(text_cfg.logits_scaling)
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    return HeadSpec(scale=scale, softcap=float(softcap) if softcap else None)


# the attribute `shard_model` sets on a sharded root: its decoder call, registered as an FSDP forward method
SHARDED_DECODER = "cipo_sharded_decoder"


def _head(model):
    head = base_model(model).get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError(
            "the model has no bias-free output embedding (LM head); cipo-fast cannot fuse its head"
        )
    return head


def compute_device(model) -> torch.device:
    """Where the model computes: its head weight's device, or, for a sharded weight (a DTensor, whose
    shards FSDP2 may keep in host memory), its mesh's device."""
    weight = _head(model).weight
    if not hasattr(weight, "device_mesh"):
        return weight.device
    kind = weight.device_mesh.device_type
    return torch.device(kind, torch.cuda.current_device()) if kind == "cuda" else torch.device(kind)


def lm_head_weight(model) -> torch.Tensor:
    """The LM-head weight `[V, d]` as the fused op needs it: whole. Under FSDP2 it is whole after
    `forward_hidden` (the root's group stays gathered until its backward); a weight that is still a
    sharded DTensor (read before that forward, or a head sharded on its own) is gathered here
    differentiably: all-gather now, and in the backward its gradient, `Partial` on every rank, summed and
    scattered back to the shards (the sum FSDP's reductions use here too)."""
    weight = _head(model).weight
    if hasattr(weight, "full_tensor"):  # a DTensor
        from torch.distributed.tensor import Partial

        weight = weight.full_tensor(grad_placements=[Partial()] * weight.device_mesh.ndim)
    return weight


def forward_hidden(
    model,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    prefixes: tuple | None = None,
) -> torch.Tensor:
    """Final hidden states `[T, d]` of a packed micro-batch (no logits are computed)."""
    if prefixes is not None and not supports_prefix_sharing(model):
        raise ValueError(
            "a prefix-shared micro-batch needs the cipo_varlen attention; this model uses "
            f"{base_model(model).config._attn_implementation!r} (pack without share_prefix)"
        )
    decoder = getattr(model, SHARDED_DECODER, None) or base_model(model).get_decoder()
    out = decoder(
        input_ids=input_ids[None],
        position_ids=position_ids[None],
        use_cache=False,
        **packed_kwargs(cu_seqlens, max_seqlen, prefixes),
    )
    return out.last_hidden_state[0]


def check_logits_path(model, tokenizer, backend: str = "auto", tol: float = 1e-3) -> None:
    """Compare fused log-probs with the model's own logits on a probe; raise if they disagree."""
    from cipo_fast.ops.logprobs import token_logprobs

    device = compute_device(model)
    ids = (
        tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids[0].to(device)
    )
    n = ids.numel()
    pos = torch.arange(n, device=device)
    cu = torch.tensor([0, n], dtype=torch.int32, device=device)
    spec = head_spec(model)
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, :-1].float()
        expect = torch.log_softmax(logits, -1).gather(1, ids[1:, None])[:, 0]
        h = forward_hidden(model, ids, pos, cu, n)[:-1] * spec.scale
        got = token_logprobs(h, lm_head_weight(model), ids[1:], backend=backend, softcap=spec.softcap)
    err = (got - expect).abs().max().item()
    if err > tol * max(1.0, expect.abs().max().item()):
        raise ValueError(
            f"{type(base_model(model)).__name__}: log-probs from final hidden states and the LM head differ from the "
            f"model's own logits by {err:.3g}; the model transforms its logits in a way cipo-fast does not know "
            "(supported: final_logit_softcapping, logit_scale, logits_scaling)"
        )


def _head_inputs(model, mb, autocast_dtype):
    """(hidden [T, d] scaled, head weight [V, d] in one dtype, head spec, micro-batch on the device, the
    head's gradient-GEMM dtype: under CPU autocast its dH / dW GEMMs run in bf16 like every decoder matmul,
    the logits GEMM and the log-softmax in fp32 (`ops.head_gemms.GradGemms`); None elsewhere)."""
    spec = head_spec(model)
    device = compute_device(model)
    mb = mb.to(device)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with ctx:
        hidden = forward_hidden(
            model, mb.input_ids, mb.position_ids, mb.cu_seqlens, mb.max_seqlen, mb.prefixes
        )
    weight = lm_head_weight(model)  # after the forward: whole under FSDP2
    if spec.scale != 1.0:
        hidden = hidden * spec.scale
    if autocast_dtype is not None:  # the fused op wants one dtype; it accumulates in fp32 regardless
        hidden, weight = hidden.to(autocast_dtype), weight.to(autocast_dtype)
    else:
        hidden = hidden.to(weight.dtype)
    grad_dtype = autocast_dtype if device.type == "cpu" else None
    return hidden, weight, spec, mb, grad_dtype


def micro_batch_logps(
    model, mb, backend: str = "auto", autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Per-sequence completion log-prob sums `[S]` (fp32) of a packed micro-batch; differentiable."""
    from cipo_fast.ops.logprobs import sequence_logprobs, token_logprobs

    hidden, weight, spec, mb, grad_dtype = _head_inputs(model, mb, autocast_dtype)
    if mb.shared_ids is not None:  # shared positions count for both sides of their pair
        logp = token_logprobs(
            hidden,
            weight,
            mb.targets,
            mb.loss_mask,
            backend=backend,
            softcap=spec.softcap,
            grad_dtype=grad_dtype,
        )
        sums = torch.zeros(mb.num_seqs + 1, dtype=logp.dtype, device=logp.device)
        return sums.index_add(0, mb.seq_ids, logp).index_add(0, mb.shared_ids, logp)[: mb.num_seqs]
    return sequence_logprobs(
        hidden,
        weight,
        mb.targets,
        mb.seq_ids,
        mb.loss_mask,
        mb.num_seqs,
        backend=backend,
        softcap=spec.softcap,
        grad_dtype=grad_dtype,
    )


def fuses_loss(model, backend: str) -> bool:
    """Whether `micro_batch_loss` can run for this model and backend: the chunked path (the Triton kernels
    keep the two-pass op), no logit soft-capping."""
    from cipo_fast.ops.logprobs import LogprobOptions, _resolve_backend

    device = compute_device(model)
    probe = torch.empty(0, device=device)
    return head_spec(model).softcap is None and _resolve_backend(probe, LogprobOptions(backend)) == "chunked"


def micro_batch_loss(model, mb, loss_of, autocast_dtype: torch.dtype | None = None):
    """(loss, per-sequence log-prob sums `[S]` detached) of a packed micro-batch whose loss is a sum over its
    groups, `loss_of(group_indices, logps)`; the LM head, log-probs and the loss's gradient in one pass
    (`cipo_fast.ops.fused_loss`). Differentiable w.r.t. the model through the loss."""
    from cipo_fast.ops.fused_loss import fused_group_loss

    hidden, weight, _, mb, grad_dtype = _head_inputs(model, mb, autocast_dtype)
    cu = mb.cu_seqlens.tolist()
    return fused_group_loss(
        hidden,
        weight,
        mb.targets,
        mb.loss_mask,
        mb.seq_ids,
        mb.num_seqs,
        [(cu[a], cu[b]) for a, b in mb.group_seqs],
        loss_of,
        shared_ids=mb.shared_ids,
        grad_dtype=grad_dtype,
    )


def micro_batch_kl(model, frozen, mb, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Per-sequence sums `[S]` of the token-level `KL(frozen || model)` over the completion tokens of a
    packed micro-batch (no prefix sharing); differentiable in the model. `frozen` is `(model, context)`:
    the frozen reference and the context it runs under (`torch.no_grad`, or `disable_adapter` for the
    base model under LoRA)."""
    from cipo_fast.ops.kl import token_kl

    if mb.shared_ids is not None:
        raise ValueError("the KL term needs micro-batches packed without prefix sharing")
    ref_model, ref_ctx = frozen
    spec, ref_spec = head_spec(model), head_spec(ref_model)
    if spec.softcap or ref_spec.softcap:
        raise ValueError("the KL term does not support logit soft-capping")
    device = compute_device(model)
    mb = mb.to(device)
    args = (mb.input_ids, mb.position_ids, mb.cu_seqlens, mb.max_seqlen)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with ctx:
        hidden = forward_hidden(model, *args)
        with torch.no_grad(), ref_ctx():
            ref_hidden = forward_hidden(ref_model, *args) * ref_spec.scale
    weight, ref_weight = (
        lm_head_weight(model),
        lm_head_weight(ref_model),
    )  # after the forward: whole under FSDP2
    kl = token_kl(
        (hidden * spec.scale).to(weight.dtype), weight, ref_hidden.to(weight.dtype), ref_weight, mb.loss_mask
    )
    sums = torch.zeros(mb.num_seqs, dtype=kl.dtype, device=kl.device)
    return sums.index_add(0, mb.seq_ids[mb.loss_mask], kl)


def scoring_groups(seqs, share: bool) -> list[tuple[int, ...]]:
    """`seqs` indices as `score_sequences` packs them: with `share`, neighbours with a common prefix (the
    chosen and rejected sides of a pair listed one after the other) as one group, else one by one."""
    from cipo_fast.data.packing import shared_prefix

    groups, i = [], 0
    while i < len(seqs):
        if share and i + 1 < len(seqs) and shared_prefix(seqs[i], seqs[i + 1]):
            groups.append((i, i + 1))
            i += 2
        else:
            groups.append((i,))
            i += 1
    return groups


def scoring_batches(seqs, token_budget: int, share: bool) -> tuple[list[tuple[int, ...]], list]:
    """`(scoring_groups, their packed micro-batches)`: exactly the forwards `score_sequences` runs."""
    from cipo_fast.data.packing import pack

    groups = scoring_groups(seqs, share)
    return groups, pack([tuple(seqs[j] for j in g) for g in groups], token_budget, share_prefix=share)


@torch.no_grad()
def score_sequences(
    model,
    seqs,
    token_budget: int,
    backend: str = "auto",
    progress: str | None = None,
    share_prefix: bool = True,
    min_batches: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Completion log-prob sums `[len(seqs)]` of independent sequences, packed, without gradients (under
    `autocast_dtype`'s autocast when given: a reference must be scored as its policy trains).

    With `share_prefix` (and an attention that supports it), neighbours with a common prefix, such as the
    chosen and rejected sides of a pair listed one after the other, are packed with the prefix stored once.
    With `min_batches`, the first micro-batch is run again (its result dropped) until that many forwards ran:
    under FSDP2 every rank must run as many (`cipo_fast.train.distributed.score_across`).
    """
    from tqdm.auto import tqdm

    share = share_prefix and supports_prefix_sharing(model)
    groups, batches = scoring_batches(seqs, token_budget, share)
    out = torch.zeros(len(seqs), dtype=torch.float32)
    was_training = model.training
    model.eval()
    for mb in tqdm(batches, desc=progress, disable=progress is None, leave=False):
        where = torch.tensor([j for g in mb.groups for j in groups[g]])
        out[where] = micro_batch_logps(model, mb, backend, autocast_dtype).float().cpu()
    for _ in range(min_batches - len(batches)):
        micro_batch_logps(model, batches[0], backend, autocast_dtype)
    model.train(was_training)
    return out


@torch.no_grad()
def token_stats(
    model, seqs, token_budget: int, backend: str = "auto"
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per sequence, `(logp, mean, var)` of its completion tokens (each `[len(completion_ids)]` fp32, on
    the CPU, in order): the token's log-prob and the mean and variance of `log p` under the model's
    next-token distribution there (`cipo_fast.ops.logprobs.token_logprob_stats`). Packed like
    `score_sequences`, without prefix sharing, without gradients."""
    from cipo_fast.data.packing import pack
    from cipo_fast.ops.logprobs import token_logprob_stats

    spec = head_spec(model)
    out: list = [None] * len(seqs)
    was_training = model.training
    model.eval()
    for mb in pack([(s,) for s in seqs], token_budget):
        mb = mb.to(compute_device(model))
        hidden = forward_hidden(model, mb.input_ids, mb.position_ids, mb.cu_seqlens, mb.max_seqlen)
        weight = lm_head_weight(model)
        hidden = (hidden * spec.scale if spec.scale != 1.0 else hidden).to(weight.dtype)
        stats = token_logprob_stats(
            hidden, weight, mb.targets, mb.loss_mask, backend=backend, softcap=spec.softcap
        )
        # the loss mask holds each sequence's completion positions, in stream order
        per_seq = [x[mb.loss_mask].float().cpu().split(mb.lengths.tolist()) for x in stats]
        for k, g in enumerate(mb.groups):
            out[g] = tuple(x[k] for x in per_seq)
    model.train(was_training)
    return out
