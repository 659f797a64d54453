"""The LM head's GEMMs in the chunked ops: which operands, in which precision, into which buffer.

Both chunked ops (`logprobs`' two-pass op and `fused_loss`) compute, per chunk of C tokens, the logits
`z = h W^T` (`[C, V]`) and then dH = dz W and dW += dz^T h:

    GradGemms    the compute dtype (fp32) everywhere, or the gradient GEMMs on operands rounded to
                 `grad_dtype` (bf16 on a CPU with bf16 units): the CPU path
    MixedGemms   CUDA with fp16 / bf16 inputs: all three on the 16-bit operands with fp32 outputs
    chunk_buffer the one `[C, V]` buffer a call reuses for every chunk
"""

from __future__ import annotations

import torch


def chunk_buffer(h: torch.Tensor, w: torch.Tensor, c: int) -> torch.Tensor:
    """One `[C, V]` buffer reused by every chunk of a call: a fresh CPU tensor this large is a fresh mmap
    whose pages fault in on first touch (~10 % of the logits GEMM at C = 1024, V = 49152, measured)."""
    return torch.empty(min(c, h.shape[0]), w.shape[0], dtype=h.dtype, device=h.device)


class GradGemms:
    """dH = dz W and dW += dz^T h for one chunk, in the compute dtype or, with `grad_dtype` (bf16 / fp16
    inputs on a CPU with units for them), on operands rounded to it: dz is rounded once per chunk, W and h
    once per call. The logits GEMM stays in the compute dtype -- a CPU GEMM returns its inputs' dtype, and
    bf16 logits (8 mantissa bits: +-0.06 at |z| ~ 20) would move every log-prob -- while the gradients
    end in the input dtype anyway; dW is accumulated over chunks in the compute dtype. `inputs`: the op's
    own (h, w) before their upcast, used as the low-precision operands when already in `grad_dtype`
    instead of rounding the upcast copies back."""

    def __init__(self, h, w, grad_dtype, inputs=(None, None)):
        self.dt = grad_dtype if grad_dtype is not None and grad_dtype != h.dtype else None

        def low(x, given):
            if self.dt is None:
                return x
            return given if given is not None and given.dtype == self.dt else x.to(self.dt)

        self.h, self.w = low(h, inputs[0]), low(w, inputs[1])
        self.h32, self.w32, self.cdt = h, w, h.dtype  # the compute-dtype operands of the logits GEMM
        self.operand_dtype = self.dt or h.dtype

    def logits(self, rows: slice, out):
        return torch.mm(self.h32[rows], self.w32.T, out=out)  # [C, d] @ [d, V] -> [C, V]

    def dh(self, dz, out):
        if self.dt is None:
            torch.mm(dz, self.w, out=out)  # [C, V] @ [V, d] -> [C, d]
        else:
            out.copy_(torch.mm(dz, self.w))

    def dw(self, dz, rows, acc):
        if self.dt is None:
            acc.addmm_(dz.T, self.h[rows])  # [V, C] @ [C, d] -> [V, d]
        else:
            acc.add_(torch.mm(dz.T, self.h[rows]))

    def operand(self, dz):
        return dz if self.dt is None else dz.to(self.dt)


class MixedGemms:
    """The three GEMMs on a GPU with fp16 / bf16 inputs: on the 16-bit operands themselves, with fp32 outputs
    (cuBLAS accumulates in fp32; `torch.mm(..., out_dtype=torch.float32)`), so neither W nor h is copied to
    fp32 and the logits keep fp32 precision. dz is rounded to the input dtype once per chunk (by the
    Triton row kernel that forms it). Torch builds without `mm.dtype_out` on the device fall back to
    `GradGemms` on fp32 copies."""

    cdt = torch.float32

    def __init__(self, h, w):
        self.h, self.w, self.operand_dtype = h, w, h.dtype

    @staticmethod
    def applies(h, w) -> bool:
        return h.is_cuda and h.dtype in (torch.float16, torch.bfloat16) and has_dtype_out(h.device)

    def logits(self, rows: slice, out):
        return torch.ops.aten.mm.dtype_out(self.h[rows], self.w.T, torch.float32, out=out)

    def dh(self, dz, out):
        torch.ops.aten.mm.dtype_out(dz, self.w, torch.float32, out=out)  # [C, V] @ [V, d]

    def dw(self, dz, rows, acc):
        if has_addmm_into_fp32(acc.device):  # dW += dz^T h straight into the fp32 accumulator
            torch.ops.aten.addmm.dtype_out(acc, dz.T, self.h[rows], torch.float32, beta=1, alpha=1, out=acc)
        else:  # a [V, d] fp32 temporary per chunk (0.9 GB at V = 152k, d = 1536)
            acc.add_(torch.ops.aten.mm.dtype(dz.T, self.h[rows], torch.float32))  # [V, C] @ [C, d]

    def operand(self, dz):
        return dz.to(self.operand_dtype)


_DTYPE_OUT: dict[str, bool] = {}
_ADDMM_FP32: dict[str, bool] = {}


def has_dtype_out(device) -> bool:
    """Whether this torch has the fp32-output GEMM for 16-bit inputs on `device` (CUDA, torch >= 2.8)."""
    key = str(device)
    if key not in _DTYPE_OUT:
        a = torch.ones(2, 2, dtype=torch.bfloat16, device=device)
        try:
            _DTYPE_OUT[key] = torch.ops.aten.mm.dtype(a, a, torch.float32).dtype == torch.float32
        except (RuntimeError, NotImplementedError, AttributeError):
            _DTYPE_OUT[key] = False
    return _DTYPE_OUT[key]


def has_addmm_into_fp32(device) -> bool:
    """Whether `addmm.dtype_out` adds a 16-bit product into an fp32 `self` in place (`out=self`) on `device`.
    Torch versions differ (some require `self` in the inputs' dtype), so it is tried once on a small case
    with an exact answer, and any error or wrong value means no."""
    key = str(device)
    if key not in _ADDMM_FP32:
        ok = False
        if has_dtype_out(device):
            a = torch.arange(6, dtype=torch.float32, device=device).reshape(3, 2)
            acc = torch.full((2, 2), 0.5, device=device)
            want = acc + a.T @ a  # small integers + 0.5: exact in bf16 inputs and fp32 outputs
            try:
                b = a.to(torch.bfloat16)
                torch.ops.aten.addmm.dtype_out(acc, b.T, b, torch.float32, beta=1, alpha=1, out=acc)
                ok = acc.dtype == torch.float32 and bool(torch.equal(acc, want))
            except (RuntimeError, NotImplementedError, AttributeError, TypeError):
                ok = False
        _ADDMM_FP32[key] = ok
    return _ADDMM_FP32[key]
