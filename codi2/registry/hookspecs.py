"""The hooks a codi2 plugin can implement.

Each hook hands the plugin a ``register`` callback rather than asking it to return values, so
the host can add keyword arguments later without breaking anyone::

    from codi2.registry import hookimpl

    @hookimpl
    def codi2_register_encoders(register):
        register("my-encoder", load=load_my_encoder, options=MyEncoderOptions,
                 description="...")

``load(options)`` receives a validated instance of ``options`` (a pydantic model) and returns
the component. Import torch and friends inside ``load``, never at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from codi2.registry.components import RegisterCallback

hookspec = pluggy.HookspecMarker("codi2")
hookimpl = pluggy.HookimplMarker("codi2")


@hookspec
def codi2_register_encoders(register: RegisterCallback) -> None:
    """Register media encoders (components implementing ``codi2.core.interfaces.Encoder``)."""


@hookspec
def codi2_register_llms(register: RegisterCallback) -> None:
    """Register language models (components implementing ``codi2.core.interfaces.LLM``)."""


@hookspec
def codi2_register_decoders(register: RegisterCallback) -> None:
    """Register media decoders (components implementing ``codi2.core.interfaces.Decoder``)."""


@hookspec
def codi2_register_metrics(register: RegisterCallback) -> None:
    """Register evaluation metrics (callables scoring generated media against references)."""


@hookspec
def codi2_register_datasets(register: RegisterCallback) -> None:
    """Register dataset builders (``codi2 data build KIND``)."""


@hookspec
def codi2_register_presets(register: RegisterCallback) -> None:
    """Register model presets: ``register(name, load=lambda options: ModelConfig | dict | dir)``
    (a configuration, or a packaged model directory); ``train=recipe, train_options=Model`` adds
    the recipe ``codi2 train --preset NAME`` runs."""


@hookspec
def codi2_register_modalities(register: RegisterCallback) -> None:
    """Register modalities: ``register(name, load=lambda options: ModalitySpec)`` (see
    :class:`codi2.core.modality.ModalitySpec`); the built-in image/audio/video/text too."""
