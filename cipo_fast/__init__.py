"""cipo-fast: counterfactual unlearning for reasoning language models (CiPO) on a fused-kernel trainer.

The public API:

    sequence_logprobs, token_logprobs   the fused LM-head log-prob op (no [tokens, vocab] logits)
    get_loss, LOSSES, LossParams        the loss registry (DPO family, SimPO, TRU, NPO, GA, NLL)
    TrainConfig, CipoConfig             the training configuration (what `cipo-fast train` fills)
    fit                                 run `cipo-fast train` from Python (any method, CiPO included)
    EvalConfig, evaluate                `cipo-fast eval` from Python

The package, by layer (each sub-package's docstring lists its modules):

    ops/         the fused log-prob op, the chunked KL to a reference, the Triton kernels' compile check
    model/       model sources and loading, packed attention, the forward pass, generation
    data/        files in and out, the think block, tokenization, training formats, items, packing
    train/       losses, schedule, the optimizer step, policy, reference log-probs and their cache,
                 checkpoints, the run directory; torchrun + FSDP2 sharding (process group, balance, DCP)
    unlearning/  CiPO's counterfactual traces, preference pairs, retain mirrors, rounds; CiPO as
                 published; R²MU; the R-TOFU baseline and TRU data; the STaR / GUARD decoding guards
    eval/        leakage (facts, text), metrics, scoring, predictions, the evaluation command, report/
    synthetic/   the demo's fictitious-author and arithmetic data set
    trainers/    the recipes: preference (every loss-based method), cipo, cipo_paper, r2mu, finetune
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cipo_fast.config import TrainConfig

__version__ = "0.1.0"

# name -> module, imported on first use (PEP 562): `import cipo_fast.ops` then pulls in neither the
# evaluation stack (rouge-score, the embedder) nor anything else that a GPU-check machine may lack
_LAZY = {
    "CipoConfig": "cipo_fast.config",
    "TrainConfig": "cipo_fast.config",
    "EvalConfig": "cipo_fast.eval.evaluate",
    "evaluate": "cipo_fast.eval.evaluate",
    "sequence_logprobs": "cipo_fast.ops.logprobs",
    "token_logprobs": "cipo_fast.ops.logprobs",
    "LOSSES": "cipo_fast.train.losses",
    "LossParams": "cipo_fast.train.losses",
    "get_loss": "cipo_fast.train.losses",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'cipo_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def fit(cfg: TrainConfig) -> dict:
    """Run one training (`cipo-fast train`): the CiPO loop for `method="cipo"` (the engine's or the paper's
    variant), R²MU for `method="r2mu"`, else the preference / unlearning trainer. Returns the run's
    summary. Under torchrun the preference / unlearning trainer and the engine's CiPO loop run sharded
    (FSDP2); the paper's CiPO variant and R²MU run in one process only."""
    from cipo_fast.train.distributed import launched

    paper = cfg.method == "cipo" and cfg.cipo.cipo_variant == "paper"
    if launched() and (paper or cfg.method == "r2mu"):
        what = "--cipo-variant paper" if paper else "--method r2mu"
        raise ValueError(
            f"{what} under torchrun: it does not run on a process group yet; run it in one process "
            "(without torchrun), or run the engine's CiPO (--cipo-variant engine) or a loss-based method "
            "(dpo, npo, ga, sft, ...) on several"
        )
    if cfg.method == "cipo" and cfg.cipo.cipo_variant == "paper":
        from cipo_fast.trainers.cipo_paper import main
    elif cfg.method == "cipo":
        from cipo_fast.trainers.cipo import main
    elif cfg.method == "r2mu":
        from cipo_fast.trainers.r2mu import main
    else:
        from cipo_fast.trainers.preference import main
    return main(cfg)


__all__ = sorted([*_LAZY, "fit"])
