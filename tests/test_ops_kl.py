"""The chunked KL op against the textbook full-logits computation, and the packed KL of a model pair
against the models' own logits."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.ops.kl import token_kl, token_kl_reference


def _inputs(n, d, v, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(v, d, generator=g, dtype=dtype) / d**0.5
    hr = h + 0.3 * torch.randn(n, d, generator=g, dtype=dtype)
    wr = w + 0.1 * torch.randn(v, d, generator=g, dtype=dtype) / d**0.5
    return h, w, hr, wr


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 24),
    v=st.integers(2, 60),
    chunk=st.integers(1, 17),
    seed=st.integers(0, 10_000),
)
def test_token_kl_values_and_gradients_match_full_logits(n, d, v, chunk, seed):
    h, w, hr, wr = _inputs(n, d, v, seed, torch.float64)
    g = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    a_h, a_w = h.clone().requires_grad_(), w.clone().requires_grad_()
    got = token_kl(a_h, a_w, hr, wr, chunk_size=chunk)
    (got.double() * g).sum().backward()
    b_h, b_w = h.clone().requires_grad_(), w.clone().requires_grad_()
    logp = torch.log_softmax(b_h @ b_w.T, -1)
    logq = torch.log_softmax(hr @ wr.T, -1)
    want = torch.nn.functional.kl_div(logp, logq, reduction="none", log_target=True).sum(-1)
    (want * g).sum().backward()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert (got >= -1e-6).all()  # a KL divergence
    torch.testing.assert_close(a_h.grad, b_h.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a_w.grad, b_w.grad, rtol=1e-5, atol=1e-6)


def test_token_kl_is_zero_with_zero_gradient_at_the_reference_and_masks_tokens():
    h, w, _, _ = _inputs(12, 8, 30, 0)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    kl = token_kl(hh, ww, h, w, chunk_size=5)
    kl.sum().backward()
    assert kl.abs().max() < 1e-6 and hh.grad.abs().max() < 1e-6 and ww.grad.abs().max() < 1e-6
    h, w, hr, wr = _inputs(12, 8, 30, 1)
    mask = torch.arange(12) % 3 == 0
    torch.testing.assert_close(token_kl(h, w, hr, wr, mask), token_kl_reference(h[mask], w, hr[mask], wr))
    with pytest.raises(ValueError, match="shapes differ"):
        token_kl(h, w, hr[:5], wr)


def test_micro_batch_kl_equals_the_models_own_logits(tiny_model_dir):
    """Per-sequence KL sums of a packed micro-batch (two sequences) equal KL(ref || policy) computed from
    the two models' full logits over each completion's positions."""
    from cipo_fast.data.packing import Sequence, pack
    from cipo_fast.model.forward import micro_batch_kl
    from cipo_fast.model.loading import ModelOptions, load_model

    ref, _ = load_model(str(tiny_model_dir), ModelOptions())
    pol, _ = load_model(str(tiny_model_dir), ModelOptions())
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seqs = [
        Sequence(tuple(range(5, 9)), tuple(range(9, 17))),
        Sequence(tuple(range(40, 46)), tuple(range(46, 49))),
    ]
    (mb,) = pack([(s,) for s in seqs], 64)
    got = micro_batch_kl(pol, (ref.eval(), torch.no_grad), mb)
    for k, s in enumerate(seqs):
        ids = torch.tensor(s.ids)[None]
        with torch.no_grad():
            logp = torch.log_softmax(pol(input_ids=ids).logits[0].float(), -1)
            logq = torch.log_softmax(ref(input_ids=ids).logits[0].float(), -1)
        kl = torch.nn.functional.kl_div(logp, logq, reduction="none", log_target=True).sum(-1)
        want = kl[len(s.prompt_ids) - 1 : len(s) - 1].sum()  # positions that predict completion tokens
        torch.testing.assert_close(got[k].detach(), want, rtol=1e-4, atol=1e-5)
