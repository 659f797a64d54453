"""The LM head, the log-probs and the loss in one pass: 3 GEMMs instead of 4, 2 when the head is frozen.

`sequence_logprobs` followed by a loss costs four `[tokens, d] x [d, V]`-sized GEMMs: the logits in the
forward pass, and in the backward pass their recomputation, dH and dW, because the loss's gradient
`g_t = dL/dlogp_t` is only known after the forward pass has finished. When the loss is a sum over groups
of sequences (a DPO-family pair, one sequence of an unlearning loss) and a micro-batch holds whole groups
(`cipo_fast.data.packing` never splits a pair), the gradient of one group is known as soon as that
group's log-probs are, so it can be computed while the group's logits are still in memory:

    for each chunk of whole groups (active tokens up to the chunk budget):
        z = h W^T                        [C, V] fp32                                       GEMM 1
        e = exp(z - max z), lse = max z + log sum e, logp_t = z[y_t] - lse_t   (e in z's buffer)
        S_s = sum of logp_t over sequence s's tokens (a prefix-shared token counts for both sides)
        L_chunk = loss of the chunk's groups; g_s = dL_chunk / dS_s    (autograd on [S] numbers)
        dz = g_t (onehot(y_t) - e / sum e)                              (in place in the same buffer)
        dH_chunk = dz W                                                                      GEMM 2
        dW += dz^T h_chunk                          (skipped when the head needs no gradient) GEMM 3

This is the scheme of Liger's fused preference losses (a chunk of whole pairs, gradients computed in the
forward pass and handed out by backward) with cipo-fast's packing: one `[C, V]` buffer, reused in place
for logits, probabilities and their gradient, is the only vocabulary-sized tensor. A group whose active
tokens exceed the budget is done in budget-sized pieces in two sweeps (log-probs, then the recomputed
logits for the gradients: 4 GEMMs, exactly the unfused op), so any length works.

The gradients are computed in the forward pass; `backward` scales them by the incoming gradient. The loss
must decompose over the groups: `loss_of(groups, logps)` returns the summed loss of the listed groups from
the `[S]` vector of per-sequence sums, reading only those groups' sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cipo_fast.ops.logprobs import _GradGemms

# One chunk's `[C, V]` fp32 buffer: C = _CHUNK_BYTES / (4 V) tokens (1365 tokens at V = 49152, an
# R-TOFU-length pair; a longer group falls back to two sweeps).
_CHUNK_BYTES = 256 * 2**20

LossOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def chunk_tokens(vocab: int, chunk_bytes: int = _CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * vocab))


def _chunks(group_rows: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """Consecutive runs of groups [g0, g1) whose active rows fit `budget` (a larger group: a run of its own)."""
    runs, start, size = [], 0, 0
    for g, (a, b) in enumerate(group_rows):
        if size and size + (b - a) > budget:
            runs.append((start, g))
            start, size = g, 0
        size += b - a
    if group_rows:
        runs.append((start, len(group_rows)))
    return runs


def _fused(h, w, y, seq_of, shared_of, group_rows, num_seqs, loss_of, budget, need_dh, need_dw, gemms):
    """Active rows only: h [M, d], y [M], seq_of / shared_of [M] (shared_of: num_seqs = none); `gemms`
    (`_GradGemms` of h, w) does GEMMs 2 and 3. Returns (loss, logps [S], dh [M, d] or None, dw [V, d] or
    None)."""
    m = h.shape[0]
    ends = [0] + [b for _, b in group_rows]
    if m and (ends[-1] != m or any(a != e for (a, _), e in zip(group_rows, ends))):
        raise ValueError("group_bounds must cover every masked-in position, in order, without gaps")
    logps = torch.zeros(num_seqs + 1, dtype=h.dtype, device=h.device)  # the last slot: "not shared"
    dh = torch.empty_like(h) if need_dh else None
    dw = torch.zeros_like(w) if need_dw else None
    total = torch.zeros((), dtype=h.dtype, device=h.device)
    for g0, g1 in _chunks(group_rows, budget):
        r0, r1 = group_rows[g0][0], group_rows[g1 - 1][1]
        pieces = [(s, min(s + budget, r1)) for s in range(r0, r1, budget)]
        keep = len(pieces) == 1  # the chunk's logits stay in memory between the two halves
        lse = torch.empty(r1 - r0, dtype=h.dtype, device=h.device)
        for a, b in pieces:
            z = None  # the previous piece's buffer goes before this one is allocated
            z = h[a:b] @ w.T  # GEMM 1
            zy = z.gather(1, y[a:b, None])[:, 0]
            zmax = z.amax(dim=1)
            sumexp = z.sub_(zmax[:, None]).exp_().sum(dim=1)
            lse[a - r0 : b - r0] = zmax + sumexp.log()
            logp = zy - lse[a - r0 : b - r0]
            logps.index_add_(0, seq_of[a:b], logp)
            if shared_of is not None:
                logps.index_add_(0, shared_of[a:b], logp)
        if not keep:
            z = None  # the gradient sweep recomputes its own buffers
        with torch.enable_grad():
            lp = logps[:num_seqs].detach().requires_grad_()
            part = loss_of(torch.arange(g0, g1, device=h.device), lp)
            (g_seq,) = torch.autograd.grad(part, lp, allow_unused=True)
        total += part.detach()
        if g_seq is None:  # the chunk's loss does not depend on its log-probs (a zero-weight part)
            if need_dh:
                dh[r0:r1] = 0
            continue
        g_ext = torch.cat([g_seq.to(h.dtype), g_seq.new_zeros(1, dtype=h.dtype)])
        for a, b in pieces:
            g = g_ext[seq_of[a:b]]
            if shared_of is not None:
                g = g + g_ext[shared_of[a:b]]
            if keep:  # -g p = -g e / sum e, one pass over the buffer
                dz = z.mul_((-g / sumexp)[:, None])
            else:  # recomputed
                dz = (h[a:b] @ w.T).sub_(lse[a - r0 : b - r0, None]).exp_().mul_(-g[:, None])
            dz[torch.arange(b - a, device=h.device), y[a:b]] += g
            dz = gemms.operand(dz)
            if need_dh:
                gemms.dh(dz, dh[a:b])  # GEMM 2
            if need_dw:
                gemms.dw(dz, slice(a, b), dw)  # GEMM 3
            dz = None
        z = dz = None  # freed before the next chunk allocates its buffer
    return total, logps[:num_seqs], dh, dw


class _FusedGroupLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, mask, seq_ids, shared_ids, plan):
        group_bounds, num_seqs, loss_of, budget, grad_dtype = plan
        idx = mask.nonzero()[:, 0]
        cdt = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        h_in = hidden.index_select(0, idx)
        h, w = h_in.to(cdt), weight.to(cdt)
        # each group's active rows: [first active index >= its first position, ... < its end)
        bounds = torch.tensor(group_bounds, dtype=idx.dtype, device=idx.device).reshape(-1, 2)
        rows = torch.searchsorted(idx, bounds).tolist()
        shared = None if shared_ids is None else shared_ids.index_select(0, idx)
        loss, logps, dh_m, dw = _fused(
            h,
            w,
            targets.index_select(0, idx),
            seq_ids.index_select(0, idx),
            shared,
            [tuple(r) for r in rows],
            num_seqs,
            loss_of,
            budget,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            _GradGemms(h, w, grad_dtype, (h_in, weight)),  # bf16 inputs serve as the bf16 operands
        )
        dh = None  # kept in the compute dtype until backward scales it
        if dh_m is not None:
            dh = hidden.new_zeros(hidden.shape, dtype=cdt).index_copy_(0, idx, dh_m)
        ctx.save_for_backward(*(t for t in (dh, dw) if t is not None))
        ctx.has = (dh is not None, dw is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.mark_non_differentiable(logps)
        return loss, logps

    @staticmethod
    def backward(ctx, grad_loss, _grad_logps):
        saved = list(ctx.saved_tensors)
        dh = (saved.pop(0) * grad_loss).to(ctx.dtypes[0]) if ctx.has[0] else None
        dw = (saved.pop(0) * grad_loss).to(ctx.dtypes[1]) if ctx.has[1] else None
        return dh, dw, None, None, None, None, None


def fused_group_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    seq_ids: torch.Tensor,
    num_seqs: int,
    group_bounds: list[tuple[int, int]],
    loss_of: LossOf,
    *,
    shared_ids: torch.Tensor | None = None,
    chunk_bytes: int = _CHUNK_BYTES,
    grad_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-sequence log-prob sums `[num_seqs]`, detached) with the loss's gradient computed in the
    pass (module docstring). Differentiable w.r.t. `hidden` and `weight` through the loss only.

    hidden [N, d], weight [V, d], targets / mask / seq_ids [N] as for `sequence_logprobs`; `shared_ids`
    [N]: the second sequence a prefix-shared position counts for (`num_seqs` = none). `group_bounds`: the
    stream positions `[start, end)` of each group, in order, covering every masked-in position;
    `loss_of(group_indices, logps)` the summed loss of those groups. `grad_dtype`: the operand dtype of
    GEMMs 2 and 3 (e.g. bf16 for bf16 inputs on a CPU with bf16 units; `logprobs._GradGemms`).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden [N, d] and weight [V, d] expected, got {tuple(hidden.shape)}, {tuple(weight.shape)}"
        )
    budget = chunk_tokens(weight.shape[0], chunk_bytes)
    plan = (group_bounds, num_seqs, loss_of, budget, grad_dtype)
    return _FusedGroupLoss.apply(hidden, weight, targets, mask, seq_ids, shared_ids, plan)
