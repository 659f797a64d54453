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

On a CPU the passes between the GEMMs are torch ops on the buffer in place (`_TorchRows`). On a GPU they
are two Triton kernels (`cipo_fast.csrc_triton.fused_rows`, `_TritonRows`: log-sum-exp and z[y] in one
read, dz in one read and one write, where torch ops take six round trips through HBM), and with fp16 /
bf16 inputs the three GEMMs run on the 16-bit operands with fp32 outputs (`MixedGemms`): the logits are
fp32-accurate up to the inputs' own rounding, no fp32 copy of W is made. The Triton kernels of
`sequence_logprobs` (4 GEMM-sized passes, logits never in memory) remain the trainer's default on CUDA;
`--backend chunked` selects this op there (`bench/gpu_ops.py` measures both).

The gradients are computed in the forward pass; `backward` scales them by the incoming gradient. The loss
must decompose over the groups: `loss_of(groups, logps)` returns the summed loss of the listed groups from
the `[S]` vector of per-sequence sums, reading only those groups' sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cipo_fast.ops.head_gemms import GradGemms, MixedGemms

# One chunk's `[C, V]` fp32 buffer. CPU: C = 256 MiB / (4 V) tokens (1365 at V = 49152, an R-TOFU-length
# pair; a longer group falls back to two sweeps). CUDA: up to 4 GiB (1/16 of the GPU's memory if less):
# at V = 151936 a pair of 2 x 3.5k tokens in one sweep, where Liger's chunk of one pair is as large.
_CHUNK_BYTES = 256 * 2**20
_CHUNK_BYTES_CUDA = 4 * 2**30


def default_chunk_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return _CHUNK_BYTES
    return min(_CHUNK_BYTES_CUDA, torch.cuda.get_device_properties(device).total_memory // 16)


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


class _TorchRows:
    """The passes between the GEMMs as torch ops on the chunk buffer, in place: z -> e = exp(z - max z) ->
    dz (the CPU path: the buffer rows are cache-resident while an op sweeps them)."""

    def stats(self, z, y):
        """(lse, z[y], state) of the chunk's logits; afterwards the buffer holds e, the state its row sums."""
        zy = z.gather(1, y[:, None])[:, 0]
        zmax = z.amax(dim=1)
        sumexp = z.sub_(zmax[:, None]).exp_().sum(dim=1)
        return zmax + sumexp.log(), zy, sumexp

    def grad(self, z, y, lse, g, sumexp, gemms):
        """dz = g (onehot(y) - p) as the GEMMs' operand; `sumexp` None: z holds recomputed logits."""
        if sumexp is not None:  # -g p = -g e / sum e, one pass over the buffer
            dz = z.mul_((-g / sumexp)[:, None])
        else:
            dz = z.sub_(lse[:, None]).exp_().mul_(-g[:, None])
        dz[torch.arange(z.shape[0], device=z.device), y] += g
        return gemms.operand(dz)


class _TritonRows:
    """The same passes as two Triton kernels (`cipo_fast.csrc_triton.fused_rows`): the buffer keeps the
    logits, dz goes to the operand dtype -- in place in fp32, else into one buffer of that dtype."""

    def __init__(self, rows: int, vocab: int, operand_dtype: torch.dtype, device):
        from cipo_fast.csrc_triton import fused_rows

        self.k = fused_rows
        self.low = None
        if operand_dtype != torch.float32:
            self.low = torch.empty(rows, vocab, dtype=operand_dtype, device=device)

    def stats(self, z, y):
        lse, zy = self.k.row_lse(z, y)
        return lse, zy, None

    def grad(self, z, y, lse, g, _state, _gemms):
        return self.k.row_grad(z, y, lse, g, z if self.low is None else self.low[: z.shape[0]])


def _fused(h, w, y, seq_of, shared_of, group_rows, num_seqs, loss_of, budget, need_dh, need_dw, gemms, rows):
    """Active rows only: h [M, d], y [M], seq_of / shared_of [M] (shared_of: num_seqs = none); `gemms`
    (`GradGemms` or `MixedGemms` of h, w) does the GEMMs, `rows` (`_TorchRows` / `_TritonRows`) the
    passes between them. Returns (loss, logps [S], dh [M, d] or None, dw [V, d] or None), in the compute
    dtype `gemms.cdt`."""
    m, cdt = h.shape[0], gemms.cdt
    ends = [0] + [b for _, b in group_rows]
    if m and (ends[-1] != m or any(a != e for (a, _), e in zip(group_rows, ends))):
        raise ValueError("group_bounds must cover every masked-in position, in order, without gaps")
    logps = torch.zeros(num_seqs + 1, dtype=cdt, device=h.device)  # the last slot: "not shared"
    dh = torch.empty(h.shape, dtype=cdt, device=h.device) if need_dh else None
    dw = torch.zeros(w.shape, dtype=cdt, device=w.device) if need_dw else None
    total = torch.zeros((), dtype=cdt, device=h.device)
    buf = torch.empty(min(budget, m), w.shape[0], dtype=cdt, device=h.device)  # reused by every chunk
    for g0, g1 in _chunks(group_rows, budget):
        r0, r1 = group_rows[g0][0], group_rows[g1 - 1][1]
        pieces = [(s, min(s + budget, r1)) for s in range(r0, r1, budget)]
        keep = len(pieces) == 1  # the chunk's logits stay in memory between the two halves
        lse = torch.empty(r1 - r0, dtype=cdt, device=h.device)
        for a, b in pieces:
            z = gemms.logits(slice(a, b), buf[: b - a])  # GEMM 1
            lse[a - r0 : b - r0], zy, state = rows.stats(z, y[a:b])
            logp = zy - lse[a - r0 : b - r0]
            logps.index_add_(0, seq_of[a:b], logp)
            if shared_of is not None:
                logps.index_add_(0, shared_of[a:b], logp)
        with torch.enable_grad():
            lp = logps[:num_seqs].detach().requires_grad_()
            part = loss_of(torch.arange(g0, g1, device=h.device), lp)
            (g_seq,) = torch.autograd.grad(part, lp, allow_unused=True)
        total += part.detach()
        if g_seq is None:  # the chunk's loss does not depend on its log-probs (a zero-weight part)
            if need_dh:
                dh[r0:r1] = 0
            continue
        g_ext = torch.cat([g_seq.to(cdt), g_seq.new_zeros(1, dtype=cdt)])
        for a, b in pieces:
            g = g_ext[seq_of[a:b]]
            if shared_of is not None:
                g = g + g_ext[shared_of[a:b]]
            if not keep:  # recomputed
                z, state = gemms.logits(slice(a, b), buf[: b - a]), None
            dz = rows.grad(z, y[a:b], lse[a - r0 : b - r0], g, state, gemms)
            if need_dh:
                gemms.dh(dz, dh[a:b])  # GEMM 2
            if need_dw:
                gemms.dw(dz, slice(a, b), dw)  # GEMM 3
    return total, logps[:num_seqs], dh, dw


class _FusedGroupLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, mask, seq_ids, shared_ids, plan):
        group_bounds, num_seqs, loss_of, budget, grad_dtype, row_ops = plan
        idx = mask.nonzero()[:, 0]
        cdt = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        h_in = hidden.index_select(0, idx)
        if MixedGemms.applies(h_in, weight):  # CUDA, 16-bit: no fp32 copies, fp32 GEMM outputs
            h, w = h_in, weight
            gemms = MixedGemms(h, w)
        else:
            h, w = h_in.to(cdt), weight.to(cdt)
            gemms = GradGemms(h, w, grad_dtype, (h_in, weight))  # bf16 inputs serve as the bf16 operands
        if row_ops == "triton":
            rows_impl = _TritonRows(min(budget, h.shape[0]), w.shape[0], gemms.operand_dtype, h.device)
        else:
            rows_impl = _TorchRows()
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
            gemms,
            rows_impl,
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
    chunk_bytes: int | None = None,
    grad_dtype: torch.dtype | None = None,
    row_ops: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-sequence log-prob sums `[num_seqs]`, detached) with the loss's gradient computed in the
    pass (module docstring). Differentiable w.r.t. `hidden` and `weight` through the loss only.

    hidden [N, d], weight [V, d], targets / mask / seq_ids [N] as for `sequence_logprobs`; `shared_ids`
    [N]: the second sequence a prefix-shared position counts for (`num_seqs` = none). `group_bounds`: the
    stream positions `[start, end)` of each group, in order, covering every masked-in position;
    `loss_of(group_indices, logps)` the summed loss of those groups. `grad_dtype`: the operand dtype of
    GEMMs 2 and 3 (e.g. bf16 for bf16 inputs on a CPU with bf16 units; `head_gemms.GradGemms`). `chunk_bytes`:
    the `[C, V]` buffer's size (None: `default_chunk_bytes` of the device). `row_ops`:
    the passes between the GEMMs as torch ops ("torch") or Triton kernels ("triton": CUDA, or CPU tensors
    under TRITON_INTERPRET=1); "auto" is Triton on CUDA (but for fp64), torch elsewhere.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden [N, d] and weight [V, d] expected, got {tuple(hidden.shape)}, {tuple(weight.shape)}"
        )
    if row_ops not in ("auto", "torch", "triton"):
        raise ValueError(f"row_ops: expected 'auto', 'torch' or 'triton', got {row_ops!r}")
    if row_ops == "auto":  # the Triton row kernels read fp32 logits: fp64 stays on torch ops
        row_ops = "triton" if hidden.is_cuda and hidden.dtype != torch.float64 else "torch"
    budget = chunk_tokens(weight.shape[0], chunk_bytes or default_chunk_bytes(hidden.device))
    plan = (group_bounds, num_seqs, loss_of, budget, grad_dtype, row_ops)
    return _FusedGroupLoss.apply(hidden, weight, targets, mask, seq_ids, shared_ids, plan)
