"""Fused "hidden states -> LM head -> log-softmax -> gather" without `[tokens, vocab]` logits.

Every loss in cipo-fast is a function of per-sequence sums of completion-token log-probs

    S_s = sum_{t in s, mask_t} log p(y_t | h_t),   log p(y | h) = z_y - logsumexp(z),   z = W h.

The textbook path materializes `z` for all tokens in fp32 (`[N, V]`, ~3 GB for 16k tokens at V = 49k) and
keeps it, its log-softmax and their gradients alive. Here one autograd `Function` computes per-token
log-probs and never keeps logits:

* forward: for each block of tokens, `z = h W^T`, an (online) logsumexp, `logp_t = z[y_t] - lse_t`;
  only `lse_t` (fp32, one scalar per token) is saved;
* backward with `g_t = dL/dlogp_t`: recompute `z` blockwise, `dz = g_t (onehot(y_t) - softmax(z))`,
  `dH = dz W`, `dW = dz^T H`.

Masked tokens (prompt, padding) are dropped before the LM head: they cost nothing and contribute exactly
zero to every output and gradient. Per-sequence sums are a deterministic `index_add` over the `[N]`
per-token vector, so one kernel serves token-level metrics and sequence-level losses alike.

Backends (picked explicitly; `auto` means CUDA -> `triton`, anything else -> `chunked`):

* `triton` -- the kernels in `cipo_fast.csrc_triton.logprobs` (CUDA, or CPU under `TRITON_INTERPRET=1`);
* `chunked` -- token-chunked PyTorch, the CPU path; works on any device;
* `reference` -- full logits through `torch.log_softmax`; the spec that tests and benchmarks compare to.

Logit soft-capping (`z -> c * tanh(z / c)`, Gemma-2 style) is supported by `chunked` and `reference`;
`auto` picks `chunked` when it is set. Logit scaling is a multiplication of `hidden` and needs no support.

`token_logprob_stats` (no grad, for membership inference: Min-K%++) also returns, per token, the mean and
the variance of `log p` under the model's own next-token distribution p = softmax(z):

    mean_t = sum_v p_v log p_v = E_p[z] - lse_t,    var_t = sum_v p_v (log p_v)^2 - mean_t^2 = Var_p[z],

through the same three backends: `reference` evaluates these sums on the full log-softmax, `chunked`
on one token chunk at a time (two `[chunk, V]` buffers; the variance as squared deviations from the
mean, which do not cancel), `triton` in the forward kernel's STATS variant (online moments beside the
online logsumexp).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cipo_fast.ops.head_gemms import GradGemms, chunk_buffer

BACKENDS = ("auto", "triton", "chunked", "reference")

# Logits buffer budget for one chunk of the `chunked` backend: chunk * V * 4 bytes.
_CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class LogprobOptions:
    """Options of one call; one object so the autograd `Function` keeps a short signature."""

    backend: str = "auto"
    chunk_size: int | None = None  # tokens per chunk for `chunked`; None: fit `_CHUNK_BYTES`
    softcap: float | None = None  # logits -> softcap * tanh(logits / softcap)
    filter_eps: float | None = None  # triton: skip tiles whose max |onehot(y) - p| (over tokens with g != 0)
    # is below this; 0 = off; None = auto: finfo(dtype).eps / 32 for fp16/bf16, off for fp32
    grad_dtype: torch.dtype | None = None  # chunked: operand dtype of the backward GEMMs (`GradGemms`)


# ----------------------------------------------------------------------------------------------------
# input checks (user-facing: every message names the argument and what was expected)
# ----------------------------------------------------------------------------------------------------


def _check_inputs(hidden, weight, targets, mask, seq_ids=None, num_seqs=None, check_range=True) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(msg)

    for name, t in (("hidden", hidden), ("weight", weight), ("targets", targets), ("mask", mask)):
        need(isinstance(t, torch.Tensor), f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    need(hidden.dim() == 2, f"hidden: expected shape [N, d], got {tuple(hidden.shape)}")
    need(weight.dim() == 2, f"weight: expected shape [V, d], got {tuple(weight.shape)}")
    n, d = hidden.shape
    need(
        weight.shape[1] == d, f"weight: expected [V, {d}] to match hidden [N, {d}], got {tuple(weight.shape)}"
    )
    need(weight.shape[0] > 0, "weight: vocabulary size V must be > 0")
    need(
        hidden.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64),
        f"hidden: expected a floating dtype (fp32/fp16/bf16/fp64), got {hidden.dtype}",
    )
    need(
        weight.dtype == hidden.dtype,
        f"weight: expected dtype {hidden.dtype} (same as hidden), got {weight.dtype}",
    )
    need(
        targets.shape == (n,),
        f"targets: expected shape [{n}] (one per row of hidden), got {tuple(targets.shape)}",
    )
    need(targets.dtype == torch.long, f"targets: expected dtype torch.long, got {targets.dtype}")
    need(mask.shape == (n,), f"mask: expected shape [{n}], got {tuple(mask.shape)}")
    need(mask.dtype == torch.bool, f"mask: expected dtype torch.bool, got {mask.dtype}")
    tensors = {"hidden": hidden, "weight": weight, "targets": targets, "mask": mask}
    if seq_ids is not None:
        need(
            isinstance(seq_ids, torch.Tensor),
            f"seq_ids: expected a torch.Tensor, got {type(seq_ids).__name__}",
        )
        need(seq_ids.shape == (n,), f"seq_ids: expected shape [{n}], got {tuple(seq_ids.shape)}")
        need(seq_ids.dtype == torch.long, f"seq_ids: expected dtype torch.long, got {seq_ids.dtype}")
        tensors["seq_ids"] = seq_ids
    for name, t in tensors.items():
        need(
            t.device == hidden.device,
            f"{name}: expected device {hidden.device} (same as hidden), got {t.device}",
        )
    if num_seqs is not None:
        need(
            isinstance(num_seqs, int) and not isinstance(num_seqs, bool) and num_seqs >= 0,
            f"num_seqs: expected a non-negative int, got {num_seqs!r}",
        )
    if not check_range or n == 0:
        return
    # One host sync for all range checks: a bad id must be a ValueError, never a device-side assert.
    v = weight.shape[0]
    tmin, tmax = targets[mask].aminmax() if bool(mask.any()) else (torch.tensor(0), torch.tensor(0))
    need(
        int(tmin) >= 0 and int(tmax) < v,
        f"targets: ids must be in [0, {v}) where mask is True, got range [{int(tmin)}, {int(tmax)}]",
    )
    if seq_ids is not None and num_seqs is not None:
        smin, smax = seq_ids.aminmax()
        need(int(smin) >= 0, f"seq_ids: expected ids >= 0, got {int(smin)}")
        need(
            int(smax) < num_seqs,
            f"num_seqs: expected more than the largest seq id ({int(smax)}), got num_seqs={num_seqs}",
        )


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    # The chunked path computes in fp32 (fp64 for gradchecks): CPUs have no fast fp16/bf16 GEMM, and on
    # CUDA the fast path is the Triton kernel, which also accumulates in fp32.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _resolve_backend(hidden: torch.Tensor, opts: LogprobOptions) -> str:
    if opts.backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {opts.backend!r}")
    if opts.backend == "auto":
        return "triton" if hidden.is_cuda and opts.softcap is None else "chunked"
    if opts.backend == "triton" and opts.softcap is not None:
        raise ValueError("backend='triton' does not implement logit soft-capping; use backend='chunked'")
    return opts.backend


# ----------------------------------------------------------------------------------------------------
# reference: the spec
# ----------------------------------------------------------------------------------------------------


def reference_token_logprobs(hidden, weight, targets, mask, softcap: float | None = None) -> torch.Tensor:
    """Textbook full-logits log-probs `[N]` in fp32 (0 where `mask` is False); differentiable."""
    cdt = _compute_dtype(hidden)
    logits = hidden.to(cdt) @ weight.to(cdt).T  # [N, d] @ [d, V] -> [N, V]
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logp = torch.log_softmax(logits, dim=-1).gather(1, targets.clamp(0, weight.shape[0] - 1)[:, None])[:, 0]
    return torch.where(mask, logp, torch.zeros_like(logp))


def reference_token_logprob_stats(
    hidden, weight, targets, mask, softcap: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Textbook (logp, mean, var) `[N]` fp32 (fp64 for fp64) from the full log-softmax, as Min-K%++ and
    open-unlearning write them: `mean = sum_v p_v log p_v`, `var = sum_v p_v (log p_v)^2 - mean^2` (0
    where `mask` is False). In fp32 that difference cancels to ~eps * mean^2 when var is small."""
    cdt = _compute_dtype(hidden)
    logits = hidden.to(cdt) @ weight.to(cdt).T  # [N, d] @ [d, V] -> [N, V]
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    lp = torch.log_softmax(logits, dim=-1)  # [N, V]
    p = lp.exp()
    logp = lp.gather(1, targets.clamp(0, weight.shape[0] - 1)[:, None])[:, 0]
    mean = (p * lp).sum(-1)
    var = (p * lp.square()).sum(-1) - mean.square()
    return tuple(torch.where(mask, x, torch.zeros_like(x)) for x in (logp, mean, var))


def reference_sequence_logprobs(
    hidden, weight, targets, seq_ids, mask, num_seqs, softcap=None
) -> torch.Tensor:
    """Textbook per-sequence sums `[num_seqs]` (fp32); the spec for `sequence_logprobs`."""
    logp = reference_token_logprobs(hidden, weight, targets, mask, softcap)
    return torch.zeros(num_seqs, dtype=logp.dtype, device=logp.device).index_add(0, seq_ids, logp)


# ----------------------------------------------------------------------------------------------------
# chunked: token-chunked PyTorch, recompute in backward
# ----------------------------------------------------------------------------------------------------


def _chunk_size(opts: LogprobOptions, vocab: int) -> int:
    if opts.chunk_size is not None:
        if opts.chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int, got {opts.chunk_size}")
        return opts.chunk_size
    return max(16, _CHUNK_BYTES // (4 * vocab))


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, softcap: float | None, buf: torch.Tensor) -> torch.Tensor:
    z = torch.mm(h, w.T, out=buf[: h.shape[0]])  # [C, d] @ [d, V] -> [C, V], fp32
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    return z


def _chunked_forward(h, w, y, opts):
    """h [M, d], w [V, d] in the compute dtype, y [M] -> (logp [M], lse [M]) in the compute dtype."""
    m = h.shape[0]
    logp = torch.empty(m, dtype=h.dtype, device=h.device)
    lse = torch.empty(m, dtype=h.dtype, device=h.device)
    c = _chunk_size(opts, w.shape[0])
    buf = chunk_buffer(h, w, c)
    for s in range(0, m, c):
        z = _chunk_logits(h[s : s + c], w, opts.softcap, buf)
        zy = z.gather(1, y[s : s + c, None])[:, 0]
        zmax = z.amax(dim=1)
        # lse = max + log(sum(exp(z - max))), in place on the chunk buffer
        lse_c = zmax + z.sub_(zmax[:, None]).exp_().sum(dim=1).log_()
        lse[s : s + c] = lse_c
        logp[s : s + c] = zy - lse_c
    return logp, lse


def _chunked_stats(h, w, y, opts):
    """h [M, d], w [V, d] in the compute dtype, y [M] -> (logp, mean, var), each [M] in the compute dtype."""
    m = h.shape[0]
    out = torch.empty(3, m, dtype=h.dtype, device=h.device)  # rows: logp, mean, var
    c = _chunk_size(opts, w.shape[0])
    buf = chunk_buffer(h, w, c)
    for s in range(0, m, c):
        z = _chunk_logits(h[s : s + c], w, opts.softcap, buf)  # [C, V]
        lp = z.sub_(torch.logsumexp(z, dim=1, keepdim=True))  # log p, in place
        p = lp.exp()  # [C, V], the one other buffer
        mean = torch.einsum("cv,cv->c", p, lp)  # sum_v p_v log p_v
        out[0, s : s + c] = lp.gather(1, y[s : s + c, None])[:, 0]
        out[1, s : s + c] = mean
        # var = sum_v p_v (log p_v - mean)^2, on the log-prob buffer in place
        out[2, s : s + c] = torch.einsum("cv,cv->c", p, lp.sub_(mean[:, None]).square_())
    return out[0], out[1], out[2]


def _chunked_backward(h, w, y, g, lse, need_dh: bool, need_dw: bool, opts, inputs=(None, None)):
    """g [M] = dL/dlogp -> dH [M, d] (or None), dW [V, d] (or None), in the compute dtype; `inputs` as
    for `GradGemms`."""
    m = h.shape[0]
    dh = torch.empty_like(h) if need_dh else None
    dw = torch.zeros_like(w) if need_dw else None
    gemms = GradGemms(h, w, opts.grad_dtype, inputs)
    c = _chunk_size(opts, w.shape[0])
    buf = chunk_buffer(h, w, c)
    for s in range(0, m, c):
        hc, yc, gc = h[s : s + c], y[s : s + c], g[s : s + c]
        z = _chunk_logits(hc, w, opts.softcap, buf)
        rows = torch.arange(z.shape[0], device=z.device)
        if opts.softcap is not None:
            # d(c tanh(x/c))/dx = 1 - tanh^2 = 1 - (z/c)^2
            dcap = 1.0 - (z / opts.softcap).square_()
        # dz = g * (onehot(y) - softmax(z)); softmax computed in place as exp(z - lse)
        dz = z.sub_(lse[s : s + c, None]).exp_().mul_(-gc[:, None])
        dz[rows, yc] += gc
        if opts.softcap is not None:
            dz.mul_(dcap)
        dz = gemms.operand(dz)
        if need_dh:
            gemms.dh(dz, dh[s : s + c])
        if need_dw:
            gemms.dw(dz, slice(s, s + c), dw)
    return dh, dw


# ----------------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------------


class _TokenLogprobs(torch.autograd.Function):
    """hidden [N, d], weight [V, d], targets [N], mask [N] -> logp [N] fp32 (0 where masked)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, mask, opts: LogprobOptions, backend: str):
        if backend == "triton":
            from cipo_fast.csrc_triton import logprobs as tk

            logp, lse = tk.logprobs_forward(hidden, weight, targets, mask)
            ctx.save_for_backward(hidden, weight, targets, mask, lse)
        else:
            idx = mask.nonzero()[:, 0]
            cdt = _compute_dtype(hidden)
            h, w = hidden.index_select(0, idx).to(cdt), weight.to(cdt)
            logp_m, lse = _chunked_forward(h, w, targets.index_select(0, idx), opts)
            logp = torch.zeros(hidden.shape[0], dtype=logp_m.dtype, device=hidden.device)
            logp.index_copy_(0, idx, logp_m)
            ctx.save_for_backward(hidden, weight, targets, idx, lse)
        ctx.opts, ctx.backend = opts, backend
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.backend == "triton":
            from cipo_fast.csrc_triton import logprobs as tk

            hidden, weight, targets, mask, lse = ctx.saved_tensors
            dh, dw = tk.logprobs_backward(
                hidden,
                weight,
                targets,
                mask,
                lse,
                grad_logp.float().contiguous(),
                need_dh=need_dh,
                need_dw=need_dw,
                filter_eps=ctx.opts.filter_eps,
            )
            return dh, dw, None, None, None, None
        hidden, weight, targets, idx, lse = ctx.saved_tensors
        cdt = _compute_dtype(hidden)
        h_in = hidden.index_select(0, idx)
        h, w = h_in.to(cdt), weight.to(cdt)
        g = grad_logp.index_select(0, idx).to(cdt)
        dh_m, dw = _chunked_backward(
            h, w, targets.index_select(0, idx), g, lse.to(cdt), need_dh, need_dw, ctx.opts, (h_in, weight)
        )
        dh = None
        if need_dh:
            dh = torch.zeros_like(hidden).index_copy_(0, idx, dh_m.to(hidden.dtype))
        if need_dw:
            dw = dw.to(weight.dtype)
        return dh, dw, None, None, None, None


# ----------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "auto",
    *,
    chunk_size: int | None = None,
    softcap: float | None = None,
    filter_eps: float | None = None,
    grad_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-token log-probs `log softmax(hidden @ weight.T)[t, targets[t]]` as `[N]` float32.

    Entries where `mask` is False (default: all True) are exactly 0 and cost no LM-head compute.
    Differentiable w.r.t. `hidden` and `weight`. `grad_dtype` (chunked): the backward GEMMs' operand
    dtype, e.g. bf16 for bf16 inputs on a CPU with bf16 units (`GradGemms`); None: the compute dtype.
    """
    if mask is None and isinstance(targets, torch.Tensor):
        mask = torch.ones(targets.shape, dtype=torch.bool, device=targets.device)
    _check_inputs(hidden, weight, targets, mask)
    opts = LogprobOptions(backend, chunk_size, softcap, filter_eps, grad_dtype)
    return _token_logprobs(hidden, weight, targets, mask, opts)


def _token_logprobs(hidden, weight, targets, mask, opts: LogprobOptions) -> torch.Tensor:
    backend = _resolve_backend(hidden, opts)
    if backend == "reference":
        return reference_token_logprobs(hidden, weight, targets, mask, opts.softcap)
    if backend == "triton" and hidden.dtype == torch.float64:
        raise ValueError("backend='triton': fp64 is not supported; use backend='chunked' or 'reference'")
    return _TokenLogprobs.apply(hidden, weight, targets, mask, opts, backend)


def sequence_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    seq_ids: torch.Tensor,
    mask: torch.Tensor,
    num_seqs: int,
    backend: str = "auto",
    *,
    chunk_size: int | None = None,
    softcap: float | None = None,
    filter_eps: float | None = None,
    grad_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-sequence sums of masked token log-probs, `[num_seqs]` float32 (float64 for float64 inputs).

    hidden [N, d] (fp32/fp16/bf16), weight [V, d] (same dtype), targets [N] long (the token each row
    predicts), seq_ids [N] long in `[0, num_seqs)`, mask [N] bool (True = counted). Differentiable w.r.t.
    `hidden` and `weight`. `backend` in `auto | triton | chunked | reference`; `grad_dtype` as for
    `token_logprobs`.
    """
    _check_inputs(hidden, weight, targets, mask, seq_ids, num_seqs)
    opts = LogprobOptions(backend, chunk_size, softcap, filter_eps, grad_dtype)
    logp = _token_logprobs(hidden, weight, targets, mask, opts)
    return torch.zeros(num_seqs, dtype=logp.dtype, device=hidden.device).index_add(0, seq_ids, logp)


@torch.no_grad()
def token_logprob_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "auto",
    softcap: float | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token `(logp, mean, var)`, each `[N]` float32 (float64 for float64 inputs), without gradients:
    the target's log-prob `log p(y_t)`, and the mean `sum_v p_v log p_v` and variance
    `sum_v p_v (log p_v)^2 - mean^2` of `log p` under `p = softmax(hidden @ weight.T)` at each position.

    Entries where `mask` is False (default: all True) are exactly 0 and cost no LM-head compute. At most
    one chunk of `[tokens, V]` logits exists at a time (`chunked`); `triton` holds none.
    """
    if mask is None and isinstance(targets, torch.Tensor):
        mask = torch.ones(targets.shape, dtype=torch.bool, device=targets.device)
    _check_inputs(hidden, weight, targets, mask)
    opts = LogprobOptions(backend=backend, chunk_size=chunk_size, softcap=softcap)
    backend = _resolve_backend(hidden, opts)
    if backend == "reference":
        return reference_token_logprob_stats(hidden, weight, targets, mask, softcap)
    if backend == "triton":
        if hidden.dtype == torch.float64:
            raise ValueError("backend='triton': fp64 is not supported; use backend='chunked' or 'reference'")
        from cipo_fast.csrc_triton import logprobs as tk

        return tk.logprob_stats_forward(hidden, weight, targets, mask)
    idx = mask.nonzero()[:, 0]
    cdt = _compute_dtype(hidden)
    stats = _chunked_stats(
        hidden.index_select(0, idx).to(cdt), weight.to(cdt), targets.index_select(0, idx), opts
    )
    return tuple(
        torch.zeros(hidden.shape[0], dtype=cdt, device=hidden.device).index_copy_(0, idx, x) for x in stats
    )


def default_chunk_size(vocab: int) -> int:
    """The chunk size `chunked` uses for this vocabulary when none is given."""
    return _chunk_size(LogprobOptions(), vocab)


__all__ = [
    "BACKENDS",
    "LogprobOptions",
    "default_chunk_size",
    "reference_sequence_logprobs",
    "reference_token_logprob_stats",
    "reference_token_logprobs",
    "sequence_logprobs",
    "token_logprob_stats",
    "token_logprobs",
]
