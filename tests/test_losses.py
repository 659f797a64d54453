"""The loss registry: hand-derived cases, properties, and DPO against Liger's independent implementation."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.ops.logprobs import sequence_logprobs
from cipo_fast.train import losses

P = losses.LossParams(beta=0.1, label_smoothing=0.0)


def pair(c=-1.0, r=-2.0, rc=-1.5, rr=-1.5, lc=2.0, lr=4.0):
    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    return losses.PairLogps(t(c), t(r), t(rc), t(rr), t(lc), t(lr))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_sigmoid_by_hand():
    """margin = (-1 + 1.5) - (-2 + 1.5) = 1;  u = 0.1;  loss = -log sigmoid(0.1) = log(1 + e^-0.1) = 0.644397.
    rewards: chosen 0.1 * 0.5 = 0.05, rejected 0.1 * -0.5 = -0.05."""
    loss, rc, rr = losses.dpo_sigmoid(pair(), P)
    assert loss.item() == pytest.approx(0.6443966600735709)
    assert rc.item() == pytest.approx(0.05) and rr.item() == pytest.approx(-0.05)


def test_dpo_label_smoothing_and_robust_by_hand():
    """eps = 0.2, u = 0.1:  cDPO = -0.8 log s(0.1) - 0.2 log s(-0.1);
    robust = (-0.8 log s(0.1) + 0.2 log s(-0.1)) / 0.6."""
    p = losses.LossParams(beta=0.1, label_smoothing=0.2)
    cdpo = losses.dpo_sigmoid(pair(), p)[0].item()
    robust = losses.dpo_robust(pair(), p)[0].item()
    assert cdpo == pytest.approx(-0.8 * log_sigmoid(0.1) - 0.2 * log_sigmoid(-0.1))
    assert robust == pytest.approx((-0.8 * log_sigmoid(0.1) + 0.2 * log_sigmoid(-0.1)) / 0.6)
    with pytest.raises(ValueError, match=r"robust DPO needs 0 <= eps < 0\.5"):
        losses.dpo_robust(pair(), losses.LossParams(label_smoothing=0.5))


def test_ipo_hinge_simpo_by_hand():
    """IPO: m = 0.5 / 2 - (-0.5) / 4 = 0.375; loss = (0.375 - 1 / 0.2)^2 = (-4.625)^2 = 21.390625.
    hinge: max(0, 1 - 0.1 * 1) = 0.9.
    SimPO (beta 2, gamma 0.5): avg_c = -1/2, avg_r = -2/4 -> u = 2 * 0 - 0.5; loss = -log s(-0.5)."""
    assert losses.ipo(pair(), P)[0].item() == pytest.approx(21.390625)
    assert losses.hinge(pair(), P)[0].item() == pytest.approx(0.9)
    simpo = losses.simpo(pair(), losses.LossParams(beta=2.0, simpo_gamma=0.5))
    assert simpo[0].item() == pytest.approx(-log_sigmoid(-0.5))
    assert simpo[1].item() == pytest.approx(-1.0)  # beta * avg_c


def test_single_sequence_losses_by_hand():
    """NPO (beta 0.1): S - R = -3 - (-2) = -1 -> -(2 / 0.1) log s(0.1) = 20 log(1 + e^-0.1) = 12.8879.
    GA: S / |s| = -3 / 3 = -1 (minimized: pushes log-probs down). NLL: 1."""
    x = losses.SeqLogps(torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([3.0]))
    assert losses.npo(x, P).item() == pytest.approx(-20 * log_sigmoid(0.1), rel=1e-6)
    assert losses.gradient_ascent(x, P).item() == pytest.approx(-1.0)
    assert losses.nll(x, P).item() == pytest.approx(1.0)


def test_dpo_at_initialization_is_log2():
    x = pair(c=-5.0, r=-7.0, rc=-5.0, rr=-7.0)
    assert losses.dpo_sigmoid(x, P)[0].item() == pytest.approx(math.log(2))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 0), min_size=4, max_size=4), st.floats(0.01, 2.0))
def test_swapping_chosen_and_rejected_mirrors_the_margin(v, beta):
    p = losses.LossParams(beta=beta)
    x = pair(*v)
    y = pair(c=v[1], r=v[0], rc=v[3], rr=v[2])
    l1, rc1, rr1 = losses.dpo_sigmoid(x, p)
    l2, rc2, rr2 = losses.dpo_sigmoid(y, p)
    torch.testing.assert_close(rc1 - rr1, -(rc2 - rr2))
    # -log s(u) - (-log s(-u)) = -u  (the two losses differ by exactly the margin)
    torch.testing.assert_close(l1 - l2, -(rc1 - rr1))


def test_registry_and_reference_needs():
    assert losses.get_loss("sigmoid")[0] == "pairwise" and losses.get_loss("npo")[0] == "single"
    assert losses.needs_reference("sigmoid") and not losses.needs_reference("simpo")
    with pytest.raises(
        ValueError, match="unknown loss 'dop'; valid losses: ga, hinge, ipo, nll, npo, robust"
    ):
        losses.get_loss("dop")
    with pytest.raises(ValueError, match="needs reference log-probs"):
        losses.dpo_sigmoid(
            losses.PairLogps(*(torch.zeros(1),) * 2, None, None, torch.ones(1), torch.ones(1)), P
        )


def test_dpo_matches_liger_fused_linear_dpo_loss():
    """Same hidden states, LM head and reference: loss and both gradients equal Liger's implementation."""
    liger = pytest.importorskip("liger_kernel.chunked_loss")
    torch.manual_seed(0)
    b, t, d, v, beta = 3, 9, 16, 101, 0.1
    h = torch.randn(2 * b, t, d)
    w = torch.randn(v, d) * 0.3
    ref_h, ref_w = torch.randn(2 * b, t, d), torch.randn(v, d) * 0.3
    target = torch.randint(0, v, (2 * b, t))
    target[:, :3] = -100  # prompt positions
    target[1, -2:] = -100  # padding on one sequence

    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss_fn = liger.LigerFusedLinearDPOLoss(beta=beta, compiled=False, use_ref_model=True)
    theirs, aux = loss_fn(w1, h1, target, None, ref_h, ref_w, None)
    theirs.backward()

    # ours: rows are sequences (chosen rows 0..b-1, rejected rows b..2b-1), flattened to a token stream
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    mask = (target != -100).reshape(-1)
    seq_ids = torch.arange(2 * b).repeat_interleave(t)
    tg = target.clamp(min=0).reshape(-1)
    pol = sequence_logprobs(h2.reshape(-1, d), w2, tg, seq_ids, mask, 2 * b, backend="chunked", chunk_size=7)
    with torch.no_grad():
        ref = sequence_logprobs(ref_h.reshape(-1, d), ref_w, tg, seq_ids, mask, 2 * b, backend="chunked")
    x = losses.PairLogps(pol[:b], pol[b:], ref[:b], ref[b:], torch.ones(b), torch.ones(b))
    ours, rc, rr = losses.dpo_sigmoid(x, losses.LossParams(beta=beta))
    ours.mean().backward()

    torch.testing.assert_close(ours.mean(), theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pol[:b].detach(), aux[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rc, aux[5], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-7)
    assert F.l1_loss(h1.grad, torch.zeros_like(h1.grad)) > 0  # a real gradient was compared
