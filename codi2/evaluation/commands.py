"""``codi2 eval``: the paper's metrics on a model (or on finished outputs) from the command line.

Wiring (in ``codi2/cli.py``)::

    from codi2.evaluation.commands import eval_arguments, run_eval
    Command("eval", "evaluate a model on the paper's benchmarks", eval_arguments, run_eval)

or, with plain argparse, ``add_eval_parser(subparsers)``. Importing this module imports only
the standard library; the work happens in :func:`run_eval`.

Examples (docs/evaluation.md has the full recipes)::

    codi2 eval dreambench --model ckpt/ --data dreambooth/dataset --out runs/db
    codi2 eval edit --model ckpt/ --data coco_edit/edits.jsonl --out runs/edit
    codi2 eval audio-edit --model ckpt/ --data audio_edit/ --cnn14 Cnn14_16k_mAP=0.438.pth
    codi2 eval score --generated out/ --references refs/ --json
    codi2 eval report runs/db/results.json other/results.json --out runs/compare
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TASKS = ("dreambench", "edit", "audio-edit", "score", "report")
_GENERATION_TASKS = ("dreambench", "edit", "audio-edit")
_CLIP_METRICS = ("clip-i", "clip-t", "clipsim", "clip-score")
_SET_METRICS = ("fid", "kid")
EVAL_HELP = "evaluate a model with the paper's metrics (DreamBench, editing, audio editing)"


def eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``codi2 eval`` arguments to ``parser``."""
    parser.add_argument("task", choices=TASKS, help="dreambench | edit | audio-edit (generate, then "
                        "score) | score (finished outputs vs references) | report (combine results.json files)")
    parser.add_argument("inputs", nargs="*", metavar="RESULTS_JSON", help="report: results files to combine")
    parser.add_argument("--model", help="codi2 model: a saved directory or a preset name")
    parser.add_argument("--data", help="the evaluation set (folder or .jsonl); score: a folder holding "
                        "generated/ and references/ (and optionally texts.json)")
    parser.add_argument("--out", help="where outputs and results go (default: codi2-eval/TASK)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--name", help="the run's name in tables (default: the model's)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RESULTS_JSON",
                        help="earlier results.json files to show beside this run")
    parser.add_argument("--metrics", help="comma-separated metric names (default: the task's)")
    parser.add_argument("--metric-options", metavar="JSON",
                        help='per-metric options, e.g. \'{"lsd": {"time_offset": 1120}}\'')
    networks = parser.add_argument_group("feature networks (offline: hub ids must be in the local cache)")
    networks.add_argument("--dino", help="DINO ViT-S/16: hub id or directory (default facebook/dino-vits16)")
    networks.add_argument("--clip", help="CLIP: hub id or directory (default openai/clip-vit-base-patch32)")
    networks.add_argument("--cnn14", help="PANNs CNN14 checkpoint file (default $CODI2_CNN14_CHECKPOINT "
                          "or ~/.cache/codi2/eval/Cnn14_16k_mAP=0.438.pth)")
    networks.add_argument("--inception", help="FID's InceptionV3 weights file for fid/kid (default "
                          "$CODI2_INCEPTION_WEIGHTS or ~/.cache/codi2/eval/weights-inception-2015-12-05-6726825d.pth)")
    networks.add_argument("--classifier", help="registered audio classifier for KL/FD (default panns-cnn14)")
    networks.add_argument("--allow-download", action="store_true", help="let DINO/CLIP download from the hub")
    score = parser.add_argument_group("score")
    score.add_argument("--generated", help="folder of generated files")
    score.add_argument("--references", help="folder of reference files (paired by file name)")
    score.add_argument("--texts", help="JSON {name: text} or JSONL of {name, text} (for clip-t)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--limit", type=int, help="edit / audio-edit: first N items only")
    gen.add_argument("--max-subjects", type=int, help="dreambench: first N subjects only")
    gen.add_argument("--max-prompts", type=int, help="dreambench: first N prompts per subject")
    gen.add_argument("--shots", type=int, default=3, help="dreambench: real images given in context (3)")
    gen.add_argument("--samples", type=int, default=4, help="dreambench: images per prompt (4)")
    gen.add_argument("--prompt-template", default="{prompt}",
                     help="dreambench: text after the images; {prompt} and {cls} are filled in")
    gen.add_argument("--steps", type=int, help="diffusion steps")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    gen.add_argument("--resume", action="store_true", help="reuse outputs already in --out")
    gen.add_argument("--batch", type=int, default=8, help="prompts generated together (8; same outputs as 1)")


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``eval`` to an argparse ``subparsers`` object; it runs :func:`run_eval`."""
    parser = subparsers.add_parser("eval", help=EVAL_HELP, description=EVAL_HELP)
    eval_arguments(parser)
    parser.set_defaults(run=run_eval)
    return parser


def _registry() -> Any:
    from codi2.registry import default_registry

    registry = default_registry()
    if "lsd" not in registry.names("metric"):
        # until codi2.evaluation.plugin is listed in BUILTIN_PLUGINS
        from codi2.evaluation import plugin

        registry.register_plugin(plugin, "codi2.evaluation.plugin")
    return registry


def metric_options(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per-metric options from ``--metric-options`` and the network flags (flags fill gaps only)."""
    from codi2.errors import ConfigError

    options: dict[str, Any] = {}
    if args.metric_options:
        try:
            options = json.loads(args.metric_options)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--metric-options is not valid JSON: {exc.msg}") from None
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise ConfigError('--metric-options must be a JSON object {"metric": {"option": value}}')
    device = getattr(args, "device", None)  # the CLI's global --device
    for name in names:
        opts = options.setdefault(name, {})
        if name == "dino" and args.dino:
            opts.setdefault("model", args.dino)
        if name in _CLIP_METRICS and args.clip:
            opts.setdefault("model", args.clip)
        if name in _SET_METRICS and args.inception:
            opts.setdefault("weights", args.inception)
        if name == "dino" or name in _CLIP_METRICS or name in _SET_METRICS:
            if device:
                opts.setdefault("device", device)
            if args.allow_download:
                opts.setdefault("allow_download", True)
        if name in ("kl", "fd", "fad"):
            if args.classifier:
                opts.setdefault("classifier", args.classifier)
            classifier_opts = opts.setdefault("classifier_options", {})
            if opts.get("classifier", "panns-cnn14") == "panns-cnn14":
                if args.cnn14:
                    classifier_opts.setdefault("checkpoint", args.cnn14)
                if device:
                    classifier_opts.setdefault("device", device)
    return options


def _require(args: argparse.Namespace, *names: str) -> None:
    from codi2.errors import ConfigError

    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise ConfigError(f"codi2 eval {args.task} needs {', '.join(missing)}")


def _run_task(args: argparse.Namespace, registry: Any) -> Any:
    from codi2.evaluation import tasks

    names = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if args.task == "score":
        if args.data and not (args.generated or args.references):
            data = Path(args.data)
            args.generated, args.references = str(data / "generated"), str(data / "references")
            if not args.texts and (data / "texts.json").is_file():
                args.texts = str(data / "texts.json")
        _require(args, "generated", "references")
        from codi2.evaluation.data import read_texts

        texts = read_texts(args.texts) if args.texts else None
        opts = metric_options(args, names or registry.names("metric"))  # the defaults are picked later
        return tasks.score_folders(args.generated, args.references, registry=registry, metrics=names,
                                   metric_options=opts, texts=texts, run=args.name or "outputs")
    _require(args, "model", "data")
    import codi2

    names = names or list(tasks.DEFAULT_METRICS[args.task])
    model = codi2.load(args.model, registry=registry, device=getattr(args, "device", None))
    run = args.name or Path(str(args.model).rstrip("/")).name
    out = Path(args.out or Path("codi2-eval") / args.task)
    gen_options = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance)) if v is not None}
    common = {"registry": registry, "metrics": names, "metric_options": metric_options(args, names),
                  "generate_options": gen_options, "resume": args.resume, "run": run, "batch": args.batch}
    if args.task == "dreambench":
        return tasks.dreambench(model, args.data, out, shots=args.shots, samples=args.samples,
                                max_subjects=args.max_subjects, max_prompts=args.max_prompts,
                                template=args.prompt_template, **common)
    if args.task == "edit":
        return tasks.edit(model, args.data, out, limit=args.limit, **common)
    return tasks.audio_edit(model, args.data, out, limit=args.limit, **common)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``codi2 eval``: evaluate, print the table (or JSON), write results under ``--out``."""
    from codi2.evaluation import report

    if args.task == "report":
        from codi2.errors import ConfigError

        if not args.inputs and not args.compare:
            raise ConfigError("codi2 eval report needs results.json files to combine")
        results = report.load_results([*args.inputs, *args.compare])
    else:
        results = [_run_task(args, _registry()), *report.load_results(args.compare)]
    out = args.out or (str(Path("codi2-eval") / args.task) if args.task in _GENERATION_TASKS else None)
    written = report.write_outputs(results, out) if out else {}
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results],
                          "files": {k: str(v) for k, v in written.items()}}, indent=2))
    else:
        print(report.format_table(results))
        print()
        print(report.format_sources(results))
        for kind, path in written.items():
            print(f"{kind}: {path}", file=sys.stderr)
    return 0
