"""The ``codi2 train`` and ``codi2 data`` subcommands (argparse), torch-free at import.

Wire them into the command table of :mod:`codi2.cli`::

    Command("train", TRAIN_HELP, train_arguments, run_train),
    Command("data", DATA_HELP, data_arguments, run_data),

or, with a bare ``argparse`` sub-parser group, ``add_train_parser(subparsers)`` and
``add_data_parser(subparsers)``. ``run_*`` return an exit status; errors are raised as
:class:`~codi2.errors.Codi2Error` for the CLI to print.

::

    codi2 train --config train.yaml [--resume auto|DIR] [--set optimizer.lr=3e-4 ...]
    codi2 data validate data/train.jsonl [--decode] [--json]
    codi2 data build incontext-edit --input ip2p/ --out data/edit [--seed 0] [--set max_per_group=4]
    codi2 data convert data/edit/data.jsonl --out data/edit-shards [--format webdataset|arrow] [--shard-size 1000]
    codi2 data builders
"""

from __future__ import annotations

import argparse
import json
from typing import Any

TRAIN_HELP = "train a CoDi-2 model from a training config (also under `accelerate launch -m codi2 train`)"
DATA_HELP = "build and validate training data (JSONL conversations)"


# --- codi2 train -------------------------------------------------------------------------------------


def train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="training config (YAML or JSON)")
    parser.add_argument("--preset", metavar="NAME", help="reproduce a preset from nothing with the training recipe "
                        "its plugin registers, instead of a config (toy: the shapes & tones world)")
    parser.add_argument("--resume", metavar="DIR", help="continue from a checkpoint, a run's output folder (its latest checkpoint) or 'auto'")
    parser.add_argument("--output-dir", metavar="DIR", help="override output_dir")
    parser.add_argument("--max-steps", type=int, metavar="N", help="override max_steps")
    parser.add_argument("--stop-after", type=int, metavar="N", help="stop at step N with a checkpoint, as if interrupted (resume later)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field (dotted keys, YAML values); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    recipe = parser.add_argument_group("a preset's recipe (--preset NAME; each recipe takes the options it knows)")
    recipe.add_argument("--out", metavar="DIR", help="output model directory")
    recipe.add_argument("--minutes", type=float, metavar="M", help="total time budget")
    recipe.add_argument("--ship", action="store_true", help="install the result into the package as the preset")
    recipe.add_argument("--fresh", action="store_true", help="retrain every phase even if its output exists")


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help=TRAIN_HELP, description=TRAIN_HELP)
    train_arguments(parser)
    parser.set_defaults(run=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from codi2.errors import ConfigError

    if getattr(args, "preset", None):
        if args.config:
            raise ConfigError("--preset and --config exclude each other")
        return _run_recipe(args)
    if not args.config:
        raise ConfigError("give a training config (--config FILE) or a preset with a recipe (--preset toy)")
    from codi2.training.config import TrainConfig, parse_override

    config = TrainConfig.from_file(args.config)
    overrides = dict(parse_override(item) for item in args.set)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    if args.no_progress:
        overrides["progress"] = False
    if overrides:
        config = config.with_overrides(overrides)
    from codi2.training.trainer import train

    result = train(config, resume=args.resume, stop_after=args.stop_after)
    if result.final_dir is not None:
        print(f"trained {result.step} step(s); model saved to {result.final_dir}")
    else:
        print(f"stopped at step {result.step}; resume with --resume {result.output_dir}")
    if result.skipped:
        print(f"{len(result.skipped)} sample(s) were skipped (data.on_error: skip)")
    return 0


def _run_recipe(args: argparse.Namespace) -> int:
    """``--preset NAME``: the training recipe the preset's plugin registered (``train=`` and
    ``train_options=`` on its ``register`` call), with the recipe options given."""
    from codi2.errors import ConfigError
    from codi2.registry import NoOptions, default_registry
    from codi2.training.config import parse_override

    registry = default_registry()
    spec = registry.get("preset", args.preset)
    train = spec.extra.get("train")
    if train is None:
        with_recipe = [s.name for s in registry.specs("preset") if "train" in s.extra]
        raise ConfigError(f"preset {args.preset!r} has no training recipe; presets with one: {', '.join(with_recipe) or 'none'}")
    given = {"out": args.out, "minutes": args.minutes, "threads": getattr(args, "threads", None)}
    options = {k: v for k, v in given.items() if v is not None}
    options.update({k: True for k in ("ship", "fresh") if getattr(args, k)})
    options.update(dict(parse_override(item) for item in args.set))
    if args.output_dir:
        options["out"] = args.output_dir
    model = spec.extra.get("train_options", NoOptions)
    from pydantic import ValidationError

    try:
        validated = model.model_validate(options)
    except ValidationError as exc:
        from codi2.core.config import format_validation_error

        raise ConfigError(f"preset {args.preset!r} recipe: invalid options: {format_validation_error(exc)}") from None
    return train(validated)


# --- codi2 data ----------------------------------------------------------------------------------------


def data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    validate = sub.add_parser("validate", help="check JSONL files (or shard folders); list every problem with file, line and field (shard and key)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--decode", action="store_true", help="also read every media file")
    validate.add_argument("--json", action="store_true", help="print one JSON object")
    build = sub.add_parser("build", help="build a dataset from your own files (see `codi2 data builders`)")
    build.add_argument("kind", metavar="KIND", help="builder name (incontext-edit, audio-mix, text-repurpose, composition, paired, mimic-it, ...)")
    build.add_argument("--input", required=True, metavar="PATH", help="your files: a folder or a manifest, as the builder expects")
    build.add_argument("--out", required=True, metavar="DIR", help="output folder (data.jsonl, media/)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--media", choices=("reference", "copy", "symlink"), help="how existing media enter the dataset (default: reference)")
    build.add_argument("--limit", type=int, metavar="N", help="at most N samples")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a builder option (YAML value, e.g. ops=[add,drop]); repeatable")
    _shard_arguments(build, "also write the dataset as shards to OUT/shards (webdataset tar or arrow)")
    convert = sub.add_parser("convert", help="turn JSONL datasets into shards (WebDataset tar, or Hugging Face Arrow / Parquet), media inside")
    convert.add_argument("files", nargs="+", metavar="FILE", help="JSONL dataset file(s)")
    convert.add_argument("--out", required=True, metavar="DIR", help="output folder of the shards")
    _shard_arguments(convert, "shard layout (default webdataset)")
    convert.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="a bad line stops the conversion or is left out and reported")
    sub.add_parser("builders", help="list the dataset builders and their options")


def _shard_arguments(parser: argparse.ArgumentParser, help_format: str) -> None:
    parser.add_argument("--format", choices=("webdataset", "arrow", "parquet"), help=help_format)
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N", help="samples per shard (default 1000)")


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help=DATA_HELP, description=DATA_HELP)
    data_arguments(parser)
    parser.set_defaults(run=run_data)
    return parser


def run_data(args: argparse.Namespace) -> int:
    if args.data_command == "validate":
        return _validate(args)
    if args.data_command == "build":
        return _build(args)
    if args.data_command == "convert":
        return _convert(args.files, args.out, args.format or "webdataset", args.shard_size, args.on_error)
    return _builders()


def _validate(args: argparse.Namespace) -> int:
    from codi2.training.data import validate_files
    from codi2.training.shards import is_sharded, validate_shards

    sharded = [f for f in args.files if is_sharded(f)]
    if sharded and len(sharded) != len(args.files):
        from codi2.errors import DatasetError

        raise DatasetError("give JSONL files or shard folders to validate, not both at once")
    report = validate_shards(args.files, decode=args.decode) if sharded else validate_files(args.files, decode=args.decode)
    if args.json:
        print(json.dumps({"files": report.files, "samples": report.samples, "media": dict(report.media),
                          "problems": [vars(p) for p in report.problems]}, indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1


def _build(args: argparse.Namespace) -> int:
    from codi2.training.builders import build_dataset, dataset_registry
    from codi2.training.config import parse_override

    options: dict[str, Any] = dict(parse_override(item) for item in args.set)
    options.update({"input": args.input, "out": args.out, "seed": args.seed})
    if args.media:
        options["media"] = args.media
    if args.limit:
        options["limit"] = args.limit
    report = build_dataset(args.kind, options, dataset_registry())
    print(report.summary())
    print(f"check it with: codi2 data validate {report.data_file}")
    if args.format:
        from pathlib import Path

        return _convert([report.data_file], str(Path(args.out) / "shards"), args.format, args.shard_size, "raise")
    return 0


def _convert(files: list[str], out: str, kind: str, shard_size: int, on_error: str) -> int:
    from codi2.training.shards import convert

    print(convert(files, out, kind=kind, shard_size=shard_size, on_error=on_error).summary())
    print(f"train on it with: data: {{train: {out}}}")
    return 0


def _builders() -> int:
    from codi2.training.builders import dataset_registry

    for spec in dataset_registry().specs("dataset"):
        print(f"{spec.name}  ({spec.plugin})\n    {spec.description}")
        own = [n for n in spec.options.model_fields if n not in ("input", "out", "seed", "media", "limit")]
        if own:
            print("    options: " + ", ".join(f"{n}={_default(spec.options.model_fields[n])}" for n in own))
    return 0


def _default(info: Any) -> str:
    if info.is_required():
        return "(required)"
    value = info.get_default(call_default_factory=True)
    return json.dumps(value) if not isinstance(value, str) else repr(value)
