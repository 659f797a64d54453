"""Preference and unlearning losses over per-sequence log-prob sums.

Every loss here is a few lines of PyTorch over `[P]` or `[B]` vectors produced by
`cipo_fast.ops.logprobs.sequence_logprobs` (sums over completion tokens) and the completion lengths. They return
per-sample losses; the trainer averages them over the samples of an optimizer step.

Two kinds, one registry:

* pairwise losses take a `PairLogps` (policy and reference sums of the chosen and the rejected sequence of
  each pair) and return `(losses [P], chosen_rewards [P], rejected_rewards [P])`, rewards being
  `beta * (policy - reference)` as TRL logs them (SimPO, reference-free, logs `beta * length-normalized
  policy log-probs`);
* single-sequence losses take a `SeqLogps` and return `losses [B]`.

Names: `sigmoid`, `robust`, `ipo`, `hinge`, `simpo`, `tru` (pairwise) and `npo`, `ga`, `nll` (single).
`get_loss(name)` raises a `ValueError` listing the valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossParams:
    beta: float = 0.1
    label_smoothing: float = 0.0  # epsilon of cDPO / robust DPO: the probability that a label is flipped
    simpo_gamma: float = 0.5  # SimPO target reward margin (gamma / beta is subtracted from the margin)
    tru_alpha: float = 1.0  # TRU: weight of gradient ascent on the forget trace


@dataclass
class PairLogps:
    """Per-pair sums of completion log-probs; `ref_*` may be None for reference-free losses."""

    chosen: torch.Tensor  # [P]
    rejected: torch.Tensor  # [P]
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    len_chosen: torch.Tensor  # [P] number of completion tokens
    len_rejected: torch.Tensor  # [P]


@dataclass
class SeqLogps:
    policy: torch.Tensor  # [B]
    ref: torch.Tensor | None  # [B]
    length: torch.Tensor  # [B]


def _margin(x: PairLogps) -> torch.Tensor:
    """(log pi(c) - log ref(c)) - (log pi(r) - log ref(r)), the DPO implicit reward margin / beta."""
    if x.ref_chosen is None or x.ref_rejected is None:
        raise ValueError("this loss needs reference log-probs (ref_chosen, ref_rejected)")
    return (x.chosen - x.ref_chosen) - (x.rejected - x.ref_rejected)


def _rewards(x: PairLogps, p: LossParams) -> tuple[torch.Tensor, torch.Tensor]:
    return p.beta * (x.chosen - x.ref_chosen).detach(), p.beta * (x.rejected - x.ref_rejected).detach()


def dpo_sigmoid(x: PairLogps, p: LossParams):
    """DPO (Rafailov et al., 2023), with conservative label smoothing (cDPO, Mitchell 2023).

    u = beta * margin;  loss = -(1 - eps) * log sigmoid(u) - eps * log sigmoid(-u).
    At eps = 0 this is the DPO loss; at initialization (policy = reference) it is log 2.
    """
    u = p.beta * _margin(x)
    losses = -(1 - p.label_smoothing) * F.logsigmoid(u) - p.label_smoothing * F.logsigmoid(-u)
    return (losses, *_rewards(x, p))


def dpo_robust(x: PairLogps, p: LossParams):
    """Robust DPO (Chowdhury et al., 2024): unbiased under label flips with probability eps < 1/2.

    loss = [-(1 - eps) log sigmoid(u) + eps log sigmoid(-u)] / (1 - 2 eps),  u = beta * margin.
    """
    if not 0 <= p.label_smoothing < 0.5:
        raise ValueError(f"label_smoothing: robust DPO needs 0 <= eps < 0.5, got {p.label_smoothing}")
    u = p.beta * _margin(x)
    eps = p.label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(u) + eps * F.logsigmoid(-u)) / (1 - 2 * eps)
    return (losses, *_rewards(x, p))


def ipo(x: PairLogps, p: LossParams):
    """IPO (Azar et al., 2023): squared distance of the margin to 1 / (2 beta).

    As in TRL, log-probs are averaged over completion tokens for IPO:
    m = (S_c - R_c) / |c| - (S_r - R_r) / |r|;  loss = (m - 1 / (2 beta))^2.
    """
    m = (x.chosen - x.ref_chosen) / x.len_chosen - (x.rejected - x.ref_rejected) / x.len_rejected
    losses = (m - 1 / (2 * p.beta)) ** 2
    return (losses, *_rewards(x, p))


def hinge(x: PairLogps, p: LossParams):
    """SLiC-HF hinge loss (Zhao et al., 2023): loss = max(0, 1 - beta * margin)."""
    losses = torch.relu(1 - p.beta * _margin(x))
    return (losses, *_rewards(x, p))


def simpo(x: PairLogps, p: LossParams):
    """SimPO (Meng et al., 2024): reference-free, length-normalized, with a target margin gamma.

    u = beta * (S_c / |c| - S_r / |r|) - gamma;  loss = -(1 - eps) log sigmoid(u) - eps log sigmoid(-u).
    """
    avg_c, avg_r = x.chosen / x.len_chosen, x.rejected / x.len_rejected
    u = p.beta * (avg_c - avg_r) - p.simpo_gamma
    losses = -(1 - p.label_smoothing) * F.logsigmoid(u) - p.label_smoothing * F.logsigmoid(-u)
    return losses, p.beta * avg_c.detach(), p.beta * avg_r.detach()


def tru(x: PairLogps, p: LossParams):
    """TRU, targeted reasoning unlearning (Liao et al., "Explainable LLM Unlearning through Reasoning",
    ICLR 2026, arXiv 2603.09980): supervised cross-entropy on a reasoning-based target -- a trace r that
    explains why the request is out of scope, then an explainable refusal s -- plus alpha x GradDiff on the
    original forget trace:

        L = -[log P(r | x) + log P(s | r, x)] / |r s|  +  alpha * (log P(y | x) / |y|)  [+ retain NLL]

    with the chosen side the target (r, s) and the rejected side the forget trace y; both token-mean as
    cross-entropy losses are. GradDiff's retain half is the trainer's retain term (`--retain-weight`,
    alpha for the paper's form). Reference-free; "rewards" logged are the token-mean log-probs."""
    avg_c, avg_r = x.chosen / x.len_chosen, x.rejected / x.len_rejected
    return -avg_c + p.tru_alpha * avg_r, avg_c.detach(), avg_r.detach()


def npo(x: SeqLogps, p: LossParams):
    """NPO (Zhang et al., 2024): negative-only preference optimization on forget sequences.

    loss = -(2 / beta) log sigmoid(-beta (S - R)) = (2 / beta) log(1 + (pi / ref)^beta).
    Its gradient is GA's, weighted by 2 sigmoid(beta (S - R)) -> it fades as pi falls below ref.
    """
    if x.ref is None:
        raise ValueError("npo needs reference log-probs")
    return -(2.0 / p.beta) * F.logsigmoid(-p.beta * (x.policy - x.ref))


def gradient_ascent(x: SeqLogps, p: LossParams):
    """Gradient ascent (GA; Jang et al., 2023): minimize the mean token log-prob, loss = S / |s|."""
    return x.policy / x.length


def nll(x: SeqLogps, p: LossParams):
    """Negative log-likelihood per token (SFT / retain term): loss = -S / |s|."""
    return -x.policy / x.length


PAIRWISE: dict[str, Callable] = {
    "sigmoid": dpo_sigmoid,
    "robust": dpo_robust,
    "ipo": ipo,
    "hinge": hinge,
    "simpo": simpo,
    "tru": tru,
}
SINGLE: dict[str, Callable] = {
    "npo": npo,
    "ga": gradient_ascent,
    "nll": nll,
}
REFERENCE_FREE = {"simpo", "tru", "ga", "nll"}
LOSSES = {**PAIRWISE, **SINGLE}  # every loss by name


def get_loss(name: str) -> tuple[str, Callable]:
    """Return `(kind, fn)` with kind "pairwise" or "single"; unknown names raise a ValueError."""
    if name in PAIRWISE:
        return "pairwise", PAIRWISE[name]
    if name in SINGLE:
        return "single", SINGLE[name]
    valid = ", ".join(sorted({*PAIRWISE, *SINGLE}))
    raise ValueError(f"unknown loss {name!r}; valid losses: {valid}")


def needs_reference(name: str) -> bool:
    get_loss(name)
    return name not in REFERENCE_FREE
