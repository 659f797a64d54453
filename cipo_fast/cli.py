"""`cipo-fast` command line, built from the config dataclasses.

Each subcommand's options are the fields of its config (`TrainConfig` + `CipoConfig` + `R2muConfig`,
`EvalConfig`, `FinetuneConfig`, `BaselineDataConfig`, `DemoConfig`), turned into arguments by transformers'
`HfArgumentParser` (which TRL's CLI builds on): the field's help text and default become `--help`,
`Literal` types become choices, booleans get `--x` / `--no-x`, lists take several values. The parsed
values build the frozen configs, whose own checks (types, finite numbers, bounds) turn bad input into
`cipo-fast <command>: error: ...` with exit code 2, before anything is written. `main(argv)` is
callable from tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from importlib.metadata import PackageNotFoundError, version

from transformers import HfArgumentParser

from cipo_fast.options import BOUNDS


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except for required options and options that are off by default (None)."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


class ConfigParser(HfArgumentParser):
    """`HfArgumentParser` that also takes tuple fields (as lists), skips nested config fields, shows the
    bounds declared with `cipo_fast.options.opt` in the help and shows every default."""

    def __init__(self, dataclass_types=(), **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(dataclass_types, **kwargs)

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field):
        if dataclasses.is_dataclass(field.type):
            return  # a nested config (TrainConfig.cipo) gets its own argument group
        field = _copy(field)
        meta = dict(field.metadata)
        bounds = [f"{BOUNDS[k]} {meta.pop(k)}" for k in list(meta) if k in BOUNDS]
        if bounds:
            meta["help"] = f"{meta.get('help', '')} ({', '.join(bounds)})"
        field.metadata = meta
        hint = field.type
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        inner = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        if (
            typing.get_origin(inner) is tuple
        ):  # tuple[T, ...] -> list[T] (nargs="+"); back to a tuple in the config
            default = field.default
            field.type = list[typing.get_args(inner)[0]]
            if default is not dataclasses.MISSING:
                field.default = dataclasses.MISSING
                field.default_factory = lambda d=default: None if d is None else list(d)
        HfArgumentParser._parse_dataclass_field(parser, field)


def _copy(field: dataclasses.Field) -> dataclasses.Field:
    new = dataclasses.field(
        default=field.default, default_factory=field.default_factory, metadata=dict(field.metadata)
    )
    new.name, new.type = field.name, field.type
    return new


def _values(args: argparse.Namespace, cls) -> dict:
    return {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)
    }


def build_parser() -> argparse.ArgumentParser:
    from cipo_fast.config import CipoConfig, R2muConfig, TrainConfig
    from cipo_fast.demo import DemoConfig
    from cipo_fast.eval.evaluate import EvalConfig
    from cipo_fast.trainers.finetune import FinetuneConfig
    from cipo_fast.unlearning.baselines import BaselineDataConfig

    parser = argparse.ArgumentParser(
        prog="cipo-fast",
        description="Counterfactual unlearning for reasoning LMs (CiPO) on a fused-kernel trainer",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ConfigParser)
    sub.add_parser(
        "train",
        dataclass_types=[TrainConfig, CipoConfig, R2muConfig],
        help="train with a preference / unlearning loss",
    )
    sub.add_parser(
        "eval",
        dataclass_types=[EvalConfig],
        help="leakage in CoT and answer under decoding strategies; utility",
    )
    sub.add_parser(
        "finetune",
        dataclass_types=[FinetuneConfig],
        help="make a target model: SFT on question -> CoT + answer (cached)",
    )
    sub.add_parser(
        "baseline-data",
        dataclass_types=[BaselineDataConfig],
        help="forget-set files of R-TOFU's baselines (GA, IDK forms) and TRU from forget items",
    )
    sub.add_parser(
        "demo",
        dataclass_types=[DemoConfig],
        help="synthetic authors -> target model -> CiPO -> before/after report",
    )
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


def _version() -> str:
    try:
        return version("cipo-fast")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from cipo_fast.train.distributed import launched

        if launched() and args.command != "train":
            raise ValueError(
                "under torchrun only `cipo-fast train` runs sharded; run this command in one process"
            )
        if args.command == "train":
            from cipo_fast.config import CipoConfig, R2muConfig, TrainConfig

            cfg = TrainConfig(
                **_values(args, TrainConfig),
                cipo=CipoConfig(**_values(args, CipoConfig)),
                r2mu=R2muConfig(**_values(args, R2muConfig)),
            )
            from cipo_fast import fit

            summary = fit(cfg)
            if int(os.environ.get("RANK", "0")) != 0:
                return 0  # under torchrun rank 0 reports
            if cfg.method == "cipo":
                print(f"done: {len(summary['rounds'])} round(s), model in {summary['model_dir']}")
            else:
                print(
                    f"done: {summary['steps']} steps, final loss {summary['final_loss']}, "
                    f"model in {summary['model_dir']}"
                )
            return 0
        if args.command == "eval":
            from cipo_fast.eval.evaluate import EvalConfig, evaluate

            evaluate(EvalConfig(**_values(args, EvalConfig)))
            return 0
        if args.command == "finetune":
            from cipo_fast.trainers.finetune import FinetuneConfig
            from cipo_fast.trainers.finetune import main as finetune_main

            print(f"target model: {finetune_main(FinetuneConfig(**_values(args, FinetuneConfig)))}")
            return 0
        if args.command == "baseline-data":
            from cipo_fast.unlearning.baselines import BaselineDataConfig, build

            paths = build(BaselineDataConfig(**_values(args, BaselineDataConfig)))
            print("\n".join(f"{name:20s} {path}" for name, path in paths.items()))
            return 0
        if args.command == "demo":
            from cipo_fast.demo import DemoConfig
            from cipo_fast.demo import main as demo_main

            demo_main(DemoConfig(**_values(args, DemoConfig)))
            return 0
        if args.command == "kernels":
            from cipo_fast.ops import kernel_check

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
