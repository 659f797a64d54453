"""The fused loss's Triton row kernels (`cipo_fast.csrc_triton.fused_rows`) and the fused op on them.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1); on a CUDA machine with TRITON_INTERPRET=0 the same tests run compiled. References:
`torch.logsumexp` / `gather` and the textbook `g (onehot - softmax)`; the fused op with Triton rows against
the same op with torch rows and against the textbook full-logits path (tests/test_ops_fused_loss.py).
Shapes stay small (V up to ~2.5 BLOCK_V, so the online merge crosses blocks and a ragged last block).
"""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ops_fused_loss import dpo_part, packed, reference_sums

from cipo_fast.csrc_triton import fused_rows as fr
from cipo_fast.ops.fused_loss import fused_group_loss

DEVICE = "cpu" if fr.interpreted() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip(
        "Triton kernels are compiled (TRITON_INTERPRET=0) but there is no GPU", allow_module_level=True
    )
BLOCK_V = fr.CONFIG.BLOCK_V


@settings(max_examples=12, deadline=None)
@given(
    c=st.integers(1, 5),
    v=st.sampled_from([1, 7, BLOCK_V - 1, BLOCK_V, BLOCK_V + 3, 2 * BLOCK_V + 517]),
    scale=st.sampled_from([0.1, 5.0, 60.0]),
    seed=st.integers(0, 2**16),
)
def test_row_lse_matches_torch(c, v, scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(c, v, generator=g) * scale).to(DEVICE)
    z[0, -1] = 80.0 * scale  # the row max in the last, ragged block
    y = torch.randint(0, v, (c,), generator=g).to(DEVICE)
    lse, zy = fr.row_lse(z, y)
    ref_lse, ref_zy = fr.row_lse_reference(z.double(), y)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=2e-6, atol=2e-6)
    assert torch.equal(zy, z.gather(1, y[:, None])[:, 0])


@settings(max_examples=12, deadline=None)
@given(
    c=st.integers(1, 4),
    v=st.sampled_from([5, BLOCK_V + 3, 2 * BLOCK_V + 517]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    confident=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_row_grad_matches_torch(c, v, dtype, confident, seed):
    g_ = torch.Generator().manual_seed(seed)
    z = torch.randn(c, v, generator=g_).to(DEVICE)
    y = torch.randint(0, v, (c,), generator=g_).to(DEVICE)
    if confident:  # p_y ~ 1 - 1e-6: 1 - p_y must survive the rounding to the operand dtype
        z[torch.arange(c), y] = 20.0
    g = torch.randn(c, generator=g_).to(DEVICE)
    g[0] = 0.0  # a zero-weight row
    lse = torch.logsumexp(z, dim=1)
    ref = fr.row_grad_reference(z.double(), y, lse.double(), g.double(), torch.float64)
    if dtype == torch.float32:
        out = fr.row_grad(z.clone(), y, lse, g, z)  # in place
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)
    else:
        out = fr.row_grad(z, y, lse, g, torch.empty(c, v, dtype=dtype, device=DEVICE))
        assert out.dtype == dtype
        # each entry is the fp32 value rounded once (half an fp16 ulp), the onehot term included; below
        # fp16's normal range the step is 2^-24, and fp32 vs float64 may straddle a rounding boundary
        torch.testing.assert_close(out.double(), ref, rtol=2**-11, atol=2**-23)
    assert torch.all(out[0] == 0)


def test_row_kernels_reject_bad_shapes():
    z = torch.zeros(3, 10, device=DEVICE)
    with pytest.raises(ValueError, match="y: expected"):
        fr.row_lse(z, torch.zeros(2, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="fp32"):
        fr.row_lse(z.half(), torch.zeros(3, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="out: expected"):
        y = torch.zeros(3, dtype=torch.long, device=DEVICE)
        fr.row_grad(z, y, torch.zeros(3), torch.zeros(3), torch.empty(3, 9, device=DEVICE))


def inputs(mb, vocab, d, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(mb.num_tokens, d, generator=g)
    w = torch.randn(vocab, d, generator=g) / d**0.5
    ref = torch.randn(mb.num_seqs, generator=g)
    return h.to(DEVICE), w.to(DEVICE), ref.to(DEVICE)


def run(mb, row_ops, h, w, ref, chunk_bytes, grad_dtype=None):
    cu = mb.cu_seqlens.tolist()
    bounds = [(cu[a], cu[b]) for a, b in mb.group_seqs]
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    if row_ops is None:  # the textbook path
        sums = reference_sums(hh, ww, mb)
        loss = dpo_part(mb, ref)(torch.arange(len(bounds)), sums)
    else:
        loss, sums = fused_group_loss(
            hh, ww, mb.targets, mb.loss_mask, mb.seq_ids, mb.num_seqs, bounds, dpo_part(mb, ref),
            shared_ids=mb.shared_ids, chunk_bytes=chunk_bytes, grad_dtype=grad_dtype, row_ops=row_ops,
        )  # fmt: skip
    (1.7 * loss).backward()
    return loss.detach(), sums.detach(), hh.grad, ww.grad


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("budget_tokens", [3, None])  # 3: groups split in two sweeps; None: one chunk
def test_fused_op_on_triton_rows(share, budget_tokens):
    """Same loss, log-probs and gradients as with torch rows and as the textbook path (fp32)."""
    vocab, d = 300, 16
    mb = packed(random.Random(7), n_pairs=3, share=share, vocab=vocab).to(DEVICE)
    h, w, ref = inputs(mb, vocab, d, seed=1)
    chunk_bytes = 4 * vocab * (budget_tokens or mb.num_tokens)
    got = run(mb, "triton", h, w, ref, chunk_bytes)
    torch_rows = run(mb, "torch", h, w, ref, chunk_bytes)
    textbook = run(mb, None, h, w, ref, chunk_bytes)
    for a, b, c in zip(got, torch_rows, textbook):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_fused_op_on_triton_rows_with_fp16_gradient_operands():
    """dz written in fp16 by the kernel (the GEMM operand dtype): gradients within fp16 rounding of fp32."""
    vocab, d = 300, 16
    mb = packed(random.Random(3), n_pairs=2, share=False, vocab=vocab).to(DEVICE)
    h, w, ref = inputs(mb, vocab, d, seed=2)
    half = run(mb, "triton", h, w, ref, 1 << 20, grad_dtype=torch.float16)
    full = run(mb, "torch", h, w, ref, 1 << 20)
    torch.testing.assert_close(half[0], full[0])  # the loss does not see the rounding
    for a, b in zip(half[2:], full[2:]):
        err = (a - b).abs().max() / b.abs().max()
        assert 0 < err < 4e-3, err  # rounded (not exact), but only by fp16's precision


@pytest.mark.parametrize("into_fp32", [False] + ([True] if DEVICE == "cuda" else []))
@pytest.mark.parametrize("dtype", [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else []))
def test_fused_op_with_16bit_inputs(dtype, into_fp32, monkeypatch):
    """16-bit hidden states and head: on a GPU the GEMMs take the 16-bit operands with fp32 outputs
    (`head_gemms.MixedGemms`, asserted to be the path taken there), dW added into its fp32 accumulator in
    place (`into_fp32`) or through a temporary; the loss and gradients are those of the fp32 textbook path
    on the same rounded inputs, within the operands' precision."""
    from cipo_fast.ops import head_gemms

    vocab, d = 300, 16
    mb = packed(random.Random(5), n_pairs=2, share=True, vocab=vocab).to(DEVICE)
    h, w, ref = inputs(mb, vocab, d, seed=3)
    h, w = h.to(dtype), w.to(dtype)
    if DEVICE == "cuda":
        assert head_gemms.MixedGemms.applies(h, w), "torch lacks mm(..., out_dtype=float32) on this GPU"
        if into_fp32 and not head_gemms.has_addmm_into_fp32(h.device):
            pytest.skip(
                "this torch's addmm.dtype_out cannot add into an fp32 accumulator; the fallback is tested"
            )
        monkeypatch.setitem(head_gemms._ADDMM_FP32, str(h.device), into_fp32)
    got = run(mb, "triton", h, w, ref, 1 << 20)
    full = run(mb, None, h.float(), w.float(), ref, 1 << 20)
    torch.testing.assert_close(got[0].float(), full[0], rtol=1e-4, atol=1e-4)  # logits: fp32 accumulation
    torch.testing.assert_close(got[1].float(), full[1], rtol=1e-4, atol=1e-3)
    for a, b in zip(got[2:], full[2:]):
        assert a.dtype == dtype
        err = (a.float() - b).abs().max() / b.abs().max()
        assert err < 8 * torch.finfo(dtype).eps, err


def test_row_ops_must_be_known():
    with pytest.raises(ValueError, match="row_ops"):
        fused_group_loss(
            torch.zeros(2, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.bool),
            torch.zeros(2, dtype=torch.long), 1, [(0, 2)], lambda sel, lp: lp.sum(), row_ops="cuda",
        )  # fmt: skip
