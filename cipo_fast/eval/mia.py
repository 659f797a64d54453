"""Membership inference: does the model still score the forget items like data it was trained on?

Each item is scored on its gold completion under its question prompt, rendered with the tokenizer's
`ReasoningFormat` and tokenized in two parts so that their token ranges are exact (prompt and completion
are split the same way by `Tokenizer.sequence`):

    prompt ids | think_block(cot) ids | answer ids + EOS
                 `----- cot part -----' `-- answer part --'

The CoT part includes the think tags; an item without a CoT gets the empty think block as unscored
context (R-TOFU's text for CoT-free rows, and what the answer is scored after under ZeroThink) and only
the answer granularity. One packed no-grad pass (`cipo_fast.model.forward.token_stats`) gives, per
token, its log-prob and the mean and variance of log p under the model's next-token distribution.

Attacks, per part, following open-unlearning (locuslab/open-unlearning, `src/evals/metrics/mia/`): every
score is loss-like, HIGHER = LESS likely a member. With `lp` the part's token log-probs and `lp'` the
same without a final EOS (open-unlearning's `tokenwise_logprobs` drops the EOS position; the CoT part
has none), `n = max(1, int(len(lp') * k))` and `low_n(x)` the mean of the n smallest entries of x:

    loss             mean(-lp)                                loss.py; Yeom et al. 2018 (IEEE CSF)
    zlib             loss / len(zlib.compress(text.encode("utf-8")))
                                                              zlib.py; Carlini et al. 2021
    min_k            -low_n(lp')                              min_k.py; Shi et al. 2024, arXiv 2310.16789
    min_k_plus_plus  -low_n((lp' - mu) / sqrt(max(var, 1e-6)))
                     mu = sum_v p_v log p_v, var = sum_v p_v (log p_v)^2 - mu^2 at each position
                                                              min_k_plus_plus.py; Zhang et al., ICLR 2025,
                                                              arXiv 2404.02936
    reference        loss(model) - loss(reference model)      reference.py; Carlini et al. 2021
                                                              (USENIX Security, the reference-model
                                                              comparison), as a difference of losses

`loss` averages over all the part's tokens, EOS included (`evaluate_probability` in open-unlearning's
`src/evals/metrics/utils.py`); `text` is the part's tokens decoded without special tokens
(`extract_target_texts_from_processed_data`); `min_k` / `min_k_plus_plus` of an empty `lp'` are 0.
open-unlearning's configs set k = 0.4 for both (`configs/eval/{tofu,muse}_metrics/mia_min_k*.yaml`).

AUC (open-unlearning `mia/utils.py` `mia_auc`): `roc_auc_score(labels, scores)` with labels 0 for the
forget items and 1 for the holdout items, i.e. `P(s_holdout > s_forget) + P(tie) / 2`: 1 when the forget
items look much more like members than the holdout, 0.5 when indistinguishable.

privleak (open-unlearning `src/evals/metrics/privacy.py`, after MUSE, Shi et al. 2024, arXiv
2407.06460): with the AUC of a retain model (never trained on the forget items) as reference,
`score = 1 - auc`, `ref = 1 - retain`, `privleak = (score - ref) / (ref + 1e-10) * 100` -- about -100
for a model that still knows the forget set, 0 ideal, positive when it was over-unlearned.

What it deliberately doesn't do: GradNorm (open-unlearning's gradient attack; a backward per item),
truncation (an item longer than `max_length` is an error), and any aggregation over attacks.
"""

from __future__ import annotations

import bisect
import math
import zlib
from dataclasses import dataclass

import torch

from cipo_fast.data.items import Item
from cipo_fast.data.packing import Sequence

GRANULARITIES = ("answer", "cot")
VAR_FLOOR = 1e-6  # open-unlearning's clamp of the Min-K%++ variance
# the attack that tables and the console headline: Min-K%, open-unlearning's privleak attack
# (configs/eval/tofu_metrics/privleak.yaml pre-computes mia_min_k). Min-K%++ saturates on fine-tuned
# targets: a memorized token (p -> 1) has mu -> log p and var -> 0, so its z-score tends to 0 rather
# than growing, and a heavily memorized forget set can score *below* unseen items (demo target: AUC
# 0.24 on answers while LOSS, zlib and Min-K% give 1.0).
HEADLINE_ATTACK = "min_k"


@dataclass(frozen=True)
class Part:
    """One scored part of an item's completion (all tensors `[n]`, one entry per token of the part)."""

    logp: torch.Tensor  # log p(token | context) under the model
    mean: torch.Tensor  # E_p[log p] of the model's next-token distribution at that position
    var: torch.Tensor  # Var_p[log p] there
    text: str  # the part's tokens decoded without special tokens
    eos: bool = False  # the last token is EOS (left out by min_k and min_k_plus_plus)
    ref_logp: torch.Tensor | None = None  # log p under the reference model, when there is one


def _nll(logp: torch.Tensor) -> float:
    assert logp.numel() > 0, "a scored part has at least one token"
    return -float(logp.double().mean())


def _low_mean(x: torch.Tensor, k: float) -> float:
    """Mean of the `max(1, int(len(x) * k))` smallest entries; 0 for an empty x."""
    if x.numel() == 0:
        return 0.0
    n = max(1, int(x.numel() * k))
    return float(torch.sort(x.double()).values[:n].mean())


def _without_eos(part: Part, x: torch.Tensor) -> torch.Tensor:
    return x[:-1] if part.eos else x


def loss_score(part: Part, k: float) -> float:
    """Mean token NLL of the part, EOS included. lp = (-1, -2, -3) -> 2."""
    return _nll(part.logp)


def zlib_score(part: Part, k: float) -> float:
    """Mean NLL / zlib-compressed bytes of the text. lp = (-1, -3), text "" (8 bytes compressed) -> 0.25."""
    return _nll(part.logp) / len(zlib.compress(part.text.encode("utf-8")))


def min_k_score(part: Part, k: float) -> float:
    """-(mean of the n lowest lp), EOS left out. lp = (-1, -5, -2, -4, -9 = EOS), k = 0.5 -> n = 2,
    lowest (-5, -4) -> 4.5."""
    return -_low_mean(_without_eos(part, part.logp), k)


def min_k_plus_plus_score(part: Part, k: float) -> float:
    """Min-K% of the standardized log-probs `(lp - mean) / sqrt(max(var, 1e-6))`. lp = (-1, -3),
    mean = (-2, -2), var = (1, 4), k = 0.5 -> z = (1, -0.5), n = 1 -> 0.5."""
    z = (part.logp - part.mean) / part.var.clamp(min=VAR_FLOOR).sqrt()
    return -_low_mean(_without_eos(part, z), k)


def reference_score(part: Part, k: float) -> float:
    """Mean NLL under the model minus under the reference. lp = (-1, -3), ref (-2, -2) -> 0."""
    assert part.ref_logp is not None, "the reference attack needs reference log-probs"
    return _nll(part.logp) - _nll(part.ref_logp)


ATTACKS = {
    "loss": loss_score,
    "zlib": zlib_score,
    "min_k": min_k_score,
    "min_k_plus_plus": min_k_plus_plus_score,
    "reference": reference_score,
}


def auc(forget_scores: list[float], holdout_scores: list[float]) -> float:
    """open-unlearning's MIA AUC, `roc_auc_score([0] * |forget| + [1] * |holdout|, forget + holdout)`,
    computed as the Mann-Whitney statistic `sum_h (#{f < h} + #{f == h} / 2) / (|forget| |holdout|)`."""
    for name, xs in (("forget_scores", forget_scores), ("holdout_scores", holdout_scores)):
        if not xs:
            raise ValueError(f"auc: {name} is empty; the AUC needs scores on both sides")
        if not all(math.isfinite(x) for x in xs):
            raise ValueError(f"auc: {name} holds a non-finite score")
    f = sorted(forget_scores)
    twice_u = sum(bisect.bisect_left(f, h) + bisect.bisect_right(f, h) for h in holdout_scores)
    return twice_u / (2 * len(f) * len(holdout_scores))


def privleak(auc: float, retain_auc: float) -> float:
    """open-unlearning / MUSE: `(score - ref) / (ref + 1e-10) * 100` with `score = 1 - auc`,
    `ref = 1 - retain_auc`. auc = retain_auc -> 0; (1, 0.5) -> -100; (0.25, 0.5) -> 50; (0.5, 1) -> +5e11:
    a retain model at AUC 1 makes the reference 0 (open-unlearning's 1e-10 keeps it finite)."""
    score, ref = 1 - auc, 1 - retain_auc
    return (score - ref) / (ref + 1e-10) * 100


def item_sequence(tok, item: Item, where: str) -> tuple[Sequence, int]:
    """(the gold sequence, tokens of its CoT part): prompt | think block | answer + EOS."""
    cot_ids = tok.text_ids(tok.reasoning.think_block(item.cot.strip()))
    seq = Sequence(tuple(tok.prompt_ids(item.question)), (*cot_ids, *tok.completion_ids(item.answer.strip())))
    if len(seq) > tok.fmt.max_length:
        raise ValueError(
            f"{where}: the item has {len(seq)} tokens, more than max_length={tok.fmt.max_length}; "
            "raise --max-length (membership inference does not truncate)"
        )
    return seq, len(cot_ids)


def _parts(tok, items, seqs, n_cots, stats, ref) -> list[dict[str, Part]]:
    out = []
    for i, (it, seq, n_cot) in enumerate(zip(items, seqs, n_cots)):
        spans = {"cot": slice(0, n_cot), "answer": slice(n_cot, None)}
        parts = {}
        for g in GRANULARITIES if it.cot.strip() else ("answer",):
            sl = spans[g]
            parts[g] = Part(
                *(x[sl] for x in stats[i]),
                text=tok.tok.decode(list(seq.completion_ids[sl]), skip_special_tokens=True),
                eos=g == "answer",
                ref_logp=None if ref is None else ref[i][0][sl],
            )
        out.append(parts)
    return out


def _retain_auc(retain: dict | None, granularity: str, attack: str) -> float | None:
    """The AUC of `attack` at `granularity` in a retain model's result, if it has one."""
    entry = (retain or {}).get(granularity, {}).get("attacks", {}).get(attack)
    return None if entry is None else entry["auc"]


def membership_inference(
    model,
    tok,
    forget_items: list[Item],
    holdout_items: list[Item],
    *,
    reference_model=None,
    token_budget: int = 4096,
    k: float = 0.4,
    retain: dict | None = None,
    backend: str = "auto",
) -> dict:
    """Per granularity ("answer", "cot") and attack, the AUC of forget vs holdout items and the per-item
    scores:

        {"k": k, granularity: {"items": {"forget": [ids], "holdout": [ids]},
                               "attacks": {attack: {"auc", "forget": [scores], "holdout": [scores],
                                                    "privleak" (with `retain`)}}}}

    `tok` is a `cipo_fast.data.tokenize.Tokenizer`; `reference_model` (same vocabulary) adds the
    `reference` attack; `retain` is this function's result for a retain model, whose AUCs are privleak's
    reference. "cot" is left out when either side has no item with a CoT.
    """
    from cipo_fast.model.forward import token_stats

    if not forget_items or not holdout_items:
        raise ValueError("membership inference needs forget and holdout items (one of them is empty)")
    if not 0 < k <= 1:
        raise ValueError(f"k: expected 0 < k <= 1, got {k}")
    items = [*forget_items, *holdout_items]
    sides = ["forget"] * len(forget_items) + ["holdout"] * len(holdout_items)
    built = [item_sequence(tok, it, f"{side} item {it.id}") for it, side in zip(items, sides)]
    seqs, n_cots = [s for s, _ in built], [n for _, n in built]
    stats = token_stats(model, seqs, token_budget, backend)
    ref = None if reference_model is None else token_stats(reference_model, seqs, token_budget, backend)
    parts = _parts(tok, items, seqs, n_cots, stats, ref)
    attacks = [a for a in ATTACKS if a != "reference" or ref is not None]

    result: dict = {"k": k}
    for g in GRANULARITIES:
        scored = [(it.id, side, p[g]) for it, side, p in zip(items, sides, parts) if g in p]
        by_side = {s: [(i, p) for i, side, p in scored if side == s] for s in ("forget", "holdout")}
        if not by_side["forget"] or not by_side["holdout"]:
            continue
        out = {"items": {s: [i for i, _ in rows] for s, rows in by_side.items()}, "attacks": {}}
        for a in attacks:
            scores = {s: [ATTACKS[a](p, k) for _, p in rows] for s, rows in by_side.items()}
            entry = {"auc": auc(scores["forget"], scores["holdout"]), **scores}
            retain_auc = _retain_auc(retain, g, a)
            if retain_auc is not None:
                entry["privleak"] = privleak(entry["auc"], retain_auc)
            out["attacks"][a] = entry
        result[g] = out
    return result
