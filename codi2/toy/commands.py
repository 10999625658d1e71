"""Command-line wiring of ``codi2 demo`` and ``codi2 bench toy`` (argparse; no torch at import).

``add_demo_parser(subparsers)`` / ``add_bench_parser(subparsers)`` add the subcommands to an
``argparse`` subparsers object; ``demo_arguments(parser)`` / ``bench_arguments(parser)`` fill a
parser that already exists (for :class:`codi2.cli.Command` rows). ``run_demo_command(args)`` and
``run_bench_command(args)`` return the exit status.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

DEFAULT_MODEL = "toy"
DEFAULT_DEMO_DIR = "codi2-demo"
DEMO_HELP = "run the toy model on every task and write an HTML gallery"
BENCH_HELP = "in-context benchmark on the toy world (accuracy per task, held-out, baselines)"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def _generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or directory (default: {DEFAULT_MODEL})")
    parser.add_argument("--seed", type=int, default=0, help="picks the world inputs and seeds generation (default: 0)")
    parser.add_argument("--steps", type=_positive, default=None, help="diffusion steps per item (default: the model's)")
    parser.add_argument("--max-new-tokens", type=_positive, default=None, help="token limit per answer (default: the model's)")


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_DEMO_DIR, help=f"gallery folder (default: {DEFAULT_DEMO_DIR})")
    _generation_arguments(parser)


def bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=["toy"], help="the benchmark to run (toy: the shapes & tones world)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--n", type=_positive, default=20, help="samples per task and group (seen / held-out; default: 20)")
    parser.add_argument("--task", action="append", default=None, help="run only this task (repeatable)")
    parser.add_argument("--batch", type=_positive, default=8, help="prompts generated together (default: 8; same answers as 1)")
    parser.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds pooled into each figure (default: --seed and the next two, "
                        "so every figure pools 3 seeds x --n)")
    parser.add_argument("--inputs", choices=["world", "foreign", "both"], default="world",
                        help="input media drawn by the world's renderer, by the independent foreign one, or both (default: world)")
    _generation_arguments(parser)


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help=DEMO_HELP, description=DEMO_HELP)
    demo_arguments(parser)
    parser.set_defaults(run=run_demo_command)
    return parser


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help=BENCH_HELP, description=BENCH_HELP)
    bench_arguments(parser)
    parser.set_defaults(run=run_bench_command)
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("steps", args.steps), ("max_new_tokens", args.max_new_tokens)) if v is not None}


def _load(args: argparse.Namespace) -> Any:
    import codi2

    model = codi2.load(args.model, device=getattr(args, "device", None))
    model.eval()
    return model


def run_demo_command(args: argparse.Namespace) -> int:
    from codi2.toy.demo import run_demo

    run_demo(_load(args), args.out, args.seed, options=_options(args))
    return 0


def run_bench_command(args: argparse.Namespace) -> int:
    from codi2.errors import ConfigError
    from codi2.toy.bench import format_report, print_progress, run_bench
    from codi2.toy.tasks import TASKS

    unknown = sorted(set(args.task or ()) - set(TASKS))
    if unknown:  # before the model loads
        raise ConfigError(f"codi2 bench toy: unknown task(s) {', '.join(unknown)}; tasks: {', '.join(TASKS)}")
    report = run_bench(_load(args), args.n, args.seed, options=_options(args), tasks=args.task,
                       seeds=args.seeds or [args.seed, args.seed + 1, args.seed + 2], inputs=args.inputs, progress=None if args.json else print_progress, batch=args.batch)
    report["model"] = args.model
    print(json.dumps(report) if args.json else format_report(report))
    return 0


__all__ = ["add_bench_parser", "add_demo_parser", "bench_arguments", "demo_arguments", "run_bench_command", "run_demo_command"]
