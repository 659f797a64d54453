"""Run configuration: one frozen dataclass per recipe, filled from one parser, logged with every run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from cipo_fast.data import DEFAULT_REASONING_TEMPLATE, LOSS_ON

# method -> (loss name in cipo_fast.losses, needs a retain set)
METHODS: dict[str, tuple[str, bool]] = {
    "dpo": ("sigmoid", False),
    "robust": ("robust", False),
    "ipo": ("ipo", False),
    "hinge": ("hinge", False),
    "simpo": ("simpo", False),
    "npo": ("npo", False),
    "ga": ("ga", False),
    "graddiff": ("ga", True),
    "sft": ("nll", False),
    "cipo": ("sigmoid", False),  # the iterative counterfactual loop (trainers/cipo.py); --data = forget items
}
ROUND_STRATEGIES = ("greedy", "sample_t0.7", "sample_t1.0", "zerothink", "lessthink")


@dataclass(frozen=True)
class TrainConfig:
    method: str
    model: str
    data: str
    out: str
    retain: str | None = None
    ref_model: str | None = None
    # optimization
    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    rpo_alpha: float | None = (
        None  # weight of the chosen NLL added to pairwise losses (RPO); None: 1 for cipo, else 0
    )
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "cosine"  # cosine | linear | constant
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8  # pairs (or sequences) per optimizer step
    token_budget: int = 4096  # tokens per micro-batch; gradient accumulation over micro-batches
    retain_weight: float = 1.0
    loss_on: str = "all"  # single-sequence methods: train on all | cot | answer of {cot, answer} completions
    seed: int = 42
    # data
    max_length: int = 2048
    prompt_format: str = "auto"
    reasoning_template: str = DEFAULT_REASONING_TEMPLATE
    system_prompt: str | None = None
    # model
    dtype: str = "float32"
    device: str = "auto"
    lora_r: int = 0
    lora_alpha: int = 16
    checkpoint_every: int = 1  # activation checkpointing of every n-th decoder layer; 0 = off
    trust_remote_code: bool = False
    backend: str = "auto"
    share_prefix: bool = (
        True  # store a pair's common prefix once in the packed stream (cipo_varlen attention)
    )
    # reference log-probs
    ref_mode: str = "precompute"  # precompute (before step 1, no second model) | lazy (per step)
    cache_dir: str | None = None  # default: <cache root>/refcache
    # CiPO rounds (method cipo)
    rounds: int = 3
    round_strategies: tuple[str, ...] = ROUND_STRATEGIES
    round_samples: int = 2  # samples per sampling strategy when looking for leaking traces
    round_epochs: float = 2.0  # epochs over each round's pairs
    max_pairs_per_item: int = 8
    replay: bool = True  # later rounds also draw batches from earlier rounds' pairs
    retain_pairs: bool = True  # CiPO: also (gold trace > its redirect) pairs from retain items
    round_reference: str = "previous"  # previous: the policy at each round's start (iterative RPO) | initial
    cf_candidates: int = 2  # counterfactual samples per prompt kind and item
    cf_target: str = "uncertainty"  # uncertainty | alternative
    cf_alternatives: str | None = None  # JSONL {id, alternative} for cf_target=alternative
    cf_seeds: str | None = (
        None  # chosen traces to seed with: JSONL {id, cot, answer} or items with idk_cot/idk_answer
    )
    gen_max_new_tokens: int = 192
    gen_batch_size: int = 128
    # outputs
    save_steps: int = 0  # 0: checkpoint only at the end
    keep_checkpoints: int = 2
    cpu_mmap_threshold_mb: int = 8  # glibc: mmap allocations >= this many MiB (lower peak RSS); 0 = off
    save_merged: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method: unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")
        checks = [
            (self.beta > 0, f"--beta: expected > 0, got {self.beta}"),
            (self.lr > 0, f"--lr: expected > 0, got {self.lr}"),
            (self.batch_size >= 1, f"--batch-size: expected >= 1, got {self.batch_size}"),
            (self.token_budget >= 1, f"--token-budget: expected >= 1, got {self.token_budget}"),
            (self.max_length >= 2, f"--max-length: expected >= 2, got {self.max_length}"),
            (self.epochs > 0 or self.max_steps > 0, "--epochs or --max-steps must be positive"),
            (0 <= self.warmup_ratio < 1, f"--warmup-ratio: expected in [0, 1), got {self.warmup_ratio}"),
            (
                self.scheduler in ("cosine", "linear", "constant"),
                f"--scheduler: expected cosine, linear or constant, got {self.scheduler!r}",
            ),
            (
                self.ref_mode in ("precompute", "lazy"),
                f"--ref-mode: expected precompute or lazy, got {self.ref_mode!r}",
            ),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
            (
                self.loss_on in LOSS_ON,
                f"--loss-on: expected one of {', '.join(LOSS_ON)}, got {self.loss_on!r}",
            ),
            (
                self.loss_on == "all" or self.method in ("ga", "graddiff", "npo", "sft"),
                f"--loss-on {self.loss_on} applies to single-sequence methods (ga, graddiff, npo, sft)",
            ),
            (self.retain_weight >= 0, f"--retain-weight: expected >= 0, got {self.retain_weight}"),
            (self.lora_r >= 0, f"--lora-r: expected >= 0, got {self.lora_r}"),
            (self.checkpoint_every >= 0, f"--checkpoint-every: expected >= 0, got {self.checkpoint_every}"),
            (
                not self.save_merged or self.lora_r > 0,
                "--save-merged only applies to LoRA runs (--lora-r > 0)",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.method == "cipo":
            from cipo_fast.generation import make_strategies

            make_strategies(self.round_strategies, self.round_samples)
            if self.rounds < 1:
                raise ValueError(f"--rounds: expected >= 1, got {self.rounds}")
            if self.round_reference not in ("previous", "initial"):
                raise ValueError(
                    f"--round-reference: expected previous or initial, got {self.round_reference!r}"
                )
            if self.cf_target not in ("uncertainty", "alternative"):
                raise ValueError(f"--cf-target: expected uncertainty or alternative, got {self.cf_target!r}")
            if self.cf_target == "alternative" and not self.cf_alternatives:
                raise ValueError("--cf-target alternative needs --cf-alternatives FILE")
        if METHODS[self.method][1] and not self.retain:
            raise ValueError(f"--method {self.method} needs a retain set (--retain FILE)")

    @property
    def chosen_nll_weight(self) -> float:
        if self.rpo_alpha is not None:
            return self.rpo_alpha
        return 1.0 if self.method == "cipo" else 0.0

    @property
    def loss(self) -> str:
        return METHODS[self.method][0]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: Path) -> TrainConfig:
        raw = json.loads(path.read_text())
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
