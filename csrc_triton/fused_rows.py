"""Triton row kernels of the fused LM-head loss on a GPU: the passes over one chunk's fp32 logits.

`cipo_fast.ops.fused_loss` computes a chunk of whole groups' logits `z = h W^T` (`[C, V]`, fp32) once,
their log-probs, the loss's per-token gradient `g_t = dL/dlogp_t`, and then `dz = g (onehot(y) - p)`
for the dH and dW GEMMs (3 GEMMs in all; on a GPU they are cuBLAS's). With torch ops, the elementwise
work between the GEMMs is six passes over the buffer (max, subtract, exp, sum, scale, onehot), each a
round trip through HBM. On paper (not measured): a 4096-token chunk at V = 152k is a 2.5 GB buffer, so
~20 GB of traffic, ~6 ms at an H100's 3.35 TB/s, against ~2.7 ms for one of its bf16 GEMMs at d = 1536.
These two kernels read the buffer twice and write dz once (~6 GB with a bf16 dz):

    _row_lse_kernel    one program per row t:
                           lse_t = logsumexp_v z_tv,   zy_t = z_t[y_t]
                       online over blocks of BLOCK_V, per lane: m' = max(m, z), s <- s e^(m - m') + e^(z - m'),
                       the lanes merged at the end (Milakov & Gimelshein 2018, "Online normalizer
                       calculation for softmax").
    _row_grad_kernel   one program per (row t, block of BLOCK_V columns):
                           dz_tv = g_t (onehot(y_t)_v - exp(z_tv - lse_t))
                       written in the GEMMs' operand dtype: fp32 in place over z, or fp16 / bf16 into a
                       buffer of its own. The onehot term is added in fp32 before that rounding: rounded
                       first, `1 - p_y` of a confident token (p_y ~ 1) would cancel to 0 or 2^-8.

Rows of a zero-weight group have g_t = 0 and get dz = 0 (z - lse <= 0, so exp never overflows).
Reference beside the kernels: `row_lse_reference`, `row_grad_reference` (textbook torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


@dataclass(frozen=True)
class RowConfig:
    """Launch parameters of both row kernels (one table entry: they are bandwidth-bound, any GPU)."""

    BLOCK_V: int = 1024  # columns per program step: 4 warps x 32 lanes x 8 fp32 (two 16-byte loads)
    num_warps: int = 4
    num_stages: int = 1
    BLOCK_N: int = 1  # one row per program (the fields `cipo_fast.ops.kernel_check` reports)
    BLOCK_D: int = 0

    def meta(self, _kernel: str = "") -> dict:
        # enable_fp_fusion: Triton's default made explicit, as in `logprobs.KernelConfig.meta`
        return {"BLOCK_V": self.BLOCK_V, "num_warps": self.num_warps, "num_stages": self.num_stages,
                "enable_fp_fusion": True}  # fmt: skip


CONFIG = RowConfig()


@triton.jit
def _row_lse_kernel(
    z_ptr,  # *fp32 [C, V] logits
    y_ptr,  # *i64 [C] target ids
    lse_ptr,  # *fp32 [C] out: logsumexp of each row
    zy_ptr,  # *fp32 [C] out: z[t, y_t]
    V,  # vocabulary size
    stride_zn,  # z.stride(0)
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = z_ptr + row * stride_zn
    offs = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + offs
        z = tl.load(base + cols, mask=cols < V, other=float("-inf"))
        m_new = tl.maximum(m, z)
        # a lane that has seen no column yet stays at -inf; shift it by 0 (not -inf - -inf = nan)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.exp(z - shift)
        m = m_new
    m_row = tl.max(m, axis=0)
    s_row = tl.sum(s * tl.exp(m - m_row), axis=0)  # lanes at -inf add 0
    tl.store(lse_ptr + row, m_row + tl.log(s_row))
    y = tl.load(y_ptr + row)
    tl.store(zy_ptr + row, tl.load(base + y))


@triton.jit
def _row_grad_kernel(
    z_ptr,  # *fp32 [C, V] logits
    dz_ptr,  # *T [C, V] out: g (onehot(y) - softmax(z)) in the operand dtype (may be z itself for fp32)
    y_ptr,  # *i64 [C] target ids
    lse_ptr,  # *fp32 [C] logsumexp of each row
    g_ptr,  # *fp32 [C] dL/dlogp of each row
    V,  # vocabulary size
    stride_zn,  # z.stride(0)
    stride_dzn,  # dz.stride(0)
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    inside = cols < V
    z = tl.load(z_ptr + row * stride_zn + cols, mask=inside, other=0.0)
    lse = tl.load(lse_ptr + row)
    g = tl.load(g_ptr + row)
    y = tl.load(y_ptr + row)
    onehot = tl.where(cols == y, 1.0, 0.0)
    dz = g * (onehot - tl.exp(z - lse))
    tl.store(dz_ptr + row * stride_dzn + cols, dz.to(dz_ptr.dtype.element_ty), mask=inside)


# ----------------------------------------------------------------------------------------------------
# host launchers
# ----------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    return isinstance(_row_lse_kernel, InterpretedFunction)


def _check(z: torch.Tensor, y: torch.Tensor) -> None:
    if not (z.is_cuda or interpreted()):
        raise ValueError(
            f"the Triton row kernels need CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported "
            f"(got {z.device})"
        )
    if z.dim() != 2 or z.dtype != torch.float32 or z.stride(1) != 1:
        raise ValueError(
            f"z: expected a [C, V] fp32 tensor with unit column stride, got {z.dtype} {z.stride()}"
        )
    if y.shape != (z.shape[0],) or y.dtype != torch.long:
        raise ValueError(f"y: expected [{z.shape[0]}] int64, got {tuple(y.shape)} {y.dtype}")


def row_lse(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lse [C], z[t, y_t] [C]), fp32, of the logits `z` [C, V] fp32 and targets `y` [C]."""
    _check(z, y)
    c, v = z.shape
    lse = torch.empty(c, dtype=torch.float32, device=z.device)
    zy = torch.empty_like(lse)
    if c:
        _row_lse_kernel[(c,)](z, y.contiguous(), lse, zy, v, z.stride(0), **CONFIG.meta())
    return lse, zy


def row_grad(
    z: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, g: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """`out` [C, V] = g (onehot(y) - exp(z - lse)) in `out`'s dtype; `out` may be `z` itself (fp32)."""
    _check(z, y)
    c, v = z.shape
    if out.shape != z.shape or out.stride(1) != 1:
        raise ValueError(f"out: expected {tuple(z.shape)} with unit column stride, got {tuple(out.shape)}")
    if c:
        grid = (c, triton.cdiv(v, CONFIG.BLOCK_V))
        _row_grad_kernel[grid](
            z,
            out,
            y.contiguous(),
            lse.float().contiguous(),
            g.float().contiguous(),
            v,
            z.stride(0),
            out.stride(0),
            **CONFIG.meta(),
        )
    return out


# ----------------------------------------------------------------------------------------------------
# references (the spec the kernels are tested against)
# ----------------------------------------------------------------------------------------------------


def row_lse_reference(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.logsumexp(z, dim=1), z.gather(1, y[:, None])[:, 0]


def row_grad_reference(z, y, lse, g, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    return (g[:, None] * (onehot - torch.exp(z - lse[:, None]))).to(dtype)
