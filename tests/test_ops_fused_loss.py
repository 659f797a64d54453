"""The loss inside the LM-head pass (`cipo_fast.ops.fused_loss`) against the two-pass op + the loss outside.

The reference is the textbook path: full logits, `log_softmax`, per-sequence sums (counting a prefix-shared
position for both sides), then the loss, all through autograd. Checked in fp64 (exact up to summation
order) over random packed layouts, with and without prefix sharing, chunk budgets from one token to the
whole micro-batch (so both the one-sweep and the two-sweep path run), and a frozen head; the number of
`[tokens, d] x [d, V]` GEMMs is counted (3 per chunk, 2 with a frozen head, against the two-pass op's 4);
and one trainer step with `fused_loss` on and off gives the same loss and gradients on the tiny model.
"""

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from cipo_fast.data.packing import Sequence, collate
from cipo_fast.ops.fused_loss import fused_group_loss
from cipo_fast.ops.logprobs import reference_token_logprobs, sequence_logprobs, token_logprobs


def packed(rng: random.Random, n_pairs: int, share: bool, vocab: int):
    groups = []
    for _ in range(n_pairs):
        prompt = tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 6)))
        common = tuple(rng.randrange(vocab) for _ in range(rng.randint(0, 5)))
        a = common + tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 7)))
        b = common + tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 7)))
        groups.append((Sequence(prompt, a), Sequence(prompt, b)))
    return collate(groups, list(range(n_pairs)), share_prefix=share)


def reference_sums(h, w, mb):
    logp = reference_token_logprobs(h, w, mb.targets, mb.loss_mask)
    sums = torch.zeros(mb.num_seqs + 1, dtype=logp.dtype, device=logp.device).index_add(0, mb.seq_ids, logp)
    if mb.shared_ids is not None:
        sums = sums.index_add(0, mb.shared_ids, logp)
    return sums[: mb.num_seqs]


def dpo_part(mb, ref, beta=0.3, n_groups=None):
    """loss_of for DPO with per-pair reference numbers; also weights the chosen NLL (RPO) so that the two
    sides get different coefficients."""
    n_groups = n_groups or len(mb.group_seqs)
    c_all, r_all = mb.pairs[:, 0], mb.pairs[:, 1]

    def loss_of(sel, lp):
        c, r = c_all[sel], r_all[sel]
        per = -F.logsigmoid(beta * ((lp[c] - ref[c]) - (lp[r] - ref[r]))) - 0.05 * lp[c] / mb.lengths[c]
        return per.sum() / n_groups

    return loss_of


def run_both(mb, d, vocab, chunk_bytes, need_dw=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(mb.num_tokens, d, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, d, generator=g, dtype=torch.float64) / d**0.5
    ref = torch.randn(mb.num_seqs, generator=g, dtype=torch.float64)
    cu = mb.cu_seqlens.tolist()
    bounds = [(cu[a], cu[b]) for a, b in mb.group_seqs]
    loss_of = dpo_part(mb, ref)
    out = []
    for fused in (True, False):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_(need_dw)
        if fused:
            loss, sums = fused_group_loss(
                hh, ww, mb.targets, mb.loss_mask, mb.seq_ids, mb.num_seqs, bounds, loss_of,
                shared_ids=mb.shared_ids, chunk_bytes=chunk_bytes,
            )  # fmt: skip
        else:
            sums = reference_sums(hh, ww, mb)
            loss = loss_of(torch.arange(len(bounds)), sums)
        (1.7 * loss).backward()  # a non-unit upstream gradient
        out.append((loss.detach(), sums.detach(), hh.grad, ww.grad))
    return out


@settings(max_examples=25, deadline=None)
@given(
    n_pairs=st.integers(1, 5),
    share=st.booleans(),
    budget_tokens=st.integers(1, 80),
    need_dw=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_the_textbook_path(n_pairs, share, budget_tokens, need_dw, seed):
    vocab, d = 37, 8
    mb = packed(random.Random(seed), n_pairs, share, vocab)
    (loss, sums, dh, dw), (loss_r, sums_r, dh_r, dw_r) = run_both(
        mb, d, vocab, chunk_bytes=4 * vocab * budget_tokens, need_dw=need_dw, seed=seed
    )
    torch.testing.assert_close(loss, loss_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sums, sums_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dh, dh_r, rtol=1e-10, atol=1e-12)
    if need_dw:
        torch.testing.assert_close(dw, dw_r, rtol=1e-10, atol=1e-12)
    else:
        assert dw is None and dw_r is None


class CountGemms(TorchDispatchMode):
    """Counts matrix products with a vocabulary-sized operand or result (the LM head's)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.count = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)] + [tuple(out.shape)]
            self.count += any(self.vocab in s for s in shapes)
        return out


@pytest.mark.parametrize("need_dw,expected", [(True, 3), (False, 2)])
def test_three_gemms_two_with_a_frozen_head(need_dw, expected):
    vocab, d = 101, 16
    mb = packed(random.Random(3), 3, True, vocab)
    cu = mb.cu_seqlens.tolist()
    bounds = [(cu[a], cu[b]) for a, b in mb.group_seqs]
    h = torch.randn(mb.num_tokens, d, requires_grad=True)
    w = torch.randn(vocab, d, requires_grad=need_dw)
    loss_of = dpo_part(mb, torch.zeros(mb.num_seqs))
    with CountGemms(vocab) as fused_count:  # one chunk holds the whole micro-batch
        loss, _ = fused_group_loss(
            h, w, mb.targets, mb.loss_mask, mb.seq_ids, mb.num_seqs, bounds, loss_of, shared_ids=mb.shared_ids
        )
        loss.backward()
    assert fused_count.count == expected
    with CountGemms(vocab) as two_pass:
        s = sequence_logprobs(h, w, mb.targets, mb.seq_ids, mb.loss_mask, mb.num_seqs, backend="chunked")
        loss_of(torch.arange(len(bounds)), s).backward()
    assert two_pass.count == expected + 1


class GemmDtypes(TorchDispatchMode):
    """The operand dtype of every matrix product with a vocabulary-sized operand or result."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.dtypes = vocab, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            ts = [a for a in args if isinstance(a, torch.Tensor)]
            if any(self.vocab in tuple(t.shape) for t in [*ts, out]):
                self.dtypes.append(ts[-1].dtype)
        return out


@pytest.mark.parametrize("path", ["fused", "two-pass"])
def test_bf16_gradient_gemms(path):
    """With `grad_dtype=bf16` on bf16 inputs the logits GEMMs stay fp32 (log-probs and loss bit-identical to
    the fp32-GEMM run), dH / dW run on bf16 operands and stay within bf16 rounding of the fp64 gradient."""
    vocab, d = 211, 32
    mb = packed(random.Random(5), 4, True, vocab)
    cu = mb.cu_seqlens.tolist()
    bounds = [(cu[a], cu[b]) for a, b in mb.group_seqs]
    g = torch.Generator().manual_seed(1)
    h0 = torch.randn(mb.num_tokens, d, generator=g).bfloat16()
    w0 = (torch.randn(vocab, d, generator=g) / d**0.5).bfloat16()
    loss_of = dpo_part(mb, torch.randn(mb.num_seqs, generator=g))

    def run(dtype, grad_dtype):
        h, w = (t.to(dtype).clone().requires_grad_() for t in (h0, w0))
        with GemmDtypes(vocab) as seen:
            if path == "fused":
                loss, sums = fused_group_loss(
                    h, w, mb.targets, mb.loss_mask, mb.seq_ids, mb.num_seqs, bounds, loss_of,
                    shared_ids=mb.shared_ids, grad_dtype=grad_dtype,
                )  # fmt: skip
            else:
                logp = token_logprobs(
                    h, w, mb.targets, mb.loss_mask, backend="chunked", grad_dtype=grad_dtype
                )
                full = torch.zeros(mb.num_seqs + 1, dtype=logp.dtype)
                sums = full.index_add(0, mb.seq_ids, logp).index_add(0, mb.shared_ids, logp)[:-1]
                loss = loss_of(torch.arange(len(bounds)), sums)
            loss.backward()
        return loss.detach(), sums.detach(), h.grad.double(), w.grad.double(), seen.dtypes

    loss, sums, dh, dw, dtypes = run(torch.bfloat16, torch.bfloat16)
    loss32, sums32, *_ = run(torch.bfloat16, None)
    loss64, sums64, dh64, dw64, _ = run(torch.float64, None)
    logits_gemms = 1 if path == "fused" else 2  # the two-pass op recomputes the logits in backward
    assert dtypes == [torch.float32] * logits_gemms + [torch.bfloat16] * 2, dtypes
    assert torch.equal(loss, loss32) and torch.equal(sums, sums32)
    torch.testing.assert_close(sums.double(), sums64, rtol=1e-5, atol=1e-4)  # fp32 logits
    for got, want in ((dh, dh64), (dw, dw64)):
        err = (got - want).abs().max() / want.abs().max()
        assert err < 2e-2, err  # bf16 operands: 2^-8 relative per element
        assert err > 0  # the bf16 GEMMs ran: fp32 ones from bf16-exact inputs would be ~1e-7


def test_bounds_must_cover_the_stream():
    mb = packed(random.Random(0), 2, False, 20)
    cu = mb.cu_seqlens.tolist()
    h, w = torch.randn(mb.num_tokens, 4), torch.randn(20, 4)
    with pytest.raises(ValueError, match="cover every masked-in position"):
        fused_group_loss(
            h, w, mb.targets, mb.loss_mask, mb.seq_ids, mb.num_seqs, [(cu[0], cu[2])],
            dpo_part(mb, torch.zeros(mb.num_seqs)),
        )  # fmt: skip


@pytest.mark.parametrize("loss", ["sigmoid", "simpo", "npo"])
def test_trainer_step_with_and_without_the_fused_loss(tiny_model_dir, tmp_path, loss):
    """accumulate_step on the tiny model: the same loss, stats and parameter gradients either way (DPO and
    SimPO pairs with prefix sharing and a retain set; NPO single sequences)."""
    from helpers import train_config

    from cipo_fast.model.loading import ModelOptions, load_model
    from cipo_fast.train.step import StepStats, accumulate_step

    model, _ = load_model(str(tiny_model_dir), ModelOptions())
    rng = random.Random(1)
    mb_pairs = [
        (Sequence(p, a), Sequence(p, b))
        for p, a, b in (
            (tuple(rng.randrange(3, 500) for _ in range(5)), *(tuple(rng.randrange(3, 500) for _ in range(n)) for n in (9, 6)))
            for _ in range(3)
        )
    ]  # fmt: skip
    groups = mb_pairs if loss != "npo" else [(s,) for pair in mb_pairs for s in pair]
    retain = [Sequence((5, 6, 7), tuple(rng.randrange(3, 500) for _ in range(8))) for _ in range(2)]

    class Ref:
        def get(self, seqs):
            return torch.linspace(-40.0, -20.0, len(seqs))

    method = {"sigmoid": "dpo", "simpo": "simpo", "npo": "npo"}[loss]
    results = []
    for fused in (True, False):
        cfg = train_config(
            method=method, model="m", data="d", out=str(tmp_path / "o"), fused_loss=fused, token_budget=40
        )
        model.zero_grad(set_to_none=True)
        stats = StepStats()
        accumulate_step(model, groups, retain, None if loss == "simpo" else Ref(), cfg, stats)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((stats, grads))
    (s_f, g_f), (s_u, g_u) = results
    assert s_f.loss == pytest.approx(s_u.loss, rel=1e-5)
    assert s_f.means().keys() == s_u.means().keys()
    for k, v in s_u.means().items():
        assert s_f.means()[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert g_f.keys() == g_u.keys() and g_f
    for name in g_u:
        torch.testing.assert_close(g_f[name], g_u[name], rtol=1e-4, atol=1e-6, msg=name)
