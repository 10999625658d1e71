"""Tiny real components (from :mod:`codi2.testing`) as plugins: ``tiny-encoder``, ``tiny-llm``,
``tiny-decoder``.

They let anyone assemble, train, save and serve a whole CoDi-2 model in seconds on a CPU —
for trying the tools, for tests, and as the smallest example of each interface.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from codi2.registry.hookspecs import hookimpl


class TinyEncoderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(16, ge=1)
    tokens: int = Field(1, ge=1)
    seed: int = 0


class TinyLLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_size: int = Field(32, ge=4)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    seed: int = 0


class TinyDecoderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modality: Literal["image", "audio", "video"] = "image"
    tokens: int = Field(2, ge=1)
    dim: int = Field(8, ge=1)
    size: int = Field(16, ge=1)
    fidelity: bool = False
    seed: int = 0


def _encoder(options: TinyEncoderOptions):
    from codi2.testing import TinyEncoder

    return TinyEncoder(**options.model_dump())


def _llm(options: TinyLLMOptions):
    from codi2.testing import TinyLLM

    return TinyLLM(**options.model_dump())


def _decoder(options: TinyDecoderOptions):
    from codi2.testing import TinyDecoder

    return TinyDecoder(**options.model_dump())


@hookimpl
def codi2_register_encoders(register):
    register("tiny-encoder", load=_encoder, options=TinyEncoderOptions, description="tiny frozen random-feature encoder (tests, demos)")


@hookimpl
def codi2_register_llms(register):
    register("tiny-llm", load=_llm, options=TinyLLMOptions, description="tiny causal transformer over bytes (tests, demos)")


@hookimpl
def codi2_register_decoders(register):
    register("tiny-decoder", load=_decoder, options=TinyDecoderOptions, description="tiny denoising diffusion decoder (tests, demos)")
