"""The toy components: the small CoDi-2 that ships inside codi2, trained on the shapes & tones world.

Registered like any plugin (no torch at import):

- ``toy-encoder``: a tiny ImageBind (the imagebind plugin's own network at a small size),
  trained contrastively on the world so image, audio, video and text share one 64-d space and
  attributes compose. Video items are read frame by frame (4 tokens, one per frame), so the
  order of a clip reaches the LLM.
- ``toy-llm``: the ``hf-causal-lm`` plugin's loader with the packaged tiny Llama (configuration
  and a word-level tokenizer built offline) as its default ``model``; every ``hf-causal-lm``
  option applies.
- ``toy-image-decoder``: pixel-space diffusion at 32 x 32 (diffusers ``UNet2DModel``, clean-image
  "sample" prediction, DDIM sampling), conditioned on an encoder embedding through the UNet's
  class embedding.
- ``toy-audio-decoder``: the same diffusion in a 128-bin log-mel space (16 frames of 64 ms; the
  UNet runs along time with the mel bands as channels), inverted to a 16 kHz waveform by a
  non-negative least-squares mel inversion and Griffin-Lim.
- the trained model shipped under ``codi2/assets/toy`` (:func:`asset_dir`), registered as the
  preset ``toy`` by :mod:`codi2.toy.plugin`.

Each weight option defaults to the packaged file, so ``{"plugin": "toy-encoder"}`` is the
shipped encoder; ``random_init`` builds an untrained one (tests, the training recipe).
See docs/toy-model.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from codi2.plugins.llms.hf_causal_lm import HFCausalLMOptions
from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.registry.components import RegisterCallback

ENCODER_FILE = "encoder.safetensors"
IMAGE_DECODER_FILE = "image_decoder.safetensors"
AUDIO_DECODER_FILE = "audio_decoder.safetensors"
LLM_DIR = "llm"


def asset_dir() -> Path:
    """Where the shipped toy model lives inside the installed package."""
    return Path(str(resources.files("codi2") / "assets" / "toy"))


def _resolve(path: str | None, default: str) -> str:
    return str(Path(path).expanduser()) if path else str(asset_dir() / default)


class ToyEncoderOptions(BaseModel):
    """Options of ``toy-encoder``."""

    model_config = ConfigDict(extra="forbid")

    #: a safetensors state dict of the tiny ImageBind; None = the packaged one
    weights: str | None = None
    #: build untrained (the recipe trains it; tests)
    random_init: bool = False
    embed_dim: int = Field(64, ge=4)
    width: int = Field(32, ge=4)  # every tower's width
    heads: int = Field(4, ge=1)
    blocks: int = Field(2, ge=1)
    video_frames: int = Field(4, ge=1)  # frames (tokens) a video item is read as
    #: audio loudness normalisation before the filterbank: "rms" scales every clip to one RMS
    #: level (a quiet recording means the same as a loud one; the recipe's choice), "none" reads
    #: the waveform as is (models trained before the option existed)
    audio_loudness: Literal["none", "rms"] = "none"
    #: image position normalisation before the vision tower: "content" moves the picture so the
    #: bounding box of what differs from its background sits at the centre (a drawing shifted
    #: by a few pixels means the same; the recipe's choice), "none" reads it as is (models
    #: trained before the option existed)
    image_centring: Literal["none", "content"] = "none"
    #: how the vision tower turns pixels into tokens: "patch" is ImageBind's linear 14 x 14 patch
    #: embedding (models trained before the option existed), "conv" a small convolutional stem
    #: (four stride-2 3 x 3 convolutions, 14 x 14 tokens; the recipe's choice: the tiny tower
    #: trained from scratch then reads shape at any scale, docs/toy-model.md)
    vision_stem: Literal["patch", "conv"] = "patch"
    seed: int = 0


class ToyDecoderOptions(BaseModel):
    """Options of ``toy-image-decoder`` and ``toy-audio-decoder``."""

    model_config = ConfigDict(extra="forbid")

    #: a safetensors file with the UNet and conditioning MLP; None = the packaged one
    weights: str | None = None
    #: the toy encoder whose embeddings are this decoder's conditioning (``target_features``)
    encoder: ToyEncoderOptions = Field(default_factory=ToyEncoderOptions)
    random_init: bool = False
    #: UNet widths, one per level; None = the decoder's default (image 16/32/32; audio 64, one level)
    channels: list[int] | None = Field(None, min_length=1, max_length=4)
    #: self-attention at the coarsest UNet level (off by default: 2-3x slower on a CPU)
    attention: bool = False
    #: DDIM steps when generate() is not told
    steps: int = Field(20, ge=1)
    #: std of the Gaussian noise added to the conditioning while training (robustness to the
    #: LLM's imperfect embeddings, as unCLIP's noise augmentation)
    cond_noise: float = Field(0.1, ge=0)
    #: audio only: Griffin-Lim iterations of the waveform inversion
    griffin_lim_iters: int = Field(32, ge=1)
    seed: int = 0

    @field_validator("channels")
    @classmethod
    def _groupable(cls, channels: list[int] | None) -> list[int] | None:
        if channels and any(c <= 0 or c % 8 for c in channels):
            raise ValueError(f"every width must be a positive multiple of 8 (the UNet normalises in 8 groups), got {channels}")
        return channels


class ToyLLMOptions(HFCausalLMOptions):
    """``hf-causal-lm`` options; ``model`` defaults to the packaged tiny Llama directory, built
    from its configuration (``init: random``): the trained weights come from the codi2 checkpoint."""

    model: str | None = None  # type: ignore[assignment]
    init: Literal["pretrained", "random"] = "random"
    trainable: Literal["frozen", "lora", "full"] = "full"


def load_encoder(options: ToyEncoderOptions) -> Any:
    from codi2.plugins.toy.encoder import ToyEncoder

    return ToyEncoder.from_options(options, _resolve(options.weights, ENCODER_FILE))


def load_image_decoder(options: ToyDecoderOptions) -> Any:
    from codi2.plugins.toy.decoders import ToyImageDecoder

    return ToyImageDecoder.from_options(options, _resolve(options.weights, IMAGE_DECODER_FILE), _resolve(options.encoder.weights, ENCODER_FILE))


def load_audio_decoder(options: ToyDecoderOptions) -> Any:
    from codi2.plugins.toy.decoders import ToyAudioDecoder

    return ToyAudioDecoder.from_options(options, _resolve(options.weights, AUDIO_DECODER_FILE), _resolve(options.encoder.weights, ENCODER_FILE))


def load_llm(options: ToyLLMOptions) -> Any:
    from codi2.plugins.llms.hf_causal_lm import load as load_hf

    values = options.model_dump()
    values["model"] = _resolve(options.model, LLM_DIR)
    return load_hf(HFCausalLMOptions.model_validate(values))


@hookimpl
def codi2_register_encoders(register: RegisterCallback) -> None:
    register("toy-encoder", load=load_encoder, options=ToyEncoderOptions,
             description="tiny ImageBind aligned on the shapes & tones world (image, audio, video, text; 64-d)")


@hookimpl
def codi2_register_llms(register: RegisterCallback) -> None:
    register("toy-llm", load=load_llm, options=ToyLLMOptions,
             description="hf-causal-lm with the packaged tiny Llama and world tokenizer")


@hookimpl
def codi2_register_decoders(register: RegisterCallback) -> None:
    register("toy-image-decoder", load=load_image_decoder, options=ToyDecoderOptions,
             description="32x32 pixel-space UNet diffusion (x0 prediction, DDIM) on toy-encoder embeddings")
    register("toy-audio-decoder", load=load_audio_decoder, options=ToyDecoderOptions,
             description="log-mel UNet diffusion + Griffin-Lim inversion, 16 kHz, on toy-encoder embeddings")
