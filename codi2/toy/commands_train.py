"""``codi2 train --preset toy [--out DIR] [--minutes M] [--ship] [--fresh]`` (and the global ``--threads N``).

The recipe :mod:`codi2.toy.plugin` registers with the ``toy`` preset, the command line side of
:mod:`codi2.toy.recipe`: it runs every phase into ``--out`` (default ``./codi2-toy``), prints
each phase's progress and a summary, and with ``--ship`` copies the result into the package
(``codi2/assets/toy``), which is where ``codi2.load("toy")`` reads it.
Light at import.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "codi2-toy"


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
