"""An example codi2 plugin: one encoder and one decoder, registered through the ``codi2`` hooks.

This module is what the entry point ``example = "codi2_example_plugin"`` points at. It stays
light: the hook implementations and option models below import only pydantic and codi2's
registry. torch is imported inside the ``load`` functions, so ``codi2 --help`` and
``codi2 plugins`` stay fast however many plugins are installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from codi2.registry import hookimpl

if TYPE_CHECKING:
    from codi2_example_plugin.components import ExampleDecoder, ExampleEncoder

__version__ = "0.1.0"


class EncoderOptions(BaseModel):
    """Options of the ``example-encoder`` component (validated before ``load`` sees them)."""

    model_config = ConfigDict(extra="forbid")  # a misspelled option is an error, not ignored

    embed_dim: int = Field(16, ge=1, le=4096, description="width of the output features")
    seed: int = Field(0, description="seed of the fixed random projection")


class DecoderOptions(BaseModel):
    """Options of the ``example-decoder`` component."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(16, ge=4, le=256, description="side of the generated square images")
    tokens: int = Field(1, ge=1, description="conditioning vectors per image")
    cond_dim: int = Field(16, ge=1, description="width of each conditioning vector")
    channels: int = Field(16, ge=1, description="width of the denoising network")
    steps: int = Field(8, ge=1, description="default sampling steps")
    seed: int = Field(0, description="seed of the initial weights")
    weights: str | None = Field(None, description="a .safetensors file saved by save_weights()")


def load_encoder(options: EncoderOptions) -> ExampleEncoder:
    from codi2_example_plugin.components import ExampleEncoder

    return ExampleEncoder(options)


def load_decoder(options: DecoderOptions) -> ExampleDecoder:
    from codi2_example_plugin.components import ExampleDecoder

    decoder = ExampleDecoder(options)
    if options.weights is not None:
        decoder.load_weights(options.weights)
    return decoder


@hookimpl
def codi2_register_encoders(register):
    register(
        "example-encoder",
        load=load_encoder,
        options=EncoderOptions,
        description="colour/spectrum statistics through a fixed random projection (image, audio)",
    )


@hookimpl
def codi2_register_decoders(register):
    register(
        "example-decoder",
        load=load_decoder,
        options=DecoderOptions,
        description="a tiny conditional pixel-space diffusion model (image)",
    )
