"""The ``sd-unclip`` image decoder: Stable Diffusion 2.1 unCLIP conditioned on one image embedding.

CoDi-2 renders images with SD-2.1-unCLIP (paper §4): the LLM's projected slot output stands in
for the CLIP image embedding that the stock ``StableUnCLIPImg2ImgPipeline`` takes as
``image_embeds``. This module is only the registration and the options; it imports no torch.
The component itself (:class:`~codi2.plugins.decoders._sd_unclip_impl.SDUnCLIPDecoder`) is
imported inside :func:`load`.

Choices worth knowing:

- ``steps=20`` and ``guidance=10.0`` are the stock pipeline's own defaults.
- ``noise_level`` (the unCLIP noise augmentation of the image embedding) is used for training
  *and* sampling, so the decoder is trained on the conditioning distribution it samples with.
  The default 0 is the pipeline's default and means "reproduce the embedding faithfully".
- ``fidelity=True`` is the paper's §5.1 high-fidelity path: the reference image's VAE latents
  are concatenated to the noisy latents through a widened ``conv_in`` whose extra input
  channels start at zero, so the untrained model behaves exactly like the plain one.
- ``trainable``: ``frozen`` (default; only ``cond`` receives gradients), ``adapters`` (the
  widened ``conv_in``; needs ``fidelity``) or ``full`` (the whole UNet; the VAE, text encoder and
  image encoder always stay frozen: the prompt is always empty and targets are fixed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from codi2.plugins.decoders._options import PipelineOptions
from codi2.plugins.decoders._pipeline_dir import check_pipeline_dir
from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.decoders._sd_unclip_impl import SDUnCLIPDecoder
    from codi2.registry.components import RegisterCallback

NAME = "sd-unclip"
DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-unclip"


class SDUnCLIPOptions(PipelineOptions):
    """Options of the ``sd-unclip`` decoder (shared ones in :class:`PipelineOptions`)."""

    plugin: ClassVar[str] = NAME
    has_fidelity: ClassVar[bool] = True

    #: hub id or local directory of a ``StableUnCLIPImg2ImgPipeline`` (diffusers layout)
    model: str = DEFAULT_MODEL
    #: denoising steps and classifier-free guidance scale (the stock pipeline's defaults)
    steps: int = Field(20, ge=1)
    guidance: float = Field(10.0, ge=0)
    #: unCLIP noise augmentation level of the image embedding (0 .. num_train_timesteps - 1)
    noise_level: int = Field(0, ge=0)
    #: output size in pixels; None = unet.sample_size * vae scale factor (768 for SD-2.1-unCLIP)
    height: int | None = Field(None, ge=8, multiple_of=8)
    width: int | None = Field(None, ge=8, multiple_of=8)


def load(options: SDUnCLIPOptions) -> SDUnCLIPDecoder:
    """Build the decoder (imports torch and diffusers; loads the weights)."""
    check_pipeline_dir(NAME, options.model)
    from codi2.plugins.decoders._sd_unclip_impl import SDUnCLIPDecoder

    return SDUnCLIPDecoder.from_options(options)


@hookimpl
def codi2_register_decoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=SDUnCLIPOptions,
        description="Stable Diffusion 2.1 unCLIP conditioned on a 1024-d image embedding "
        "(StableUnCLIPImg2ImgPipeline); optional §5.1 fidelity path",
    )


def __getattr__(name: str) -> Any:
    # ``from codi2.plugins.decoders.sd_unclip import SDUnCLIPDecoder`` works, lazily
    if name == "SDUnCLIPDecoder":
        from codi2.plugins.decoders._sd_unclip_impl import SDUnCLIPDecoder

        return SDUnCLIPDecoder
    raise AttributeError(name)
