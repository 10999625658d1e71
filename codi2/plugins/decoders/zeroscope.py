"""The ``zeroscope`` video decoder: zeroscope v2 (text-to-video latent diffusion) driven by the LLM.

zeroscope's UNet3D cross-attends to the CLIP text encoder's hidden states (77 x 1024 for
``cerspense/zeroscope_v2_576w``); that sequence is the conditioning the LLM's slots are
projected to, ``ConditionSpec(tokens=77, dim=text hidden size)``, passed to the stock
``TextToVideoSDPipeline`` as ``prompt_embeds``.

Choices worth knowing:

- ``target_features(video)`` (the paper's ``C_x(x)``) is the CLIP text encoding of the
  target's caption, ``media.meta["caption"]`` — zeroscope has no video encoder and its
  conditioning space is text, so a caption is the only faithful description of a target in
  that space. A video without a caption raises :class:`~codi2.errors.MediaError`.
- Training (``diffusion_loss``) VAE-encodes every frame with the 2D VAE (as the pipeline
  decodes them), after picking ``num_frames`` frames evenly across the clip and centre-cropping
  and resizing to ``height`` x ``width``; then DDPM noise, UNet3D with ``cond``, MSE on the
  scheduler's prediction type.
- Guidance uses the pipeline's own unconditional input, the empty prompt's encoding (cached).
- Defaults are zeroscope_v2_576w's recommended 576x320, 24 frames; ``steps=50`` and
  ``guidance=9.0`` are the stock pipeline's defaults. Output: uint8 ``[frames, H, W, 3]`` at ``fps``.
- No fidelity (reference) path: ``fidelity=True`` is rejected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from codi2.plugins.decoders._options import PipelineOptions
from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.decoders._zeroscope_impl import ZeroscopeDecoder
    from codi2.registry.components import RegisterCallback

NAME = "zeroscope"
DEFAULT_MODEL = "cerspense/zeroscope_v2_576w"


class ZeroscopeOptions(PipelineOptions):
    """Options of the ``zeroscope`` decoder (shared ones in :class:`PipelineOptions`)."""

    plugin: ClassVar[str] = NAME

    #: hub id or local directory of a ``TextToVideoSDPipeline`` (diffusers layout)
    model: str = DEFAULT_MODEL
    steps: int = Field(50, ge=1)
    guidance: float = Field(9.0, ge=0)
    #: clip shape for training and sampling; None = unet.sample_size * vae scale factor
    num_frames: int = Field(24, ge=1)
    height: int | None = Field(320, ge=8, multiple_of=8)
    width: int | None = Field(576, ge=8, multiple_of=8)
    #: frame rate written into generated media
    fps: float = Field(8.0, gt=0)


def load(options: ZeroscopeOptions) -> ZeroscopeDecoder:
    """Build the decoder (imports torch and diffusers; loads the weights)."""
    from codi2.plugins.decoders._zeroscope_impl import ZeroscopeDecoder

    return ZeroscopeDecoder.from_options(options)


@hookimpl
def codi2_register_decoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=ZeroscopeOptions,
        description="zeroscope v2 text-to-video (TextToVideoSDPipeline) conditioned on 77 CLIP text hidden states",
    )


def __getattr__(name: str) -> Any:
    if name == "ZeroscopeDecoder":
        from codi2.plugins.decoders._zeroscope_impl import ZeroscopeDecoder

        return ZeroscopeDecoder
    raise AttributeError(name)
