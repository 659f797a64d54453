"""The Triton backend of `sequence_logprobs` / `token_logprobs` against the reference (the spec).

Without a GPU the kernels run in Triton's interpreter on CPU tensors (fp32 and fp16; the interpreter
has no bf16 arithmetic). With TRITON_INTERPRET=0 on a CUDA machine the same tests run the compiled
kernels on the GPU, in bf16 too (`make gpu-check`). Tolerances follow flash-attention: fp32 is compared
to the reference directly; for fp16 / bf16, `err(ours vs fp32 reference) <= 2 * err(torch in that dtype
vs fp32 reference) + atol`, where the "torch in that dtype" path is the textbook one (logits in the
input dtype, log-softmax in fp32), and the fp16 `atol` is scaled to bf16 by the unit roundoffs.

Shapes stay small (N <= 64, V <= 300, d <= 64, one V = 1001 and one d = 576 case): the interpreter
executes every program in numpy.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: CPU tensors -> interpreter

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.csrc_triton import logprobs as lk
from cipo_fast.ops import logprobs as ops

DEVICE = "cpu" if lk._interpreted() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip(
        "Triton kernels are compiled (TRITON_INTERPRET=0) but there is no GPU", allow_module_level=True
    )

# bf16 only compiled: the interpreter has no bf16 arithmetic
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
HALF = (torch.float16, torch.bfloat16)


def half_atol(dtype: torch.dtype, fp16_atol: float) -> float:
    """An absolute tolerance set for fp16, scaled to `dtype` by the ratio of unit roundoffs (bf16: 8x)."""
    return fp16_atol * torch.finfo(dtype).eps / torch.finfo(torch.float16).eps


# fp32: direct comparison to the reference. fp16 / bf16: the `atol` of `err <= 2 * err_torch + atol`.
TOL = {
    torch.float32: {"value": (1e-5, 1e-5), "grad": (1e-5, 1e-5)},  # (rtol, atol)
    **{dt: {"value": half_atol(dt, 1e-4), "grad": half_atol(dt, 2e-3)} for dt in HALF},
}


def make_inputs(n, d, v, s, seed, dtype=torch.float32, scale=1.0, p_mask=0.7):
    """hidden [n, d], weight [v, d] (so that logits are ~N(0, scale^2)), targets, sorted seq_ids, mask;
    masked targets are -100 (ignore-index style): the kernels must never read them."""
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g) * scale).to(dtype)
    weight = (torch.randn(v, d, generator=g) / d**0.5).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    seq_ids = torch.sort(torch.randint(0, s, (n,), generator=g)).values
    mask = torch.rand(n, generator=g) < p_mask
    targets = torch.where(mask, targets, torch.full_like(targets, -100))
    return [t.to(DEVICE) for t in (hidden, weight, targets, seq_ids, mask)]


def value_and_grads(fn, hidden, weight, seed=1, need_dh=True, need_dw=True):
    """(out, d sum(out * dout)/dhidden or None, .../dweight or None) for a random upstream gradient."""
    h = hidden.detach().clone().requires_grad_(need_dh)
    w = weight.detach().clone().requires_grad_(need_dw)
    out = fn(h, w)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(
        out.device
    )
    (out * dout).sum().backward()
    return out.detach(), h.grad, w.grad


def textbook_fp16(h, w, targets, seq_ids, mask, num_seqs):
    """What a same-dtype PyTorch model computes: fp16 logits, log-softmax in fp32."""
    logits = (h @ w.T).float()  # [N, d] @ [d, V] -> [N, V] rounded to the input dtype
    logp = torch.log_softmax(logits, -1).gather(1, targets.clamp(0, w.shape[0] - 1)[:, None])[:, 0]
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    return torch.zeros(num_seqs, device=h.device).index_add(0, seq_ids, logp)


def assert_matches_reference(ours_fn, hidden, weight, targets, seq_ids, mask, num_seqs, **grad_kw):
    """Values and gradients of `ours_fn` vs `ops.reference_sequence_logprobs` with the TOL table."""

    def ref(h, w):
        return ops.reference_sequence_logprobs(h, w, targets, seq_ids, mask, num_seqs)

    dtype = hidden.dtype
    ours = value_and_grads(ours_fn, hidden, weight, **grad_kw)
    if dtype == torch.float32:
        expected = value_and_grads(ref, hidden, weight, **grad_kw)
        for kind, a, b in zip(("value", "grad", "grad"), ours, expected):
            if b is None:
                assert a is None
                continue
            rtol, atol = TOL[dtype][kind]
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        return
    ref32 = value_and_grads(ref, hidden.float(), weight.float(), **grad_kw)

    def torch16(h, w):
        return textbook_fp16(h, w, targets, seq_ids, mask, num_seqs)

    same_dtype = value_and_grads(torch16, hidden, weight, **grad_kw)
    for kind, a, b, c in zip(("value", "grad", "grad"), ours, ref32, same_dtype):
        if b is None:
            assert a is None
            continue
        assert a.dtype == (torch.float32 if kind == "value" else dtype)
        err = (a.float() - b).abs().max().item()
        err_torch = (c.float() - b).abs().max().item()
        assert err <= 2 * err_torch + TOL[dtype][kind], f"{kind}: err {err:.3g} vs torch fp16 {err_torch:.3g}"


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 64),
    d=st.integers(1, 64),
    v=st.integers(1, 300),
    s=st.integers(1, 4),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_sequence_logprobs_matches_reference(n, d, v, s, dtype, seed):
    hidden, weight, targets, seq_ids, mask = make_inputs(n, d, v, s, seed, dtype)

    def ours(h, w):
        return ops.sequence_logprobs(h, w, targets, seq_ids, mask, s, backend="triton")

    assert_matches_reference(ours, hidden, weight, targets, seq_ids, mask, s)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "n,v,d",
    [(1, 1, 1), (1, 7, 3), (5, 1, 17), (3, 1001, 17), (2, 7, 576), (64, 129, 16), (65, 300, 33)],
)
def test_token_logprobs_odd_shapes(n, v, d, dtype):
    """N = 1, V = 1 (logp = 0), odd V across several vocab blocks and splits, d below / above one block."""
    hidden, weight, targets, _, _ = make_inputs(n, d, v, 1, n * 1000 + v + d, dtype, p_mask=1.0)
    mask = torch.ones(n, dtype=torch.bool, device=DEVICE)
    seq_ids = torch.arange(n, device=DEVICE)

    def ours(h, w):
        return ops.token_logprobs(h, w, targets, mask, backend="triton")

    assert_matches_reference(ours, hidden, weight, targets, seq_ids, mask, n)
    if v == 1:
        assert torch.equal(ours(hidden, weight), torch.zeros(n, device=DEVICE))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_tokens_contribute_exactly_zero(dtype):
    """Masked rows: logp and dH rows exactly 0; changing their hidden states or targets changes no
    output and no gradient (bitwise in the interpreter, whose atomics run in a fixed order)."""
    n, d, v = 40, 24, 150
    hidden, weight, targets, _, mask = make_inputs(n, d, v, 1, 7, dtype, p_mask=0.5)
    assert mask.any() and not mask.all()

    def ours(y):
        return lambda h, w: ops.token_logprobs(h, w, y, mask, backend="triton")

    out, dh, dw = value_and_grads(ours(targets), hidden, weight)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    assert torch.equal(dh[~mask], torch.zeros_like(dh[~mask]))

    hidden2 = hidden.clone()
    hidden2[~mask] = (torch.randn(int((~mask).sum()), d) * 100).to(dtype).to(DEVICE)
    targets2 = torch.where(mask, targets, torch.full_like(targets, 10**9))
    out2, dh2, dw2 = value_and_grads(ours(targets2), hidden2, weight)
    same = torch.equal if DEVICE == "cpu" else lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert same(out, out2) and same(dh, dh2) and same(dw, dw2)


def test_all_tokens_masked():
    hidden, weight, targets, seq_ids, _ = make_inputs(9, 8, 20, 2, 3)
    mask = torch.zeros(9, dtype=torch.bool, device=DEVICE)

    def ours(h, w):
        return ops.sequence_logprobs(h, w, targets, seq_ids, mask, 2, backend="triton")

    out, dh, dw = value_and_grads(ours, hidden, weight)
    assert torch.equal(out, torch.zeros(2, device=DEVICE))
    assert torch.equal(dh, torch.zeros_like(dh)) and torch.equal(dw, torch.zeros_like(dw))


def _gradient_error_bounds(hidden, weight, targets, mask, g, dtype):
    """First-order bounds on |error| of dH and dW that fp32 logits allow (Higham, "Accuracy and Stability
    of Numerical Algorithms", 2nd ed., eq. 3.5: |fl(x.y) - x.y| <= d u |x|.|y|). An error dz_tv in z
    moves p_tv by p_tv (dz_tv - dlse_t), and |dlse_t| <= max_v |dz_tv|; dz = g (onehot - p) is then
    rounded to the input dtype (unit roundoff 2^-11 for fp16, 2^-8 for bf16) before the two products."""
    h, w = hidden.double(), weight.double()
    d, v = h.shape[1], w.shape[0]
    u32, u_in = 2.0**-24, torch.finfo(dtype).eps / 2  # unit roundoff of the input dtype
    p = torch.softmax(h @ w.T, -1)
    bz = d * u32 * (h.abs() @ w.abs().T)  # [n, v] bound on the error of each logit
    dp = p * (bz + bz.amax(-1, keepdim=True))
    onehot = torch.nn.functional.one_hot(targets.clamp(min=0), v).double() * mask.double()[:, None]
    dz = g[:, None] * (onehot - p)
    ddz = g.abs()[:, None] * dp + u_in * dz.abs()
    dh = ddz @ w.abs() + d * u32 * (dz.abs() @ w.abs())
    dw = ddz.T @ h.abs() + d * u32 * (dz.abs().T @ h.abs())
    return dh, dw


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_nan_with_logits_of_magnitude_1e4(dtype):
    """z = W h with |z| ~ 1e4: logsumexp must not overflow and softmax must not produce NaN; the
    gradients stay within what fp32 logits of that size allow (`_gradient_error_bounds`: the logits
    themselves are only ~1e4 * 2^-24 exact, and p inherits that error)."""
    n, d, v, s = 24, 16, 200, 3
    hidden, weight, targets, seq_ids, mask = make_inputs(n, d, v, s, 11, torch.float32)
    hidden = (hidden * 100).to(dtype)  # |h| ~ 100
    weight = (weight * 100).to(dtype)  # |W h| ~ 1e4 (fp16: max 65504, fine)
    z = hidden.float() @ weight.float().T
    assert z.abs().max() > 5e3

    def ours(h, w):
        return ops.sequence_logprobs(h, w, targets, seq_ids, mask, s, backend="triton")

    def ref(h, w):
        return ops.reference_sequence_logprobs(h, w, targets, seq_ids, mask, s)

    out, dh, dw = value_and_grads(ours, hidden, weight)
    assert all(bool(t.isfinite().all()) for t in (out, dh, dw))
    ref_out, ref_dh, ref_dw = value_and_grads(ref, hidden.double().cpu(), weight.double().cpu())
    rel = 1e-5 if dtype == torch.float32 else half_atol(dtype, 2e-3)
    assert (out.double().cpu() - ref_out).abs().max().item() <= rel * (ref_out.abs().max().item() + 1.0)
    dout = torch.randn(s, generator=torch.Generator().manual_seed(1), dtype=torch.float32).double()
    g = dout[seq_ids.cpu()] * mask.cpu().double()  # value_and_grads' upstream gradient per token
    bound_dh, bound_dw = _gradient_error_bounds(
        hidden.cpu(), weight.cpu(), targets.cpu(), mask.cpu(), g, dtype
    )
    u_out = torch.finfo(dtype).eps / 2  # the final cast to the input dtype
    for got, exp, bound in ((dh, ref_dh, bound_dh), (dw, ref_dw, bound_dw)):
        err = (got.double().cpu() - exp).abs()
        # the bound is rigorous to first order (second-order terms are ~bound^2, < 1e-3 of it here); at
        # ordinary magnitudes the other tests hold the kernels to far tighter tolerances
        assert (err <= bound + u_out * exp.abs() + 1e-12).all(), (err - bound).max().item()


def _peaked_inputs(dtype, seed=5):
    """Logits ~N(0, 8^2): most probabilities are tiny, so many tiles fall under the filter threshold."""
    return make_inputs(48, 16, 300, 3, seed, dtype, scale=8.0, p_mask=0.8)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_filtering_on_and_off_agree(dtype):
    """`filter_eps=None` (auto: eps/32 for fp16, off for fp32) and `filter_eps=0` (off) agree within the
    dtype's tolerance, and both match the reference."""
    hidden, weight, targets, seq_ids, mask = _peaked_inputs(dtype)

    def ours(eps):
        return lambda h, w: ops.sequence_logprobs(
            h, w, targets, seq_ids, mask, 3, backend="triton", filter_eps=eps
        )

    off = value_and_grads(ours(0.0), hidden, weight)
    auto = value_and_grads(ours(None), hidden, weight)
    tol = 1e-6 if dtype == torch.float32 else half_atol(dtype, 2e-3)
    for a, b in zip(off, auto):
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=tol)
    assert_matches_reference(ours(None), hidden, weight, targets, seq_ids, mask, 3)


def test_filtering_error_is_bounded_by_the_skipped_entries():
    """With threshold eps, a skipped tile holds only entries with |onehot - p| < eps (of rows with
    g != 0). With r_tv = |onehot(y_t)_v - p_tv| [r_tv < eps]:
    |dH_t(filtered) - dH_t| <= |g_t| sum_v r_tv max_v |W_v|_inf and
    |dW_v(filtered) - dW_v| <= sum_t |g_t| r_tv |h_t|_inf. A large eps must skip something."""
    # 3 rows, 300 columns in tiles of BLOCK_V: at eps = 0.2 some tile holds no row's top entries
    hidden, weight, targets, _, mask = make_inputs(3, 16, 300, 1, 5, torch.float32, scale=8.0, p_mask=1.0)
    z = hidden @ weight.T
    p = torch.softmax(z, -1)
    onehot = torch.nn.functional.one_hot(targets, 300).float()
    g = torch.randn(hidden.shape[0], generator=torch.Generator().manual_seed(1)).to(DEVICE) * mask
    lse = torch.logsumexp(z, -1)

    def grads(eps):
        return lk.logprobs_backward(
            hidden, weight, targets, mask, lse, g, need_dh=True, need_dw=True, filter_eps=eps
        )

    dh0, dw0 = grads(0.0)
    for eps in (1e-3, 0.2):
        dh, dw = grads(eps)
        r = (onehot - p).abs()
        r = r * (r < eps)  # [N, V] entries that may have been skipped
        bound_dh = g.abs() * r.sum(1) * weight.abs().max()
        bound_dw = (g.abs()[:, None] * r).T @ hidden.abs().amax(1)
        assert ((dh - dh0).abs().amax(1) <= bound_dh + 1e-6).all()
        assert ((dw - dw0).abs().amax(1) <= bound_dw + 1e-6).all()
    assert not torch.equal(dh, dh0), "eps=0.2 should have skipped some tiles"


def test_confident_tokens_keep_relative_precision_in_fp16():
    """z_y ~ 11 against ~N(0, 1) elsewhere (V = 50): 1 - p_y ~ 1e-3, so the true dz_y = g (1 - p_y) is
    small. Forming onehot - p in fp32 before rounding keeps the fp16 gradient accurate relative to its
    own size; a separately added fp32 onehot term would leave an error ~|g| 2^-11 |W_y| (~10x the
    gradient error of textbook fp16 here)."""
    n, d, v = 16, 32, 50
    _, weight, _, _, _ = make_inputs(n, d, v, 1, 9, torch.float32, p_mask=1.0)
    targets = torch.arange(n, device=DEVICE)
    hidden = 2.0 * torch.eye(n, d, device=DEVICE) + 0.05 * weight[v - n :]  # nearly orthogonal rows
    weight[targets] = 5.5 * torch.eye(n, d, device=DEVICE)  # z_y ~ 11, other logits ~N(0, 0.1)
    hidden, weight = hidden.half(), weight.half()
    mask, seq_ids = torch.ones(n, dtype=torch.bool, device=DEVICE), torch.arange(n, device=DEVICE)
    p_y = torch.softmax(hidden.float() @ weight.float().T, -1).gather(1, targets[:, None])
    assert p_y.min() > 0.99 and p_y.max() < 0.9999

    def ours(h, w):
        return ops.sequence_logprobs(h, w, targets, seq_ids, mask, n, backend="triton")

    def ref(h, w):
        return ops.reference_sequence_logprobs(h, w, targets, seq_ids, mask, n)

    def torch16(h, w):
        return textbook_fp16(h, w, targets, seq_ids, mask, n)

    got, ref32, same_dtype = (value_and_grads(f, hidden, weight) for f in (ours, ref, torch16))
    ref32 = value_and_grads(ref, hidden.float(), weight.float())
    for a, b, c in list(zip(got, ref32, same_dtype))[1:]:
        err, err_torch = (a.float() - b).abs().max().item(), (c.float() - b).abs().max().item()
        assert err <= 2 * err_torch + 1e-5, f"err {err:.3g} vs textbook fp16 {err_torch:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("need_dh,need_dw", [(True, False), (False, True)])
def test_one_gradient_only(need_dh, need_dw, dtype):
    """weight.requires_grad False -> the kernel skips dW (NEED_DW off); likewise for hidden."""
    hidden, weight, targets, seq_ids, mask = make_inputs(30, 20, 77, 2, 13, dtype)

    def ours(h, w):
        return ops.sequence_logprobs(h, w, targets, seq_ids, mask, 2, backend="triton")

    assert_matches_reference(
        ours, hidden, weight, targets, seq_ids, mask, 2, need_dh=need_dh, need_dw=need_dw
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_inputs(dtype):
    """Strides are passed explicitly: a column-strided hidden, a transposed weight ([d, V] storage) and
    a strided targets view give the same result as contiguous copies."""
    n, d, v, s = 20, 12, 90, 2
    hidden, weight, targets, seq_ids, mask = make_inputs(n, d, v, s, 17, dtype)
    hidden_s = torch.zeros(n, 2 * d, dtype=dtype, device=DEVICE)
    hidden_s[:, ::2] = hidden
    weight_t = weight.T.contiguous().T  # strides (1, V)
    targets_s = torch.stack([targets, targets], 1)[:, 0]  # stride 2
    assert hidden_s[:, ::2].stride(1) == 2 and weight_t.stride(0) == 1 and targets_s.stride(0) == 2

    def ours(y):
        return lambda h, w: ops.sequence_logprobs(h, w, y, seq_ids, mask, s, backend="triton")

    expected = value_and_grads(ours(targets), hidden, weight)
    h = hidden_s.detach().requires_grad_()
    w = weight_t.detach().requires_grad_()
    out = ours(targets_s)(h[:, ::2], w)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    (out * dout).sum().backward()
    for a, b in zip((out, h.grad[:, ::2], w.grad), expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert torch.equal(h.grad[:, 1::2], torch.zeros_like(h.grad[:, 1::2]))


def test_forward_launcher_outputs_lse_and_zero_on_masked_rows():
    hidden, weight, targets, _, mask = make_inputs(37, 12, 260, 1, 21)
    logp, lse = lk.logprobs_forward(hidden, weight, targets, mask)
    z = hidden @ weight.T
    torch.testing.assert_close(lse[mask], torch.logsumexp(z, -1)[mask], rtol=1e-6, atol=1e-5)
    assert torch.equal(lse[~mask], torch.zeros_like(lse[~mask]))
    assert torch.equal(logp[~mask], torch.zeros_like(logp[~mask]))


def test_num_vocab_splits():
    assert lk.num_vocab_splits(1, 1, 108) == 1
    assert lk.num_vocab_splits(1000, 1200, 108) == 1  # enough token blocks: no split
    assert lk.num_vocab_splits(1, 3, 4) == 3  # capped at the vocab blocks
    for n_tok, n_voc, sms in [(2, 1188, 132), (7, 385, 108), (1, 1, 1)]:
        s = lk.num_vocab_splits(n_tok, n_voc, sms)
        per = -(-n_voc // s)
        assert 1 <= s <= n_voc and (s - 1) * per < n_voc <= s * per  # no empty split


def test_pick_config_is_a_pure_table_lookup():
    for kernel, table in lk.CONFIG_TABLES.items():
        assert set(table) == set(lk.FORWARD_CONFIGS)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for cap in (None, (8, 0), (8, 6), (8, 9), (9, 0), (12, 0)):
                for precision in ("tf32", "tf32x3"):
                    cfg = lk.pick_config(kernel, 4096, dtype, cap, precision)
                    assert cfg is lk.pick_config(kernel, 4096, dtype, cap, precision)
                    assert cfg in table.values()
    assert lk.config_name(4096, torch.bfloat16, (9, 0), "tf32") == "f16_sm90"
    assert lk.config_name(4096, torch.float32, (8, 0), "tf32x3") == "f32_sm80"
    assert lk.config_name(4096, torch.float32, (8, 6), "tf32") == "tf32_sm80"
    assert lk.auto_filter_eps(torch.float32) == 0.0
    assert lk.auto_filter_eps(torch.bfloat16) == torch.finfo(torch.bfloat16).eps / 32


def test_cpu_tensors_without_interpreter_raise_value_error():
    """Compiled kernels (TRITON_INTERPRET unset) on CPU tensors: a ValueError that names the fix."""
    code = (
        "import torch\n"
        "from cipo_fast.csrc_triton.logprobs import logprobs_forward\n"
        "try:\n"
        "    logprobs_forward(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long),"
        " torch.ones(2, dtype=torch.bool))\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "ValueError:" in res.stdout and "TRITON_INTERPRET=1" in res.stdout, res.stdout + res.stderr
