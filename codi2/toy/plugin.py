"""The ``toy`` preset, registered like any plugin's: the small CoDi-2 shipped under
``codi2/assets/toy`` and the recipe that reproduces it from nothing (``codi2 train --preset toy``).

The toy components themselves (``toy-encoder``, ``toy-llm``, the toy decoders) are registered by
:mod:`codi2.plugins.toy`; this module only names the packaged model and its training recipe, so
that the trainer and the loader find both through the registry and know nothing of the toy world.
Light at import: pydantic only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.registry.components import RegisterCallback

PRESET = "toy"


class ToyRecipeOptions(BaseModel):
    """Options of the toy training recipe (``codi2 train --preset toy --out DIR --minutes M ...``)."""

    model_config = ConfigDict(extra="forbid")

    out: str | None = None  # output model directory (default ./codi2-toy)
    minutes: float | None = Field(None, gt=0)  # total time budget of the phases (default 30)
    ship: bool = False  # copy the result into codi2/assets/toy (the packaged `toy`)
    fresh: bool = False  # retrain every phase even if its output exists
    threads: int | None = Field(None, ge=1)


def packaged_model(options: Any = None) -> Path:
    """The shipped model directory (``codi2.load("toy")``)."""
    from codi2.errors import ComponentLoadError
    from codi2.plugins.toy import asset_dir

    directory = asset_dir()
    if not (directory / "config.json").is_file():
        raise ComponentLoadError(f"preset {PRESET!r}: {directory} holds no trained model; run `codi2 train --preset toy --out DIR`")
    return directory


def train_recipe(options: ToyRecipeOptions) -> int:
    """Reproduce the toy model (see :mod:`codi2.toy.recipe`); returns the exit status."""
    from codi2.toy.commands_train import run_toy_train

    return run_toy_train(options.out, options.minutes, options.threads, ship=options.ship, resume=not options.fresh)


@hookimpl
def codi2_register_presets(register: RegisterCallback) -> None:
    register(PRESET, load=packaged_model, train=train_recipe, train_options=ToyRecipeOptions,
             description="the small CoDi-2 trained on the shapes & tones world (ships with codi2)")
