"""The ``audioldm2`` audio decoder: AudioLDM2 driven by the LLM through its GPT-2 stream.

CoDi-2 renders audio with AudioLDM2. Its latent-diffusion UNet cross-attends to two streams:

- ``generated_prompt_embeds``: 8 vectors that AudioLDM2's GPT-2 produces from the projected
  CLAP (+ T5) encodings of the condition — the paper's "language of audio" (LOA), the one
  interface through which AudioLDM2 accepts *any* modality;
- ``prompt_embeds``: FLAN-T5 hidden states of the text prompt (text-only detail).

**Choice: the LLM's slots replace the GPT-2 stream**, ``ConditionSpec(tokens=8, dim=GPT-2
hidden size)`` (8 x 768 for ``cvssp/audioldm2``). The codi2 LLM plays the role GPT-2 plays in
AudioLDM2 (a language model emitting the LOA), so this is the faithful seam. The T5 stream
is fixed to the T5 encoding of the empty prompt, computed once and cached: that is exactly
the pipeline's unconditional T5 input, so it carries no content of its own and classifier-free
guidance contrasts only the LLM's stream. Splitting the slots across both streams would ask
the LLM to invent T5 token sequences, for which audio-only training data has no target.

``target_features(audio)`` (the paper's ``C_x(x)``) is what AudioLDM2 itself derives from the
audio: the CLAP audio tower on the extractor's 48 kHz features (the first ``max_length_s``
seconds, cut deterministically instead of the extractor's random crop), the projection model
(with the empty-prompt T5 stream, as above), then 8 greedy GPT-2 steps. The stock
``generate_language_model`` calls generation helpers that a bare ``GPT2Model`` lacks under
transformers 5, so :func:`~codi2.plugins.decoders._audioldm2_impl.language_model_vectors`
runs the same loop itself (append the last hidden state as the next input, 8 times).

Training (``diffusion_loss``) follows AudioLDM2's data pipeline: resample to the vocoder's
rate (16 kHz), remove DC and peak-normalise to 0.5, pad with silence or cut to the configured
length, log-mel spectrogram with the vocoder's settings (hop 160, 64 Slaney mel bins up to
8 kHz, 1024-point FFT, reflect padding, log floored at 1e-5; computed in torch), VAE-encode,
DDPM noise, UNet with ``cond`` as the GPT-2 stream, MSE on the scheduler's prediction type.

Sampling (``generate``) is the stock pipeline with ``prompt_embeds`` = the empty T5 encoding,
``generated_prompt_embeds`` = ``cond`` and, for guidance, the pipeline's own unconditional pair
(empty-prompt T5 and the GPT-2 vectors of the empty prompt). Output: mono float32 at 16 kHz.

Fidelity (paper §5.1, ``fidelity=True``): the reference clip's mel latents (the VAE's mode,
at the training length; zeros for rows without a reference) are concatenated to the UNet input
through a ``conv_in`` widened with zero-initialised channels, as ``sd-unclip`` does for images.
The ``adapters`` policy trains and saves that ``conv_in`` (``unet.conv_in.*``). Sampling with
fidelity runs the stock pipeline's loop itself (the pipeline cannot pass extra channels),
calling the pipeline's own helpers in its order, so with the extra channels still zero it
renders exactly what the stock pipeline renders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from codi2.plugins.decoders._options import PipelineOptions
from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.decoders._audioldm2_impl import AudioLDM2Decoder
    from codi2.registry.components import RegisterCallback

NAME = "audioldm2"
DEFAULT_MODEL = "cvssp/audioldm2"


class AudioLDM2Options(PipelineOptions):
    """Options of the ``audioldm2`` decoder (shared ones in :class:`PipelineOptions`)."""

    plugin: ClassVar[str] = NAME
    has_fidelity: ClassVar[bool] = True

    #: hub id or local directory of an ``AudioLDM2Pipeline`` (diffusers layout)
    model: str = DEFAULT_MODEL
    #: denoising steps and classifier-free guidance scale (the stock pipeline's defaults)
    steps: int = Field(200, ge=1)
    guidance: float = Field(3.5, ge=0)
    #: clip length for training and sampling; None = the UNet's sample size (10.24 s for cvssp/audioldm2)
    audio_length_in_s: float | None = Field(None, gt=0)


def load(options: AudioLDM2Options) -> AudioLDM2Decoder:
    """Build the decoder (imports torch and diffusers; loads the weights)."""
    from codi2.plugins.decoders._audioldm2_impl import AudioLDM2Decoder

    return AudioLDM2Decoder.from_options(options)


@hookimpl
def codi2_register_decoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=AudioLDM2Options,
        description="AudioLDM2 (AudioLDM2Pipeline) conditioned on 8 GPT-2-space vectors (the LLM replaces its GPT-2)",
    )


def __getattr__(name: str) -> Any:
    if name == "AudioLDM2Decoder":
        from codi2.plugins.decoders._audioldm2_impl import AudioLDM2Decoder

        return AudioLDM2Decoder
    raise AttributeError(name)
