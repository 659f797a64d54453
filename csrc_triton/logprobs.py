"""Triton kernels for fused "hidden -> LM head -> log-softmax -> gather".

Math, per active token t (mask_t True), with `z_t = W h_t` (`[V]`, never stored):

    lse_t  = logsumexp_v z_tv              logp_t = z_t[y_t] - lse_t
    mean_t = E_p[log p] = E_p[z] - lse_t   var_t  = Var_p[log p] = Var_p[z]     (STATS only)
    dz_tv  = g_t (onehot(y_t)_v - p_tv),   p_tv = exp(z_tv - lse_t),  g_t = dL/dlogp_t
    dH_t   = sum_v dz_tv W_v               dW_v = sum_t dz_tv h_t

How it works:

* Masked tokens are dropped on the host (`rows = mask.nonzero()`, one sync); kernels read hidden states
  through that row index, so masked rows cost nothing and their outputs and gradients stay exactly 0.
* Forward (`_logprobs_fwd_kernel`): one program per (block of BLOCK_N active tokens, vocab split). It
  loops over the split's vocab blocks of BLOCK_V, builds the logit tile `z = H_blk @ W_blk^T` chunk by
  chunk over d (BLOCK_D, `tl.dot`, fp32 accumulation, inputs in their own dtype), and keeps an online
  max / sum-exp and `z[y]`. Each split writes its partial logsumexp; the host combines the `[S, M]`
  partials with one `logsumexp`. Splitting the vocabulary keeps the GPU busy when there are few token
  blocks (S = 1 when there are enough). Logits never reach global memory. STATS also keeps the
  softmax-weighted mean and squared deviations of z (Chan's merge per tile: no E[z^2] - E[z]^2
  cancellation); the host merges the splits by the law of total variance.
* Backward (`_logprobs_bwd_kernel`): one program per (token block, vocab block) tile, launched as a
  1-D grid in grouped order (GROUP_N token blocks sweep the vocabulary together, so their H rows and
  each W tile are reused from L2). It recomputes the logit tile, forms `dz = g (onehot(y) - p)` in
  fp32 and casts it to the input dtype, and adds `dz @ W_blk` into dH and `dz^T @ H_blk` into dW chunk
  by chunk over d with fp32 atomics into fp32 buffers, so any d works without holding `[BLOCK_N, d]`
  in registers; the buffers are cast to the input dtype at the end.
* Gradient filtering (Cut Cross-Entropy's criterion): with FILTER on, a tile is skipped when every
  `|onehot(y) - p|` in it (of tokens with g != 0) is below `filter_eps`. The test is scale-free: a
  skipped entry changes dH_t by less than `filter_eps |g_t| |W_v|`, i.e. below the output precision
  relative to the gradient's own scale, whatever the loss scale. Almost every tile of a peaked
  distribution is skipped; the few tiles holding a target are kept unless that target is already
  certain (`1 - p_y < filter_eps`). `filter_eps=None` ("auto") is CCE's default,
  `torch.finfo(dtype).eps / 32`, for fp16/bf16, and no filtering for fp32.
  The onehot term stays inside the tile on purpose: applying it on the host in fp32 while the softmax
  term is rounded to fp16/bf16 cancels catastrophically for confident tokens (p_y ~ 1), giving an
  absolute error ~|g| 2^-9 in bf16 where the true gradient `g (1 - p_y)` is tiny.
* fp32 inputs: `tl.dot` follows `torch.get_float32_matmul_precision()` -- "highest" (torch's default)
  uses "tf32x3" (three TF32 tensor-core products per multiply: ~fp32 accuracy; exact-fp32 FMA dots
  spill at useful tile sizes), anything else plain TF32, as torch's own fp32 matmuls on CUDA would.

What it deliberately does not do: soft-capping (`chunked` does it), fp64, deterministic gradients (the
fp32 atomics sum in arbitrary order; run-to-run differences are at fp32 rounding level), and autotuning
(the configs below are fixed tables, checked for spills and shared memory by `cipo_fast.kernel_check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

# ----------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _logprobs_fwd_kernel(
    h_ptr,  # *T [N, d] hidden states (T = fp32 / fp16 / bf16)
    w_ptr,  # *T [V, d] LM-head weight
    y_ptr,  # *i64 [N] target ids
    rows_ptr,  # *i64 [M] ascending indices of the active (mask True) rows of hidden
    zy_ptr,  # *fp32 [M] out: z[y] of each active row (written by the split whose range holds y)
    plse_ptr,  # *fp32 [S, M] out: logsumexp of each active row over the split's vocab range
    pmean_ptr,  # *fp32 [S, M] out (STATS): E[z] under the softmax restricted to the split's range
    pvar_ptr,  # *fp32 [S, M] out (STATS): Var[z] under that softmax
    M,  # number of active rows
    V,  # vocabulary size
    D,  # hidden size d
    v_per_split,  # vocab entries per split, a multiple of BLOCK_V
    stride_hn,  # hidden.stride(0)
    stride_hd,  # hidden.stride(1)
    stride_wv,  # weight.stride(0)
    stride_wd,  # weight.stride(1)
    stride_y,  # targets.stride(0)
    stride_ps,  # plse.stride(0) (= M)
    BLOCK_N: tl.constexpr,  # tokens per program
    BLOCK_V: tl.constexpr,  # vocab entries per logit tile
    BLOCK_D: tl.constexpr,  # hidden-size chunk of one tl.dot
    INPUT_PRECISION: tl.constexpr,  # tl.dot input precision for fp32 inputs: "tf32x3" or "tf32"
    STATS: tl.constexpr = False,  # also write pmean / pvar
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)

    offs_m = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] positions in the active-row list
    row_ok = offs_m < M
    rows = tl.load(rows_ptr + offs_m, mask=row_ok, other=0)  # [BLOCK_N] rows of hidden
    y = tl.load(y_ptr + rows * stride_y, mask=row_ok, other=-1)  # [BLOCK_N]

    v_start = pid_s * v_per_split
    v_end = tl.minimum(v_start + v_per_split, V)

    m_i = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)  # running max of z
    l_i = tl.zeros([BLOCK_N], dtype=tl.float32)  # running sum of exp(z - m_i)
    zy = tl.zeros([BLOCK_N], dtype=tl.float32)  # z[y] if y is in this split
    mu_i = tl.zeros([BLOCK_N], dtype=tl.float32)  # STATS: softmax-weighted mean of z so far
    ss_i = tl.zeros([BLOCK_N], dtype=tl.float32)  # STATS: l_i-scaled sum of squared deviations from mu_i

    for v0 in range(v_start, v_end, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)  # [BLOCK_V]
        col_ok = offs_v < v_end

        # z = H_blk @ W_blk^T: [BLOCK_N, d] @ [d, BLOCK_V] -> [BLOCK_N, BLOCK_V], over d in BLOCK_D chunks
        acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < D
            h = tl.load(
                h_ptr + rows[:, None] * stride_hn + offs_d[None, :] * stride_hd,
                mask=row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )  # [BLOCK_N, BLOCK_D]
            w = tl.load(
                w_ptr + offs_v[:, None] * stride_wv + offs_d[None, :] * stride_wd,
                mask=col_ok[:, None] & d_ok[None, :],
                other=0.0,
            )  # [BLOCK_V, BLOCK_D]
            acc = tl.dot(h, tl.trans(w), acc, input_precision=INPUT_PRECISION)

        # online logsumexp; columns past the range are -inf, the identity of max and of sum-exp
        z = tl.where(col_ok[None, :], acc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(z, axis=1))
        if STATS:
            # Chan's merge of the running (weight l_i, mean mu_i, ss_i) with the tile's (weights e)
            alpha = tl.exp(m_i - m_new)
            e = tl.exp(z - m_new[:, None])  # [BLOCK_N, BLOCK_V]; 0 past the range, where acc is 0 too
            w_b = tl.sum(e, axis=1)
            mu_b = tl.sum(e * acc, axis=1) / w_b
            dev, delta = acc - mu_b[:, None], mu_b - mu_i
            l_new = l_i * alpha + w_b  # = the l_i computed below
            mu_i += delta * (w_b / l_new)
            ss_i = ss_i * alpha + tl.sum(e * dev * dev, axis=1) + delta * delta * (l_i * alpha * w_b / l_new)
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
        m_i = m_new
        zy += tl.sum(tl.where(offs_v[None, :] == y[:, None], acc, 0.0), axis=1)

    tl.store(plse_ptr + pid_s * stride_ps + offs_m, m_i + tl.log(l_i), mask=row_ok)
    if STATS:
        tl.store(pmean_ptr + pid_s * stride_ps + offs_m, mu_i, mask=row_ok)
        tl.store(pvar_ptr + pid_s * stride_ps + offs_m, ss_i / l_i, mask=row_ok)
    y_here = (y >= v_start) & (y < v_end)
    tl.store(zy_ptr + offs_m, zy, mask=row_ok & y_here)


@triton.jit
def _logprobs_bwd_kernel(
    h_ptr,  # *T [N, d] hidden states
    w_ptr,  # *T [V, d] LM-head weight
    y_ptr,  # *i64 [N] target ids
    rows_ptr,  # *i64 [M] ascending indices of the active rows of hidden
    lse_ptr,  # *fp32 [N] logsumexp of each row's logits (from the forward)
    g_ptr,  # *fp32 [N] dL/dlogp
    dh_ptr,  # *fp32 [N, d] in/out: dH accumulator (rows of inactive tokens are never touched)
    dw_ptr,  # *fp32 [V, d] in/out: dW accumulator
    M,  # number of active rows
    V,  # vocabulary size
    D,  # hidden size d
    filter_eps,  # fp32: skip a tile where all |onehot - p| are below this (used only if FILTER)
    stride_hn,  # hidden.stride(0)
    stride_hd,  # hidden.stride(1)
    stride_wv,  # weight.stride(0)
    stride_wd,  # weight.stride(1)
    stride_y,  # targets.stride(0)
    stride_lse,  # lse.stride(0)
    stride_g,  # grad_logp.stride(0)
    stride_dhn,  # dh.stride(0)
    stride_dhd,  # dh.stride(1)
    stride_dwv,  # dw.stride(0)
    stride_dwd,  # dw.stride(1)
    BLOCK_N: tl.constexpr,  # tokens per tile
    BLOCK_V: tl.constexpr,  # vocab entries per tile
    BLOCK_D: tl.constexpr,  # hidden-size chunk of one tl.dot
    GROUP_N: tl.constexpr,  # token blocks that sweep the vocabulary together (L2 reuse)
    NEED_DH: tl.constexpr,  # accumulate dH
    NEED_DW: tl.constexpr,  # accumulate dW
    FILTER: tl.constexpr,  # skip tiles whose max |onehot - p| is below filter_eps
    INPUT_PRECISION: tl.constexpr,  # tl.dot input precision for fp32 inputs: "tf32x3" or "tf32"
):
    # grouped tile order: pid -> (pid_n, pid_v), GROUP_N token blocks per vocabulary sweep
    pid = tl.program_id(0).to(tl.int64)
    num_pid_n = tl.cdiv(M, BLOCK_N)
    num_pid_v = tl.cdiv(V, BLOCK_V)
    pids_per_group = GROUP_N * num_pid_v
    first_n = (pid // pids_per_group) * GROUP_N
    group_size = tl.minimum(num_pid_n - first_n, GROUP_N)
    pid_n = first_n + (pid % pids_per_group) % group_size
    pid_v = (pid % pids_per_group) // group_size

    offs_m = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = offs_m < M
    rows = tl.load(rows_ptr + offs_m, mask=row_ok, other=0)  # [BLOCK_N] rows of hidden
    y = tl.load(y_ptr + rows * stride_y, mask=row_ok, other=-1)  # [BLOCK_N]
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)  # [BLOCK_V]
    col_ok = offs_v < V

    # recompute z = H_blk @ W_blk^T: [BLOCK_N, d] @ [d, BLOCK_V] -> [BLOCK_N, BLOCK_V]
    acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        h = tl.load(
            h_ptr + rows[:, None] * stride_hn + offs_d[None, :] * stride_hd,
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # [BLOCK_N, BLOCK_D]
        w = tl.load(
            w_ptr + offs_v[:, None] * stride_wv + offs_d[None, :] * stride_wd,
            mask=col_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # [BLOCK_V, BLOCK_D]
        acc = tl.dot(h, tl.trans(w), acc, input_precision=INPUT_PRECISION)

    lse = tl.load(lse_ptr + rows * stride_lse, mask=row_ok, other=0.0)  # [BLOCK_N]
    g = tl.load(g_ptr + rows * stride_g, mask=row_ok, other=0.0)  # [BLOCK_N]; 0 for padding rows
    # p = softmax(z) = exp(z - lse); 0 past the vocabulary
    p = tl.where(col_ok[None, :], tl.exp(acc - lse[:, None]), 0.0)  # [BLOCK_N, BLOCK_V]
    # onehot(y) - p, formed in fp32 before the cast: a confident target (p_y ~ 1) keeps its few bits
    delta = tl.where(offs_v[None, :] == y[:, None], 1.0, 0.0) - p  # [BLOCK_N, BLOCK_V]
    dz = (g[:, None] * delta).to(h_ptr.dtype.element_ty)  # dz = g (onehot(y) - p)

    if FILTER:
        do_tile = tl.max(tl.where(g[:, None] != 0.0, tl.abs(delta), 0.0)) >= filter_eps
    else:
        do_tile = True
    if do_tile:
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < D
            if NEED_DH:
                w = tl.load(
                    w_ptr + offs_v[:, None] * stride_wv + offs_d[None, :] * stride_wd,
                    mask=col_ok[:, None] & d_ok[None, :],
                    other=0.0,
                )  # [BLOCK_V, BLOCK_D]
                # dH[n_blk, d_blk] += dz @ W[v_blk, d_blk]: [BLOCK_N, BLOCK_V] @ [BLOCK_V, BLOCK_D]
                dh = tl.dot(dz, w, input_precision=INPUT_PRECISION)
                tl.atomic_add(
                    dh_ptr + rows[:, None] * stride_dhn + offs_d[None, :] * stride_dhd,
                    dh,
                    mask=row_ok[:, None] & d_ok[None, :],
                    sem="relaxed",
                )
            if NEED_DW:
                h = tl.load(
                    h_ptr + rows[:, None] * stride_hn + offs_d[None, :] * stride_hd,
                    mask=row_ok[:, None] & d_ok[None, :],
                    other=0.0,
                )  # [BLOCK_N, BLOCK_D]
                # dW[v_blk, d_blk] += dz^T @ H[n_blk, d_blk]: [BLOCK_V, BLOCK_N] @ [BLOCK_N, BLOCK_D]
                dw = tl.dot(tl.trans(dz), h, input_precision=INPUT_PRECISION)
                tl.atomic_add(
                    dw_ptr + offs_v[:, None] * stride_dwv + offs_d[None, :] * stride_dwd,
                    dw,
                    mask=col_ok[:, None] & d_ok[None, :],
                    sem="relaxed",
                )


# ----------------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """Block sizes and launch options of one kernel variant."""

    BLOCK_N: int
    BLOCK_V: int
    BLOCK_D: int
    num_warps: int
    num_stages: int
    GROUP_N: int = 1  # backward only: token blocks per vocabulary sweep

    def meta(self, kernel: str) -> dict:
        """Keyword arguments of a launch of `kernel` ("forward" | "backward"): constexprs and options."""
        meta = {"BLOCK_N": self.BLOCK_N, "BLOCK_V": self.BLOCK_V, "BLOCK_D": self.BLOCK_D}
        if kernel == "backward":
            meta["GROUP_N"] = self.GROUP_N
        # enable_fp_fusion: FMA contraction, Triton's default, made explicit (Triton 3.9 warns it will change)
        return meta | {"num_warps": self.num_warps, "num_stages": self.num_stages, "enable_fp_fusion": True}


# Keys: "<dtype class>_<device class>". dtype class: "f16" (fp16 and bf16), "tf32" (fp32 inputs on TF32
# tensor cores), "f32" (fp32 inputs, "tf32x3": three TF32 products per multiply, ~fp32 accurate, more
# registers, hence smaller tiles). Device class: "sm90" (Hopper, 227 KiB of shared memory) and "sm80"
# (everything else: Ampere, Ada, Blackwell; sized to fit the 99 KiB of sm_86/89 too).
# `cipo_fast.kernel_check` compiles each for sm_80 / sm_86 / sm_90a / sm_100a: no entry spills or
# exceeds the shared memory there.
FORWARD_CONFIGS: dict[str, KernelConfig] = {
    "f16_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=3),
    "f16_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=4),
    "tf32_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=128, BLOCK_D=32, num_warps=8, num_stages=3),
    "tf32_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=128, BLOCK_D=32, num_warps=8, num_stages=4),
    "f32_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=64, BLOCK_D=32, num_warps=4, num_stages=3),
    "f32_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=64, BLOCK_D=32, num_warps=8, num_stages=3),
}
BACKWARD_CONFIGS: dict[str, KernelConfig] = {
    "f16_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=128, BLOCK_D=32, num_warps=8, num_stages=2, GROUP_N=8),
    "f16_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=128, BLOCK_D=64, num_warps=8, num_stages=3, GROUP_N=8),
    "tf32_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=128, BLOCK_D=16, num_warps=8, num_stages=3, GROUP_N=8),
    "tf32_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=128, BLOCK_D=32, num_warps=8, num_stages=3, GROUP_N=8),
    "f32_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=64, BLOCK_D=16, num_warps=8, num_stages=3, GROUP_N=8),
    "f32_sm90": KernelConfig(BLOCK_N=64, BLOCK_V=128, BLOCK_D=32, num_warps=8, num_stages=2, GROUP_N=8),
}
STATS_CONFIGS = FORWARD_CONFIGS | {  # the forward with STATS: smaller tiles where the forward's would spill
    "f16_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=64, BLOCK_D=64, num_warps=8, num_stages=4),
    "tf32_sm90": KernelConfig(BLOCK_N=128, BLOCK_V=64, BLOCK_D=32, num_warps=8, num_stages=4),
    "f32_sm80": KernelConfig(BLOCK_N=64, BLOCK_V=64, BLOCK_D=16, num_warps=4, num_stages=3),
}
CONFIG_TABLES = {"forward": FORWARD_CONFIGS, "stats": STATS_CONFIGS, "backward": BACKWARD_CONFIGS}


def input_precision(dtype: torch.dtype) -> str:
    """`tl.dot` input precision: for fp32, "tf32x3" (~fp32) under `torch.get_float32_matmul_precision()`
    "highest" (torch's default), else "tf32"; 16-bit inputs ignore it."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def config_name(d: int, dtype: torch.dtype, capability: tuple[int, int] | None, precision: str) -> str:
    """Name of the config (same in both tables) for hidden size `d`, input `dtype` and the device's
    compute capability (None: the interpreter), given the `input_precision(dtype)`.

    Pure: the same arguments always give the same name. `d` is accepted for the table's contract but
    every config handles any d by masking its last BLOCK_D chunk (LM hidden sizes are multiples of 64).
    """
    assert d >= 1, f"hidden size must be >= 1, got {d}"
    if dtype in (torch.float16, torch.bfloat16):
        dtype_class = "f16"
    elif dtype == torch.float32:
        dtype_class = "f32" if precision == "tf32x3" else "tf32"
    else:
        raise AssertionError(f"no Triton config for dtype {dtype}")
    device_class = "sm90" if capability == (9, 0) else "sm80"
    return f"{dtype_class}_{device_class}"


def pick_config(
    kernel: str, d: int, dtype: torch.dtype, capability: tuple[int, int] | None, precision: str | None = None
) -> KernelConfig:
    """The `KernelConfig` the launchers use for `kernel` in {"forward", "stats", "backward"}."""
    precision = input_precision(dtype) if precision is None else precision
    return CONFIG_TABLES[kernel][config_name(d, dtype, capability, precision)]


def auto_filter_eps(dtype: torch.dtype) -> float:
    """`filter_eps=None`: CCE's "auto" threshold, eps/32 of fp16/bf16; 0 (no filtering) for fp32."""
    return torch.finfo(dtype).eps / 32 if dtype in (torch.float16, torch.bfloat16) else 0.0


def num_vocab_splits(n_token_blocks: int, n_vocab_blocks: int, num_sms: int) -> int:
    """Vocab splits of the forward so that there are >= 2 programs per SM (1 when tokens suffice)."""
    want = max(1, math.ceil(2 * num_sms / max(n_token_blocks, 1)))
    blocks_per_split = math.ceil(n_vocab_blocks / min(want, n_vocab_blocks))
    return math.ceil(n_vocab_blocks / blocks_per_split)


# The interpreter has no SMs; pretend to have 4 so small test shapes take the split-vocabulary path.
_INTERPRETER_SMS = 4


# ----------------------------------------------------------------------------------------------------
# host launchers
# ----------------------------------------------------------------------------------------------------


def _interpreted() -> bool:
    return isinstance(_logprobs_fwd_kernel, InterpretedFunction)


def _device_info(t: torch.Tensor) -> tuple[tuple[int, int] | None, int]:
    """(compute capability or None under the interpreter, SM count) of the device of `t`."""
    if t.is_cuda and not _interpreted():
        props = torch.cuda.get_device_properties(t.device)
        return (props.major, props.minor), props.multi_processor_count
    if not _interpreted():
        raise ValueError(
            f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported "
            f"(got tensors on {t.device}); use backend='chunked' on CPU"
        )
    return None, _INTERPRETER_SMS


def _check(hidden, weight, targets, mask) -> None:
    assert hidden.dim() == weight.dim() == 2, f"hidden/weight must be 2-D: {hidden.shape}, {weight.shape}"
    assert hidden.shape[1] == weight.shape[1], f"hidden {tuple(hidden.shape)} vs weight {tuple(weight.shape)}"
    assert hidden.dtype == weight.dtype, f"hidden {hidden.dtype} != weight {weight.dtype}"
    assert hidden.dtype in (torch.float32, torch.float16, torch.bfloat16), f"unsupported dtype {hidden.dtype}"
    assert targets.shape == (hidden.shape[0],) and targets.dtype == torch.long, "targets must be [N] long"
    assert mask.shape == (hidden.shape[0],) and mask.dtype == torch.bool, "mask must be [N] bool"
    devices = {t.device for t in (hidden, weight, targets, mask)}
    assert len(devices) == 1, f"all inputs must be on one device, got {devices}"


def _forward(hidden, weight, targets, mask, stats: bool):
    """Launch the forward kernel -> (rows, zy [M]; plse, pmean, pvar [S, M]; last two = plse w/o stats)."""
    _check(hidden, weight, targets, mask)
    capability, num_sms = _device_info(hidden)
    d, v = hidden.shape[1], weight.shape[0]
    rows = mask.nonzero()[:, 0]  # [M] active rows (host sync)
    m = rows.numel()
    precision = input_precision(hidden.dtype)
    cfg = pick_config("stats" if stats else "forward", d, hidden.dtype, capability, precision)
    n_token_blocks, n_vocab_blocks = triton.cdiv(m, cfg.BLOCK_N), triton.cdiv(v, cfg.BLOCK_V)
    splits = num_vocab_splits(n_token_blocks, n_vocab_blocks, num_sms)
    v_per_split = triton.cdiv(n_vocab_blocks, splits) * cfg.BLOCK_V
    zy = torch.empty(m, dtype=torch.float32, device=hidden.device)
    plse = torch.empty(splits, m, dtype=torch.float32, device=hidden.device)
    pmean, pvar = (torch.empty_like(plse), torch.empty_like(plse)) if stats else (plse, plse)
    if m > 0:
        _logprobs_fwd_kernel[(n_token_blocks, splits)](
            hidden, weight, targets, rows, zy, plse, pmean, pvar, m, v, d, v_per_split,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            targets.stride(0), plse.stride(0), INPUT_PRECISION=precision, STATS=stats, **cfg.meta("forward"),
        )  # fmt: skip
    return rows, zy, plse, pmean, pvar


def _scatter(n: int, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [M] -> [N], 0 where inactive
    return torch.zeros(n, dtype=torch.float32, device=x.device).index_copy_(0, rows, x)


def logprobs_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [N, d], weight [V, d], targets [N] long, mask [N] bool -> (logp [N], lse [N]) fp32.

    `logp_t = z[y_t] - logsumexp(z)`, `z = W h_t`; both outputs are exactly 0 where mask is False."""
    rows, zy, plse, _, _ = _forward(hidden, weight, targets, mask, stats=False)
    lse = plse[0] if plse.shape[0] == 1 else torch.logsumexp(plse, dim=0)  # [S, M] -> [M]
    return _scatter(hidden.shape[0], rows, zy - lse), _scatter(hidden.shape[0], rows, lse)


def logprob_stats_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden [N, d], weight [V, d], targets [N] long, mask [N] bool -> (logp, mean, var), each [N] fp32:
    `log p(y_t)`, `E_p[log p]`, `Var_p[log p]` under `p = softmax(W h_t)`; exactly 0 where mask is False."""
    rows, zy, plse, pmean, pvar = _forward(hidden, weight, targets, mask, stats=True)
    lse = torch.logsumexp(plse, dim=0)  # [S, M] -> [M]
    w = torch.softmax(plse, dim=0)  # [S, M] each split's share of the mass (exp(plse - lse) would round)
    ez = (w * pmean).sum(0)  # E_p[z] = sum_s w_s E_s[z]
    var = (w * (pvar + (pmean - ez).square())).sum(0)  # Var_p[z]: law of total variance over the splits
    return tuple(_scatter(hidden.shape[0], rows, x) for x in (zy - lse, ez - lse, var))


def logprobs_backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    lse: torch.Tensor,
    grad_logp: torch.Tensor,
    *,
    need_dh: bool,
    need_dw: bool,
    filter_eps: float | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `sum_t grad_logp_t * logp_t` -> (dH [N, d] in hidden.dtype or None, dW [V, d] in
    weight.dtype or None).

    `g = grad_logp * mask`, `dz = g (onehot(y) - softmax(z))`, `dH = dz W`, `dW = dz^T H`. `filter_eps`:
    skip tiles where every |onehot - p| is below it (0: never; None: `auto_filter_eps`).
    """
    _check(hidden, weight, targets, mask)
    assert lse.shape == (hidden.shape[0],) and lse.dtype == torch.float32, "lse must be [N] fp32"
    assert grad_logp.shape == (hidden.shape[0],) and grad_logp.dtype == torch.float32, "grad_logp: [N] fp32"
    assert lse.device == grad_logp.device == hidden.device, "lse/grad_logp on another device"
    assert filter_eps is None or filter_eps >= 0, f"filter_eps must be None or >= 0, got {filter_eps}"
    capability, _ = _device_info(hidden)
    (n, d), v = hidden.shape, weight.shape[0]
    dh = torch.zeros(n, d, dtype=torch.float32, device=hidden.device) if need_dh else None
    dw = torch.zeros(v, d, dtype=torch.float32, device=weight.device) if need_dw else None
    rows = mask.nonzero()[:, 0]  # [M] active rows (host sync)
    m = rows.numel()
    if m > 0 and (need_dh or need_dw):
        eps = auto_filter_eps(hidden.dtype) if filter_eps is None else float(filter_eps)
        precision = input_precision(hidden.dtype)
        cfg = pick_config("backward", d, hidden.dtype, capability, precision)
        dummy = torch.empty(1, 1, dtype=torch.float32, device=hidden.device)
        dh_buf, dw_buf = (dh if need_dh else dummy), (dw if need_dw else dummy)
        grid = (triton.cdiv(m, cfg.BLOCK_N) * triton.cdiv(v, cfg.BLOCK_V),)
        _logprobs_bwd_kernel[grid](
            hidden, weight, targets, rows, lse, grad_logp, dh_buf, dw_buf,
            m, v, d, eps,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1), targets.stride(0),
            lse.stride(0), grad_logp.stride(0),
            dh_buf.stride(0), dh_buf.stride(1), dw_buf.stride(0), dw_buf.stride(1),
            NEED_DH=need_dh, NEED_DW=need_dw, FILTER=eps > 0,
            INPUT_PRECISION=precision, **cfg.meta("backward"),
        )  # fmt: skip
    return (dh.to(hidden.dtype) if need_dh else None), (dw.to(weight.dtype) if need_dw else None)
