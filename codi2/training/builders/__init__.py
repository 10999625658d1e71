"""The paper's data builders (§4.1), registered as ``dataset`` components.

This module is an ordinary codi2 plugin (``codi2_register_datasets``): each builder registers
its options model and a ``load(options)`` that returns a :class:`DatasetBuilder`; calling
``.build()`` on it writes the dataset. Third-party packages add builders the same way, and
``codi2 data build KIND`` runs any of them. Importing this module imports no torch.

==================  ==========================================================================
``incontext-edit``  in-context edits from InstructPix2Pix-layout triples sharing an instruction
``audio-mix``       audio add / drop / replace edits mixed from a folder of clips
``text-repurpose``  Alpaca-style instructions with phrases replaced by text-encoder features
``composition``     KOSMOS-G style entity crops + caption -> target image
``paired``          media-caption manifests -> captioning and generation samples
``mimic-it``        MIMIC-IT multimodal instructions -> text answers
==================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from codi2.registry.hookspecs import hookimpl
from codi2.training.builders import (
    audio_mix,
    composition,
    incontext_edit,
    mimic_it,
    paired,
    text_repurpose,
)
from codi2.training.builders.common import BuilderOptions, BuildReport

if TYPE_CHECKING:
    from codi2.registry.components import RegisterCallback

BUILDERS: dict[str, ModuleType] = {
    module.NAME: module for module in (incontext_edit, audio_mix, text_repurpose, composition, paired, mimic_it)
}


@dataclass
class DatasetBuilder:
    """A builder bound to validated options; ``build()`` writes the dataset."""

    name: str
    options: BuilderOptions
    run: Callable[[Any], BuildReport]

    def build(self) -> BuildReport:
        return self.run(self.options)


def _loader(name: str, module: ModuleType) -> Callable[[Any], DatasetBuilder]:
    def load(options: Any) -> DatasetBuilder:
        return DatasetBuilder(name, options, module.build)

    return load


@hookimpl
def codi2_register_datasets(register: RegisterCallback) -> None:
    for name, module in BUILDERS.items():
        register(name, load=_loader(name, module), options=module.Options, description=module.DESCRIPTION)


def build_dataset(kind: str, options: dict[str, Any] | BuilderOptions, registry: Any = None) -> BuildReport:
    """Run builder ``kind`` (a built-in, or any ``dataset`` component of ``registry``)."""
    if registry is None and kind in BUILDERS:
        module = BUILDERS[kind]
        spec_options = options if isinstance(options, module.Options) else _validate(kind, module.Options, options)
        return module.build(spec_options)
    registry = registry or dataset_registry()
    return registry.load("dataset", {"plugin": kind, "options": options}).build()


def _validate(kind: str, model: type[BuilderOptions], options: Any) -> BuilderOptions:
    from pydantic import ValidationError

    from codi2.core.config import format_validation_error
    from codi2.errors import ConfigError

    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"dataset {kind!r}: invalid options: {format_validation_error(exc)}") from None


def dataset_registry() -> Any:
    """The default registry, with these built-in builders added if its plugin list lacks them."""
    import sys

    from codi2.registry import default_registry

    registry = default_registry()
    if not any(spec.name in BUILDERS for spec in registry.specs("dataset")):
        registry.register_plugin(sys.modules[__name__], name=__name__)
    return registry


__all__ = ["BUILDERS", "BuildReport", "BuilderOptions", "DatasetBuilder", "build_dataset", "dataset_registry"]
