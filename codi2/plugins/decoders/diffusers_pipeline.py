"""The ``diffusers-pipeline`` decoder: any stock diffusers pipeline that takes ``prompt_embeds``.

NExT-GPT's recipe, for every text-to-image, text-to-audio and text-to-video pipeline at once:
the LLM's slots are projected to the pipeline's *text conditioning* and passed as
``prompt_embeds``. Tested on Stable Diffusion 1.x, SDXL, PixArt-alpha, AudioLDM (1) and
TextToVideoSD (zeroscope); SD-2.x, PixArt-sigma and MusicLDM take the same code paths (untested).

- **Condition**: what the pipeline's own ``encode_prompt`` returns, shape read from the
  empty prompt's encoding at load: ``[77, 768]`` for SD-1.5, ``[120, 4096]`` for PixArt-alpha,
  ``[1, 512]`` for AudioLDM (its CLAP text vector). SDXL's pooled text embedding (1280) rides
  as one extra token, zero-padded to the hidden width: ``[78, 2048]``.
- **Target features** (the paper's ``C_x(x)``): that same encoding of the item's caption,
  ``media.meta["caption"]`` (as NExT-GPT aligns to the text encoder); an item without one is
  a :class:`~codi2.errors.MediaError`.
- **Diffusion loss**: the pipeline's own training objective: its VAE's latents of the target
  (images resized and centre-cropped by the pipeline's image processor; audio as the log-mel
  spectrogram of its vocoder's settings; video frame by frame), DDPM noise at a random step of
  its scheduler's configuration, the denoiser (UNet, or PixArt's transformer) conditioned like
  the pipeline conditions it (SDXL's pooled embedding and size ids, PixArt's micro-conditions,
  AudioLDM's class embedding), MSE on the scheduler's prediction type.
- **Generation**: the stock pipeline, called with ``prompt_embeds`` (and pooled embeddings or
  an attention mask of ones where the pipeline takes them); its unconditional input for
  guidance is its own encoding of the empty prompt (zeros where the pipeline says
  ``force_zeros_for_empty_prompt``).

No fidelity path (``fidelity=True`` is rejected). Flow-matching pipelines (SD3, Flux) take
``prompt_embeds`` too but train with another objective: loading them is a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from codi2.plugins.decoders._options import PipelineOptions
from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.decoders._diffusers_pipeline_impl import PromptEmbedsDecoder
    from codi2.registry.components import RegisterCallback

NAME = "diffusers-pipeline"


class DiffusersPipelineOptions(PipelineOptions):
    """Options of the ``diffusers-pipeline`` decoder (shared ones in :class:`PipelineOptions`)."""

    plugin: ClassVar[str] = NAME

    #: hub id or local directory of a diffusers pipeline
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    #: the pipeline class (``StableDiffusionXLPipeline``); None = the one model_index.json names
    pipeline: str | None = None
    #: what the pipeline renders; None = read from the class name (Audio/Music -> audio, Video -> video)
    modality: Literal["image", "audio", "video"] | None = None
    steps: int = Field(50, ge=1)
    #: classifier-free guidance scale; None = the pipeline's own default
    guidance: float | None = Field(None, ge=0)
    #: image / video size; None = the denoiser's sample size times the VAE's scale factor
    height: int | None = Field(None, ge=8, multiple_of=8)
    width: int | None = Field(None, ge=8, multiple_of=8)
    #: audio clip length; None = the denoiser's sample size in seconds
    audio_length_in_s: float | None = Field(None, gt=0)
    #: video frames, and the frame rate written into generated media
    num_frames: int = Field(16, ge=1)
    fps: float = Field(8.0, gt=0)
    #: further keyword arguments for every pipeline call (``{"eta": 0.0}``)
    call_options: dict[str, Any] = Field(default_factory=dict)


def load(options: DiffusersPipelineOptions) -> PromptEmbedsDecoder:
    """Build the decoder (imports torch and diffusers; loads the pipeline)."""
    from codi2.plugins.decoders._diffusers_pipeline_impl import PromptEmbedsDecoder

    return PromptEmbedsDecoder.from_options(options)


@hookimpl
def codi2_register_decoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=DiffusersPipelineOptions,
        description="any diffusers pipeline taking prompt_embeds (SD-1.x, SDXL, PixArt, AudioLDM, ...), "
        "conditioned on its text encoder's output",
    )
