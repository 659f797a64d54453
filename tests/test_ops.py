"""`sequence_logprobs` / `token_logprobs`: the chunked backend against the reference (the spec).

The Triton backend has its own file (tests/test_triton_kernels.py) because it runs in the interpreter.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.ops.logprobs import (
    default_chunk_size,
    reference_sequence_logprobs,
    sequence_logprobs,
    token_logprobs,
)


def make_inputs(n, d, v, s, seed, dtype=torch.float32, scale=1.0, p_mask=0.7):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g) * scale).to(dtype).requires_grad_()
    weight = (torch.randn(v, d, generator=g) / d**0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    seq_ids = torch.sort(torch.randint(0, s, (n,), generator=g)).values
    mask = torch.rand(n, generator=g) < p_mask
    return hidden, weight, targets, seq_ids, mask


def value_and_grads(fn, hidden, weight, seed=1):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    out = fn(h, w)
    # a random upstream gradient exercises every per-sequence weight g_s, not just ones
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * dout).sum().backward()
    return out.detach(), h.grad, w.grad


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 70),
    d=st.integers(1, 40),
    v=st.integers(1, 300),
    s=st.integers(1, 5),
    chunk=st.integers(1, 80),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_reference_for_every_chunk_size(n, d, v, s, chunk, seed):
    hidden, weight, targets, seq_ids, mask = make_inputs(n, d, v, s, seed)

    def ref(h, w):
        return reference_sequence_logprobs(h, w, targets, seq_ids, mask, s)

    def ours(h, w):
        return sequence_logprobs(h, w, targets, seq_ids, mask, s, backend="chunked", chunk_size=chunk)

    for a, b in zip(value_and_grads(ours, hidden, weight), value_and_grads(ref, hidden, weight)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_public_reference_backend_is_the_reference():
    hidden, weight, targets, seq_ids, mask = make_inputs(33, 17, 101, 3, 0)
    a = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 3, backend="reference")
    b = reference_sequence_logprobs(hidden, weight, targets, seq_ids, mask, 3)
    assert torch.equal(a, b)


def test_sequence_sum_is_sum_of_token_logprobs_by_hand():
    """Two tokens, vocab 2, d 1: z = w * h. Token 0: h=1, W=[0, ln 3] -> p(y=1) = 3/4.
    Token 1: h=2 -> z=[0, 2 ln 3], p(y=0) = 1/(1+9) = 1/10. Both in sequence 0 -> ln(3/4) + ln(1/10)."""
    hidden = torch.tensor([[1.0], [2.0]])
    weight = torch.tensor([[0.0], [torch.log(torch.tensor(3.0)).item()]])
    targets = torch.tensor([1, 0])
    seq_ids = torch.tensor([0, 0])
    mask = torch.tensor([True, True])
    for backend in ("chunked", "reference"):
        out = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2, backend=backend)
        expected = torch.tensor([torch.log(torch.tensor(0.75)) + torch.log(torch.tensor(0.1)), 0.0])
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_masked_tokens_contribute_exactly_zero(backend):
    hidden, weight, targets, seq_ids, mask = make_inputs(40, 16, 97, 3, 3)
    mask[::3] = False
    logp = token_logprobs(hidden, weight, targets, mask, backend=backend)
    assert torch.all(logp[~mask] == 0)
    logp.sum().backward()
    assert torch.all(hidden.grad[~mask] == 0)
    # changing a masked token's hidden state or target changes nothing
    h2 = hidden.detach().clone()
    h2[~mask] = 1e3
    t2 = targets.clone()
    t2[~mask] = 0
    a = sequence_logprobs(hidden.detach(), weight.detach(), targets, seq_ids, mask, 3, backend=backend)
    b = sequence_logprobs(h2, weight.detach(), t2, seq_ids, mask, 3, backend=backend)
    assert torch.equal(a, b)


def test_all_masked_and_empty():
    hidden, weight, targets, seq_ids, _ = make_inputs(5, 4, 11, 2, 0)
    mask = torch.zeros(5, dtype=torch.bool)
    out = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2, backend="chunked")
    out.sum().backward()
    assert torch.equal(out, torch.zeros(2)) and torch.equal(hidden.grad, torch.zeros_like(hidden))
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    empty = sequence_logprobs(
        torch.zeros(0, 4),
        torch.zeros(11, 4),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.bool),
        1,
        backend="chunked",
    )
    assert torch.equal(empty, torch.zeros(1))


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_float64_gradcheck(backend):
    hidden, weight, targets, seq_ids, mask = make_inputs(9, 5, 13, 3, 4, dtype=torch.float64)

    def fn(h, w):
        return sequence_logprobs(h, w, targets, seq_ids, mask, 3, backend=backend, chunk_size=4).double()

    assert torch.autograd.gradcheck(fn, (hidden, weight), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_softcap_gradcheck_and_agreement(backend):
    hidden, weight, targets, seq_ids, mask = make_inputs(9, 5, 13, 3, 5, dtype=torch.float64, scale=4.0)

    def fn(h, w):
        return sequence_logprobs(h, w, targets, seq_ids, mask, 3, backend=backend, softcap=2.0).double()

    assert torch.autograd.gradcheck(fn, (hidden, weight), eps=1e-6, atol=1e-5)
    capped = fn(hidden, weight)
    uncapped = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 3, backend=backend).double()
    assert not torch.allclose(capped, uncapped)  # the cap is actually applied


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_no_nan_with_huge_logits(backend):
    """Logits of magnitude ~1e4: log-probs are finite (0 or very negative), gradients finite."""
    hidden, weight, targets, seq_ids, mask = make_inputs(20, 8, 50, 2, 6)
    with torch.no_grad():
        hidden.mul_(1e4 / (hidden @ weight.T).abs().max())
    out = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2, backend=backend)
    out.sum().backward()
    assert (
        torch.isfinite(out).all() and torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()
    )
    assert out.abs().max() > 100  # really extreme, not accidentally tame


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_low_precision_inputs(dtype):
    """fp16/bf16 inputs: fp32 outputs, input-dtype gradients, close to the fp32 reference."""
    hidden, weight, targets, seq_ids, mask = make_inputs(30, 24, 77, 2, 7, dtype=dtype)
    out = sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2, backend="chunked")
    out.sum().backward()
    assert out.dtype == torch.float32 and hidden.grad.dtype == dtype and weight.grad.dtype == dtype
    ref = reference_sequence_logprobs(
        hidden.detach().float(), weight.detach().float(), targets, seq_ids, mask, 2
    )
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_weight_without_grad_skips_dw():
    hidden, weight, targets, seq_ids, mask = make_inputs(12, 8, 31, 2, 8)
    weight = weight.detach()
    sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2, backend="chunked").sum().backward()
    h = hidden.detach().clone().requires_grad_()
    reference_sequence_logprobs(h, weight, targets, seq_ids, mask, 2).sum().backward()
    torch.testing.assert_close(hidden.grad, h.grad, rtol=1e-5, atol=1e-6)


def test_default_chunk_size_bounds_memory():
    assert default_chunk_size(49152) * 49152 * 4 <= 64 * 2**20
    assert default_chunk_size(10) >= 16


# ---- bad input: a ValueError naming the argument and what was expected ----

GOOD = make_inputs(6, 4, 9, 2, 0)


def call(**over):
    hidden, weight, targets, seq_ids, mask = (t.detach() for t in GOOD)
    args = dict(hidden=hidden, weight=weight, targets=targets, seq_ids=seq_ids, mask=mask, num_seqs=2)
    args.update(over)
    return sequence_logprobs(**args, backend="chunked")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (dict(hidden=torch.zeros(6)), r"hidden: expected shape \[N, d\]"),
        (dict(weight=torch.zeros(9, 5)), r"weight: expected \[V, 4\]"),
        (dict(weight=torch.zeros(9, 4, dtype=torch.float64)), r"weight: expected dtype torch.float32"),
        (dict(targets=torch.zeros(5, dtype=torch.long)), r"targets: expected shape \[6\]"),
        (dict(targets=torch.zeros(6, dtype=torch.int32)), r"targets: expected dtype torch.long"),
        (dict(targets=torch.full((6,), 9)), r"targets: ids must be in \[0, 9\)"),
        (dict(targets=torch.full((6,), -1)), r"targets: ids must be in \[0, 9\)"),
        (dict(seq_ids=torch.zeros(6)), r"seq_ids: expected dtype torch.long"),
        (dict(seq_ids=torch.zeros(7, dtype=torch.long)), r"seq_ids: expected shape \[6\]"),
        (dict(mask=torch.ones(6)), r"mask: expected dtype torch.bool"),
        (dict(num_seqs=1), r"num_seqs: expected more than the largest seq id \(1\)"),
        (dict(num_seqs=-1), r"num_seqs: expected a non-negative int"),
        (dict(seq_ids=torch.tensor([0, 0, -1, 1, 1, 1])), r"seq_ids: expected ids >= 0"),
        (dict(hidden=torch.zeros(6, 4, dtype=torch.long)), r"hidden: expected a floating dtype"),
    ],
)
def test_bad_input_raises_value_error(override, match):
    with pytest.raises(ValueError, match=match):
        call(**override)


def test_out_of_range_target_under_mask_is_fine():
    """Prompt positions often carry placeholder targets (e.g. -100); masked ones are never read."""
    hidden, weight, targets, seq_ids, mask = (t.detach() for t in GOOD)
    targets = targets.clone()
    mask = mask.clone()
    mask[0] = False
    targets[0] = -100
    call(targets=targets, mask=mask)


def test_bad_backend_lists_valid_ones():
    hidden, weight, targets, seq_ids, mask = (t.detach() for t in GOOD)
    with pytest.raises(ValueError, match="backend: expected one of auto, triton, chunked, reference"):
        sequence_logprobs(hidden, weight, targets, seq_ids, mask, 2, backend="fast")
