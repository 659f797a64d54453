"""Token-level KL to a frozen reference through the LM head, without `[tokens, vocab]` tensors kept alive.

The KL retain regularizer of TOFU / R-TOFU (`GA+KL`) keeps the policy's next-token distribution on retain
text close to the frozen model's:

    KL_t = KL(q_t || p_t) = sum_v q_v (log q_v - log p_v),   p = softmax(W h_t),  q = softmax(W_ref h_ref_t)

(R-TOFU `trainer/losses.py::kl_loss`: `kl_div(log p, log q, log_target=True)`, i.e. the reference is the
target distribution). Its gradient with respect to the policy logits is `p - q`, so

* forward: for each chunk of tokens, both logits blocks, their log-softmaxes, `KL_t`; nothing is saved
  but the inputs;
* backward with `g_t = dL/dKL_t`: recompute both blocks, `dz = g_t (p - q)`, `dH = dz W`, `dW = dz^T H`.

Peak extra memory is a few `[chunk, V]` fp32 blocks. Masked tokens (prompt, padding) are dropped first.
`token_kl_reference` is the textbook computation on full logits, the spec the tests compare to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_BYTES = 32 * 2**20  # one [chunk, V] fp32 block


def token_kl_reference(hidden, weight, ref_hidden, ref_weight) -> torch.Tensor:
    """`KL(q || p)` per token `[N]` from full fp32 logits (the spec)."""
    logp = torch.log_softmax(hidden.float() @ weight.float().T, -1)
    logq = torch.log_softmax(ref_hidden.float() @ ref_weight.float().T, -1)
    return F.kl_div(logp, logq, reduction="none", log_target=True).sum(-1)


def _chunk(n_vocab: int, chunk_size: int | None) -> int:
    return chunk_size or max(1, _CHUNK_BYTES // (4 * n_vocab))


class _TokenKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, ref_hidden, ref_weight, chunk):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        with torch.no_grad():
            for s in range(0, hidden.shape[0], chunk):
                e = s + chunk
                out[s:e] = token_kl_reference(hidden[s:e], weight, ref_hidden[s:e], ref_weight)
        ctx.save_for_backward(hidden, weight, ref_hidden, ref_weight)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, ref_hidden, ref_weight = ctx.saved_tensors
        w = weight.float()
        dh = torch.zeros_like(hidden, dtype=torch.float32) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], ctx.chunk):
            e = s + ctx.chunk
            h = hidden[s:e].float()
            p = torch.softmax(h @ w.T, -1)
            q = torch.softmax(ref_hidden[s:e].float() @ ref_weight.float().T, -1)
            dz = grad[s:e, None].float() * (p - q)
            if dh is not None:
                dh[s:e] = dz @ w
            if dw is not None:
                dw += dz.T @ h
        return (
            dh.to(hidden.dtype) if dh is not None else None,
            dw.to(weight.dtype) if dw is not None else None,
            None,
            None,
            None,
        )


def token_kl(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ref_hidden: torch.Tensor,
    ref_weight: torch.Tensor,
    mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """`KL(q_t || p_t)` for the tokens where `mask` is true (all when None): `[n_selected]` fp32,
    differentiable in `hidden` and `weight` (the reference inputs are constants)."""
    if hidden.shape != ref_hidden.shape or weight.shape != ref_weight.shape:
        raise ValueError(
            f"policy and reference shapes differ: hidden {tuple(hidden.shape)} vs {tuple(ref_hidden.shape)}, "
            f"head {tuple(weight.shape)} vs {tuple(ref_weight.shape)}"
        )
    if mask is not None:
        hidden, ref_hidden = hidden[mask], ref_hidden[mask]
    ref_hidden, ref_weight = ref_hidden.detach(), ref_weight.detach()
    return _TokenKL.apply(hidden, weight, ref_hidden, ref_weight, _chunk(weight.shape[0], chunk_size))
