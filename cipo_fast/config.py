"""The training configuration: one frozen dataclass for `cipo-fast train`, its CiPO-only options apart.

`TrainConfig` covers every method (DPO family, GA / GradDiff / NPO / SFT, CiPO, R²MU); `CipoConfig` (its
`cipo` field) holds what only the CiPO loop reads, `R2muConfig` (`r2mu`) what only R²MU reads. All are
filled from one parser (`cipo_fast.cli`, built from these fields), validated on construction
(`cipo_fast.options.check_fields`: types, finite numbers, bounds) and written to every run's `config.json`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cipo_fast.data.reasoning import THINK_CLOSE, THINK_OPEN, ReasoningFormat
from cipo_fast.model.generation import STRATEGY_NAMES
from cipo_fast.options import check_fields, flag, opt

# method -> (loss name in cipo_fast.train.losses, needs a retain set)
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
    "tru": ("tru", True),  # pairs: chosen = reasoning-based target, rejected = the forget trace (GA)
    "cipo": ("sigmoid", False),  # the iterative counterfactual loop (trainers/cipo.py); --data = forget items
    # R²MU (trainers/r2mu.py): activation MSE at one layer (cipo_fast.unlearning.r2mu), no log-prob loss
    "r2mu": ("r2mu", True),
}
SINGLE_SEQUENCE_METHODS = ("ga", "graddiff", "npo", "sft")
Method = Literal[
    "dpo", "robust", "ipo", "hinge", "simpo", "npo", "ga", "graddiff", "sft", "tru", "cipo", "r2mu"
]
assert set(Method.__args__) == set(METHODS), "Method and METHODS must list the same methods"


# what a resumed run may change: how long it runs, how it checkpoints, what it shows
RESUME_MAY_CHANGE = {
    "resume",
    "overwrite",
    "progress",
    "max_steps",
    "epochs",
    "save_steps",
    "keep_checkpoints",
    "cpu_mmap_threshold_mb",
    "fsdp_cpu_offload",
}


@dataclass(frozen=True)
class CipoConfig:
    """CiPO rounds (`--method cipo`): sample -> score -> counterfactuals -> pairs -> reference -> train."""

    _argument_group_name = "CiPO (--method cipo)"

    rounds: int = opt(3, "maximum number of rounds (the loop stops early once nothing leaks)", ge=1)
    round_strategies: tuple[str, ...] = opt(
        STRATEGY_NAMES, "decoding strategies that look for leaking traces", choices=STRATEGY_NAMES
    )
    round_samples: int = opt(2, "samples per sampling strategy when looking for leaking traces", ge=1)
    round_epochs: float = opt(2.0, "epochs over each round's new pairs", gt=0)
    max_pairs_per_item: int = opt(8, "preference pairs per forget item and round", ge=1)
    replay: bool = opt(True, "later rounds also draw batches from earlier rounds' pairs")
    retain_pairs: bool = opt(
        True, "retain 'mirror' pairs (gold trace over its redirect, ...) beside retain NLL"
    )
    round_reference: Literal["previous", "initial"] = opt(
        "previous",
        "reference of each round: the policy at its start (iterative RPO, Pang et al. 2024) or the initial model",
    )
    cf_candidates: int = opt(2, "counterfactual samples per prompt kind and item", ge=1)
    cf_target: Literal["uncertainty", "alternative"] = opt(
        "uncertainty", "what the counterfactual traces conclude: uncertainty, or the given alternative answer"
    )
    cf_alternatives: str | None = opt(None, "JSONL {id, alternative} for --cf-target alternative")
    cf_seeds: str | None = opt(
        None, "seed chosen traces: JSONL {id, cot, answer}, items with idk_cot, or idkcot.jsonl strings"
    )
    gen_max_new_tokens: int = opt(192, "new tokens per sampled trace", ge=1)
    gen_batch_size: int = opt(128, "rows (prompts x samples, all strategies) per generation batch", ge=1)
    leak_judge: Literal["meaning", "spans"] = opt(
        "meaning",
        "what counts as a leak in the rounds: key-fact spans or restated facts (meaning), or spans only",
    )
    cipo_variant: Literal["engine", "paper"] = opt(
        "engine",
        "engine: per-round counterfactuals and redirects, DPO against the round-start policy, mirrors; paper: "
        "the ACL 2026 recipe (fixed model-written counterfactual answers with backward CoTs, warm-up SFT, "
        "SimPO against the model's own samples, no reference model)",
    )
    cipo_warmup_epochs: float = opt(
        1.0, "paper variant: epochs of warm-up SFT on the counterfactual traces", ge=0
    )
    cipo_paper_beta: float = opt(
        2.0, "paper variant: SimPO beta (Meng et al. 2024 use 2.0-2.5; --beta stays DPO's)", gt=0
    )

    def __post_init__(self):
        object.__setattr__(self, "round_strategies", tuple(self.round_strategies))
        check_fields(self)
        if self.cf_target == "alternative" and not self.cf_alternatives:
            raise ValueError("--cf-target alternative needs --cf-alternatives FILE")


# the paper's code: github.com/OPTML-Group/Unlearn-R2MU at dc2d6c5 (unlearn_r2mu.py, README.md's WMDP run)
@dataclass(frozen=True)
class R2muConfig:
    """R²MU (`--method r2mu`, Wang et al. 2025, arXiv 2506.12963): representation misdirection at one
    decoder layer of the forget data and of the model's own first reasoning tokens on the forget prompts,
    activation matching on retain and reasoning data (`cipo_fast.unlearning.r2mu`). Its learning rate and
    batch size are its own (`--lr`, `--batch-size` and `--retain-weight` belong to the other methods)."""

    _argument_group_name = "R²MU (--method r2mu)"

    r2mu_layer: int = opt(
        7, "decoder layer l whose output is steered (unlearn_r2mu.py:365 --layer_id 7)", ge=0
    )
    r2mu_train_layers: tuple[int, ...] | None = opt(
        None,
        "layers whose --r2mu-params are trained; default l-2, l-1, l (unlearn_r2mu.py:366 --layer_ids 5,6,7)",
    )
    r2mu_params: tuple[str, ...] = opt(
        ("mlp.down_proj.weight",),
        "parameters trained in each of those layers, named inside a decoder layer (unlearn_r2mu.py:367 "
        "--param_ids 6, the 7th parameter of a Llama layer, utils.py:39-45)",
    )
    r2mu_steering_coeff: float = opt(
        6.5,
        "c: forget activations are pushed to c * u, u a seeded random unit vector (README.md:69 "
        "--steering_coeffs 6.5; argparse default 20, unlearn_r2mu.py:359)",
        gt=0,
    )
    r2mu_adaptive_scale: float | None = opt(
        None,
        "Adaptive RMU: c = this beta x the mean per-token norm of the original model's layer-l output on the "
        "first forget batch, instead of --r2mu-steering-coeff (Dang et al. 2025, arXiv 2408.06223; their "
        "code: 5.0). c = 6.5 was set for 7-14B models; a model whose activations have another scale needs "
        "its own c",
        gt=0,
    )
    r2mu_alpha: float = opt(
        1.7,
        "weight of the retain activation-matching term (README.md:50 ALPHA=1.7; argparse default 100, "
        "unlearn_r2mu.py:358)",
        ge=0,
    )
    r2mu_unthink_weight: float = opt(
        1.0, "weight of the unthink term (unweighted in unlearn_r2mu.py:301)", ge=0
    )
    r2mu_unthink_tokens: int = opt(
        100,
        "first tokens of the model's greedy reasoning trace per forget prompt that the unthink term steers "
        "(unlearn_r2mu.py:374 --max_gen_tokens 100, used at :24)",
        ge=1,
    )
    r2mu_cot_data: str | None = opt(
        None,
        "JSONL reasoning data whose activations are preserved: GSM8K rows {question, answer: '... #### N'}, "
        "items with a cot, or prompt/completion rows (the paper uses LIMO, unlearn_r2mu.py:408)",
    )
    r2mu_cot_weight: float = opt(
        1.0, "weight of the CoT-preservation term (unlearn_r2mu.py:368 --assist_loss 1; README.md:55)", ge=0
    )
    r2mu_forget_tokens: Literal["completion", "all"] = opt(
        "completion",
        "forget tokens steered: the completion, or every token, prompt and chat template included (the "
        "paper's forget set is raw documents, all tokens: unlearn_r2mu.py:258)",
    )
    r2mu_lr: float = opt(
        7.5e-5, "learning rate (README.md:51 LR=7.5e-5; argparse 5e-5, unlearn_r2mu.py:360)", gt=0
    )
    r2mu_batch_size: int = opt(
        4,
        "forget, retain, unthink and CoT sequences per step, each (unlearn_r2mu.py:363 --batch_size 4)",
        ge=1,
    )
    r2mu_gen_batch_size: int = opt(32, "prompts per batch when generating the unthink traces", ge=1)

    def __post_init__(self):
        for name in ("r2mu_train_layers", "r2mu_params"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        check_fields(self)
        layers = self.r2mu_train_layers
        if layers is not None and not (layers and all(0 <= i <= self.r2mu_layer for i in layers)):
            raise ValueError(
                f"--r2mu-train-layers: expected layers in 0..{self.r2mu_layer} (--r2mu-layer; layers above it "
                f"do not change its output), got {list(layers)}"
            )
        if not self.r2mu_params or not all(p.strip() for p in self.r2mu_params):
            raise ValueError("--r2mu-params: expected parameter names such as mlp.down_proj.weight")

    @property
    def train_layers(self) -> tuple[int, ...]:
        if self.r2mu_train_layers is not None:
            return tuple(sorted(set(self.r2mu_train_layers)))
        return tuple(range(max(0, self.r2mu_layer - 2), self.r2mu_layer + 1))


@dataclass(frozen=True)
class TrainConfig:
    """`cipo-fast train`: preference, unlearning and SFT training of one model."""

    _argument_group_name = "training"

    method: Method = opt(help="training method; cipo runs the CiPO loop")
    model: str = opt(help="HF directory or hub name, a .gguf file, or smollm2-135m")
    data: str = opt(help="JSONL: prompt/chosen/rejected (preference), prompt/completion or items (others)")
    out: str = opt(help="run directory (built in OUT.partial, moved into place when the run ends)")
    retain: str | None = opt(None, "JSONL prompt/completion or items: the retain set (NLL term)")
    ref_model: str | None = opt(None, "reference model (default: the initial --model)")
    # optimization
    beta: float = opt(0.1, "DPO-family temperature beta (TRL DPOConfig default 0.1)", gt=0)
    label_smoothing: float = opt(
        0.0, "label-flip probability of cDPO / robust DPO (Chowdhury et al. 2024)", ge=0, lt=0.5
    )
    simpo_gamma: float = opt(0.5, "SimPO target reward margin gamma (TRL CPOConfig default 0.5)", ge=0)
    rpo_alpha: float | None = opt(
        None,
        "weight of the chosen NLL added to pairwise losses (RPO, Pang et al. 2024); default 1 for cipo, else 0",
        ge=0,
    )
    lr: float = opt(1e-6, "peak learning rate (TRL DPOConfig default 1e-6)", gt=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = opt(0.0, "share of the steps with linear warm-up", ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate schedule after warm-up")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (HF TrainingArguments default 1.0)", gt=0)
    epochs: float = opt(1.0, "epochs over --data (ignored when --max-steps > 0)", ge=0)
    max_steps: int = opt(-1, "optimizer steps; -1: from --epochs", ge=-1)
    batch_size: int = opt(8, "pairs (or sequences) per optimizer step", ge=1)
    token_budget: int = opt(
        4096, "tokens per packed micro-batch (gradient accumulation over micro-batches)", ge=1
    )
    retain_weight: float = opt(1.0, "weight of the retain term", ge=0)
    retain_loss: Literal["nll", "kl"] = opt(
        "nll",
        "retain term: token-mean NLL (GD) or token-mean KL(frozen reference || policy) over the vocabulary "
        "(R-TOFU's KL regularizer; needs a frozen copy of the reference in memory)",
    )
    tru_alpha: float = opt(
        1.0,
        "TRU: weight of the gradient-ascent term on the forget trace (the paper's alpha; with --retain-weight "
        "alpha the objective is target NLL + alpha * GradDiff); default 1 like R-TOFU's forget_coeff",
        ge=0,
    )
    loss_on: Literal["all", "cot", "answer"] = opt(
        "all", "single-sequence methods: train on the whole {cot, answer} completion, its CoT or its answer"
    )
    seed: int = opt(42, "seed of data order and sampling")
    # data
    max_length: int = opt(2048, "tokens per sequence; longer completions are cut (and reported)", ge=2)
    prompt_format: Literal["auto", "chat", "raw"] = opt(
        "auto", "chat: the tokenizer's chat template; raw: plain text; auto: chat when there is a template"
    )
    think_open: str = opt(THINK_OPEN, "tag that opens the think block of {cot, answer} completions")
    think_close: str = opt(THINK_CLOSE, "tag that closes the think block")
    system_prompt: str | None = opt(None, "system message added to chat prompts")
    # model
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "parameter dtype")
    device: str = opt("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    cpu_autocast: Literal["auto", "bf16", "off"] = opt(
        "off",
        "fp32 weights on the CPU: bf16 autocast (fp32 master weights and log-prob sums); auto = when the CPU "
        "has bf16 units (avx512_bf16 / amx_bf16)",
    )
    lora_r: int = opt(0, "LoRA rank; 0 = full fine-tuning", ge=0)
    lora_alpha: int = opt(16, "LoRA alpha", ge=1)
    checkpoint_every: int = opt(1, "activation checkpointing of every n-th decoder layer; 0 = off", ge=0)
    checkpoint_attention: Literal["keep", "recompute"] = opt(
        "keep",
        "under activation checkpointing: keep attention's outputs, T (d + heads) numbers per layer, instead of "
        "recomputing attention in the backward pass (same gradients; cipo_fast.model.checkpointing)",
    )
    trust_remote_code: bool = opt(False, "allow models that ship their own code")
    fsdp_cpu_offload: bool = opt(
        False,
        "under torchrun (FSDP2, CUDA): keep the parameter shards, gradients and AdamW state in host memory",
    )
    backend: Literal["auto", "triton", "chunked", "reference"] = opt(
        "auto", "fused log-prob backend: triton (CUDA), chunked (any device), reference (full logits)"
    )
    share_prefix: bool = opt(True, "store a pair's common prefix once in the packed stream")
    fused_loss: bool = opt(
        True,
        "with the chunked backend, the loss and its gradient inside the LM-head pass (3 GEMMs instead of 4; "
        "cipo_fast.ops.fused_loss)",
    )
    # reference log-probs
    ref_mode: Literal["precompute", "lazy"] = opt(
        "precompute", "precompute: all before step 1, no second model; lazy: per step with a frozen reference"
    )
    cache_dir: str | None = opt(None, "reference log-prob cache (default: <cache root>/refcache)")
    # outputs
    save_steps: int = opt(0, "checkpoint every n steps; 0: only at the end", ge=0)
    keep_checkpoints: int = opt(2, "checkpoints kept", ge=1)
    cpu_mmap_threshold_mb: int = opt(
        8, "glibc: serve allocations of at least this many MiB with mmap (lower peak memory); 0 = off", ge=0
    )
    save_merged: bool = opt(False, "LoRA: also write the merged model")
    resume: bool = opt(
        False, "continue the run in --out (an interrupted one, or a finished one to more steps)"
    )
    overwrite: bool = opt(False, "replace the run in --out once the new run has started")
    progress: bool = opt(True, "progress bars")
    cipo: CipoConfig = CipoConfig()
    r2mu: R2muConfig = R2muConfig()

    def __post_init__(self):
        check_fields(self)
        checks = [
            (self.epochs > 0 or self.max_steps > 0, "--epochs or --max-steps must be positive"),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
            (
                self.loss_on == "all" or self.method in SINGLE_SEQUENCE_METHODS,
                f"--loss-on {self.loss_on} applies to single-sequence methods ({', '.join(SINGLE_SEQUENCE_METHODS)})",
            ),
            (
                not self.save_merged or self.lora_r > 0,
                "--save-merged only applies to LoRA runs (--lora-r > 0)",
            ),
            (
                METHODS[self.method][1] is False or bool(self.retain),
                f"--method {self.method} needs a retain set (--retain FILE)",
            ),
            (
                self.retain_loss == "nll" or (bool(self.retain) and self.method != "cipo"),
                "--retain-loss kl needs a retain set (--retain FILE) and a method other than cipo",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.method == "r2mu":
            self._check_r2mu()
        self.reasoning  # noqa: B018 -- validates the tags

    def _check_r2mu(self) -> None:
        """R²MU reads its own learning rate, batch size and retain weight (the paper's defaults), so the
        general options must stay unset; it trains chosen matrices, so it has no LoRA mode."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for general, own in (
            ("lr", "r2mu_lr"),
            ("batch_size", "r2mu_batch_size"),
            ("retain_weight", "r2mu_alpha"),
        ):
            if getattr(self, general) != defaults[general]:
                raise ValueError(f"--method r2mu takes {flag(own)} instead of {flag(general)}")
        if self.lora_r > 0:
            raise ValueError(
                "--method r2mu trains the matrices --r2mu-params names; it has no LoRA mode (--lora-r 0)"
            )
        if self.r2mu.r2mu_cot_weight > 0 and not self.r2mu.r2mu_cot_data:
            raise ValueError(
                "--method r2mu needs reasoning data to preserve (--r2mu-cot-data FILE), or --r2mu-cot-weight 0"
            )

    @property
    def chosen_nll_weight(self) -> float:
        if self.rpo_alpha is not None:
            return self.rpo_alpha
        return 1.0 if self.method == "cipo" else 0.0

    @property
    def loss(self) -> str:
        if self.method == "cipo" and self.cipo.cipo_variant == "paper":
            return "simpo"  # reference-free: the paper variant has no reference model
        return METHODS[self.method][0]

    @property
    def reasoning(self) -> ReasoningFormat:
        return ReasoningFormat(self.think_open, self.think_close)

    def check_resume(self, run_dir: Path) -> None:
        """Refuse to resume the run in `run_dir` with settings that change what its steps compute (the
        length of the run, checkpointing and progress display may change)."""
        path = Path(run_dir) / "config.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved_cipo = saved.pop("cipo", {})
            saved_r2mu = saved.pop("r2mu", {})
        except (OSError, ValueError, AttributeError):
            raise ValueError(f"--resume: {path} is missing or not a cipo-fast config") from None
        current = json.loads(self.to_json())
        current_cipo = current.pop("cipo")
        current_r2mu = current.pop("r2mu")  # read by --method r2mu only (runs before it have none)
        diff = [k for k in sorted(current) if k not in RESUME_MAY_CHANGE and saved.get(k) != current[k]]
        diff += [
            f"cipo.{k}"
            for k in sorted(current_cipo)
            if k != "rounds" and saved_cipo.get(k) != current_cipo[k]
        ]
        if self.method == "r2mu":
            diff += [f"r2mu.{k}" for k in sorted(current_r2mu) if saved_r2mu.get(k) != current_r2mu[k]]
        if diff:
            raise ValueError(f"--resume: {path} differs in {', '.join(diff)}; resume with the same settings")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: Path) -> TrainConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            cipo = CipoConfig(**raw.pop("cipo", {}))
            r2mu = R2muConfig(**raw.pop("r2mu", {}))
            return cls(**raw, cipo=cipo, r2mu=r2mu)
        except (OSError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a cipo-fast training config ({e})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
