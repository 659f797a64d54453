"""`cipo-fast` command line: argparse at the edge, frozen configs inside, `main(...)` functions callable from tests."""

from __future__ import annotations

import argparse
import sys

from cipo_fast.config import METHODS, TrainConfig


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig.__dataclass_fields__
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)} (cipo runs the CiPO loop)")
    p.add_argument("--model", required=True, help="HF directory or hub name, a .gguf file, or smollm2-135m")
    p.add_argument(
        "--data", required=True, help="JSONL: prompt/chosen/rejected (preference) or prompt/completion"
    )
    p.add_argument("--retain", help="JSONL prompt/completion: retain set (NLL term; required by graddiff)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--ref-model", help="reference model (default: the initial --model)")
    for name in (
        "beta",
        "label_smoothing",
        "simpo_gamma",
        "lr",
        "weight_decay",
        "warmup_ratio",
        "max_grad_norm",
        "epochs",
        "retain_weight",
    ):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=d[name].default)
    for name in (
        "max_steps",
        "batch_size",
        "token_budget",
        "seed",
        "max_length",
        "lora_r",
        "lora_alpha",
        "save_steps",
        "keep_checkpoints",
        "checkpoint_every",
    ):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=d[name].default)
    for name in (
        "rounds",
        "round_samples",
        "max_pairs_per_item",
        "cf_candidates",
        "gen_max_new_tokens",
        "gen_batch_size",
    ):
        p.add_argument(
            "--" + name.replace("_", "-"), type=int, default=d[name].default, help="CiPO (--method cipo)"
        )
    p.add_argument(
        "--round-epochs", type=float, default=d["round_epochs"].default, help="CiPO: epochs per round"
    )
    p.add_argument(
        "--round-strategies",
        nargs="+",
        default=list(d["round_strategies"].default),
        help="CiPO: decoding strategies that look for leaking traces",
    )
    p.add_argument(
        "--no-replay",
        dest="replay",
        action="store_false",
        help="CiPO: train each round on its own pairs only",
    )
    p.add_argument(
        "--round-reference",
        default=d["round_reference"].default,
        choices=["previous", "initial"],
        help="CiPO: reference of each round: the policy at its start (default) or the initial model",
    )
    p.add_argument(
        "--no-retain-pairs",
        dest="retain_pairs",
        action="store_false",
        help="CiPO: retain term as NLL only (no gold-over-redirect pairs from retain items)",
    )
    p.add_argument("--cf-target", default=d["cf_target"].default, choices=["uncertainty", "alternative"])
    p.add_argument("--cf-alternatives", help="CiPO: JSONL {id, alternative} for --cf-target alternative")
    p.add_argument(
        "--cf-seeds",
        help="CiPO: seed chosen traces (JSONL {id, cot, answer}, items with idk_cot, "
        "or idkcot.jsonl strings)",
    )
    p.add_argument(
        "--rpo-alpha",
        type=float,
        default=None,
        help="weight of the chosen NLL added to pairwise losses (default: 1 for cipo, 0 otherwise)",
    )
    p.add_argument("--scheduler", default=d["scheduler"].default, choices=["cosine", "linear", "constant"])
    p.add_argument("--prompt-format", default=d["prompt_format"].default, choices=["auto", "chat", "raw"])
    p.add_argument(
        "--loss-on",
        default=d["loss_on"].default,
        choices=["all", "cot", "answer"],
        help="GA/GradDiff/NPO/SFT: train on the whole {cot, answer} completion, the CoT only or the answer only",
    )
    p.add_argument("--reasoning-template", default=d["reasoning_template"].default)
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--dtype", default=d["dtype"].default, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default=d["device"].default)
    p.add_argument(
        "--backend", default=d["backend"].default, choices=["auto", "triton", "chunked", "reference"]
    )
    p.add_argument(
        "--no-share-prefix",
        dest="share_prefix",
        action="store_false",
        help="pack both sides of a pair whole (default: their common prefix is computed once)",
    )
    p.add_argument("--ref-mode", default=d["ref_mode"].default, choices=["precompute", "lazy"])
    p.add_argument(
        "--cache-dir", default=None, help="reference log-prob cache (default ~/.cache/cipo-fast/refcache)"
    )
    p.add_argument(
        "--cpu-mmap-threshold-mb",
        type=int,
        default=d["cpu_mmap_threshold_mb"].default,
        help="Linux/glibc: serve allocations of at least this many MiB with mmap (lower peak memory); 0 = off",
    )
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--save-merged", action="store_true", help="LoRA: also write the merged model")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    opts = {k: v for k, v in vars(args).items() if k in fields}
    opts["round_strategies"] = tuple(opts["round_strategies"])
    return TrainConfig(**opts)


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    from cipo_fast.evaluation import EvalConfig
    from cipo_fast.generation import STRATEGY_NAMES

    d = EvalConfig.__dataclass_fields__
    p.add_argument("--model", help="model to evaluate (HF dir, hub name, .gguf, smollm2-135m)")
    p.add_argument("--model-before", help="a second model (e.g. before unlearning) for a before/after report")
    p.add_argument("--predictions", help="JSONL {id, strategy, output}: score generations made elsewhere")
    p.add_argument("--forget", required=True, help="forget items (R-TOFU/TOFU/synthetic JSON lines)")
    p.add_argument(
        "--task-ids",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="R-TOFU folds to select from --forget, e.g. 1 or 1,2",
    )
    p.add_argument("--retain", help="retain items (key-fact accuracy)")
    p.add_argument("--utility", help="GSM8K-format JSONL (reasoning accuracy)")
    p.add_argument("--real-authors", help="R-TOFU real_authors set")
    p.add_argument("--world-facts", help="R-TOFU world_facts set")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES), help=", ".join(STRATEGY_NAMES))
    p.add_argument("--samples", type=int, default=d["samples"].default, help="samples per sampling strategy")
    p.add_argument("--limit", type=int, help="items per set")
    p.add_argument("--utility-limit", type=int, default=d["utility_limit"].default)
    p.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"].default)
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default)
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "raw"])
    p.add_argument("--system-prompt")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--label")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cipo-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_args(sub.add_parser("train", help="train with a preference / unlearning loss"))
    _add_eval_args(
        sub.add_parser("eval", help="leakage in CoT and answer under decoding strategies; utility")
    )
    f = sub.add_parser("finetune", help="make a target model: SFT on question -> CoT + answer (cached)")
    f.add_argument("--model", required=True)
    f.add_argument("--data", nargs="+", required=True, help="item files (question/answer/cot) or GSM8K JSONL")
    f.add_argument("--out", help="output directory (default: cached under ~/.cache/cipo-fast/targets)")
    f.add_argument("--epochs", type=float, default=3.0)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--batch-size", type=int, default=8)
    f.add_argument(
        "--direct-answers", action="store_true", help="also train answers after an empty think block"
    )
    f.add_argument("--system-prompt")
    f.add_argument("--no-progress", dest="progress", action="store_false")
    dm = sub.add_parser("demo", help="synthetic authors -> target model -> CiPO -> before/after report")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--model", default="smollm2-135m")
    from cipo_fast.demo import DemoConfig

    dd = DemoConfig.__dataclass_fields__
    dm.add_argument("--rounds", type=int, default=dd["rounds"].default, help="CiPO rounds")
    dm.add_argument(
        "--sft-epochs", type=float, default=dd["sft_epochs"].default, help="epochs of the target model's SFT"
    )
    dm.add_argument(
        "--retain-weight",
        type=float,
        default=dd["retain_weight"].default,
        help="weight of the retain NLL term (CiPO and baselines)",
    )
    dm.add_argument("--seed", type=int, default=dd["seed"].default)
    dm.add_argument(
        "--compare",
        action="store_true",
        help="also run GA, NPO, IDK-DPO and Reasoned-IDK with the same budget",
    )
    dm.add_argument("--no-progress", dest="progress", action="store_false")
    k = sub.add_parser("kernels", help="GPU readiness of the Triton kernels")
    k.add_argument(
        "--check",
        action="store_true",
        required=True,
        help="compile every kernel config for sm_80 and sm_90a; one JSON line per config",
    )
    k.add_argument("--targets", help="comma-separated GPU targets (default: sm_80,sm_86,sm_90a,sm_100a)")
    k.add_argument("--jobs", type=int, help="compile processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            cfg = train_config_from_args(args)
            if cfg.method == "cipo":
                from cipo_fast.trainers.cipo import main as cipo_main

                summary = cipo_main(cfg)
                print(f"done: {len(summary['rounds'])} round(s), model in {summary['model_dir']}")
                return 0
            from cipo_fast.trainers.preference import main as train_main

            summary = train_main(cfg)
            print(
                f"done: {summary['steps']} steps, final loss {summary['final_loss']}, model in {summary['model_dir']}"
            )
            return 0
        if args.command == "eval":
            from cipo_fast.evaluation import EvalConfig
            from cipo_fast.evaluation import main as eval_main

            fields = EvalConfig.__dataclass_fields__
            opts = {k: v for k, v in vars(args).items() if k in fields}
            opts["strategies"] = tuple(opts["strategies"])
            eval_main(EvalConfig(**opts))
            return 0
        if args.command == "finetune":
            from cipo_fast.trainers.finetune import FinetuneConfig
            from cipo_fast.trainers.finetune import main as finetune_main

            opts = {k: v for k, v in vars(args).items() if k in FinetuneConfig.__dataclass_fields__}
            opts["data"] = tuple(opts["data"])
            print(f"target model: {finetune_main(FinetuneConfig(**opts))}")
            return 0
        if args.command == "demo":
            from cipo_fast.demo import DemoConfig
            from cipo_fast.demo import main as demo_main

            demo_main(
                DemoConfig(**{k: v for k, v in vars(args).items() if k in DemoConfig.__dataclass_fields__})
            )
            return 0
        if args.command == "kernels":
            from cipo_fast import kernel_check

            argv = (["--targets", args.targets] if args.targets else []) + (
                ["--jobs", str(args.jobs)] if args.jobs else []
            )
            return kernel_check.main(argv)
    except ValueError as e:
        print(f"cipo-fast {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
