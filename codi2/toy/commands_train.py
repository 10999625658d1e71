"""``codi2 train --preset toy [--out DIR] [--minutes M] [--ship] [--fresh]`` (and the global ``--threads N``).

The command line side of :mod:`codi2.toy.recipe`: it runs every phase into ``--out`` (default
``./codi2-toy``), prints each phase's progress and a summary, and with ``--ship`` copies the
result into the package (``codi2/assets/toy``), which is where ``codi2.load("toy")`` reads it.
Light at import.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "codi2-toy"


def toy_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``codi2 train --preset toy`` (``--preset`` itself is the caller's)."""
    parser.add_argument("--out", metavar="DIR", default=None, help=f"output model directory (default: ./{DEFAULT_OUT})")
    parser.add_argument("--minutes", type=float, default=None, metavar="M", help="total time budget of the phases (default 30)")
    parser.add_argument("--ship", action="store_true", help="copy the result into codi2/assets/toy (the `toy` preset)")
    parser.add_argument("--fresh", action="store_true", help="retrain every phase even if its output exists")


def run_toy_train(out: str | Path | None = None, minutes: float | None = None, threads: int | None = None,
                  *, ship: bool = False, resume: bool = True) -> int:
    """Reproduce the toy model (see :mod:`codi2.toy.recipe`); returns the exit status."""
    from codi2.toy.recipe import RecipeSettings, run_recipe
    from codi2.toy.recipe import ship as ship_model

    settings = RecipeSettings.full(minutes=minutes or 30.0, threads=threads or 2)
    out = Path(out or DEFAULT_OUT)
    start = time.monotonic()
    report = run_recipe(out, settings, resume=resume, log=lambda line: print(f"[{time.monotonic() - start:6.0f} s] {line}", flush=True))
    print(summary(report))
    print(f"model written to {out} (load it with codi2.load({str(out)!r}))")
    if ship:
        print(f"shipped to {ship_model(out)}")
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for a parser filled by :func:`toy_train_arguments`."""
    return run_toy_train(args.out, args.minutes, getattr(args, "threads", None), ship=args.ship, resume=not args.fresh)


def summary(report: dict[str, Any]) -> str:
    """A few lines: time per phase, encoder and decoder accuracy, per-task model accuracy."""
    lines = []
    for phase in ("encoder", "image_decoder", "audio_decoder", "mllm"):
        info = report.get(phase, {})
        extra = {k: v for k, v in info.items() if k not in ("steps", "seconds")}
        lines.append(f"{phase:14s} {info.get('steps', '-')} steps, {info.get('seconds', '-')} s  {extra}")
    for task, row in report.get("evaluation", {}).items():
        lines.append(f"  {task:16s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    lines.append(f"total {report.get('total_seconds', '-')} s")
    return "\n".join(lines)
