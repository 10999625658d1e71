"""The ``zeroscope`` decoder component (imported lazily by :mod:`.zeroscope`).

Wraps diffusers' stock ``TextToVideoSDPipeline``: sampling calls the pipeline with
``prompt_embeds=cond``; ``target_features`` is the pipeline's own ``encode_prompt`` on the
target's caption; training reuses the pipeline's VAE, UNet and scheduler configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from codi2.core.types import ConditionSpec, Media
from codi2.errors import MediaError
from codi2.plugins.base import (
    DiffusersDecoder,
    check_cond,
    check_media,
    check_no_reference,
    noise_and_timesteps,
    prediction_target,
    resolve_device,
    step_callback,
)

if TYPE_CHECKING:
    from codi2.plugins.decoders.zeroscope import ZeroscopeOptions

NAME = "zeroscope"


def video_tensor(item: Media, num_frames: int, height: int, width: int) -> torch.Tensor:
    """``[num_frames, 3, height, width]`` float in [-1, 1]: frames picked evenly across the
    clip (repeating frames of a shorter clip), each centre-cropped to the target aspect ratio
    and resized with antialiasing."""
    data = np.asarray(item.data)
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 3 or len(data) == 0:
        raise MediaError(f"video must be uint8 [frames, H, W, 3], got {data.dtype} {data.shape}", item=item.label)
    picks = np.linspace(0, len(data) - 1, num_frames).round().astype(int)
    frames = torch.from_numpy(np.ascontiguousarray(data[picks])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = frames.shape[-2:]
    if h * width > w * height:  # too tall: crop rows
        crop = round(w * height / width)
        frames = frames[..., (h - crop) // 2 : (h - crop) // 2 + crop, :]
    elif h * width < w * height:  # too wide: crop columns
        crop = round(h * width / height)
        frames = frames[..., (w - crop) // 2 : (w - crop) // 2 + crop]
    if tuple(frames.shape[-2:]) != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return frames.clamp(-1.0, 1.0)


class ZeroscopeDecoder(DiffusersDecoder):
    """zeroscope (``TextToVideoSDPipeline``) as a codi2 :class:`~codi2.core.interfaces.Decoder`.

    ``condition`` is the CLIP text encoder's hidden-state sequence: ``model_max_length`` (77)
    tokens of its hidden size (1024 for ``cerspense/zeroscope_v2_576w``).
    """

    name = NAME
    modality = "video"
    per_item_generators = True  # generate() passes one generator per row to the stock pipeline
    supports_reference = False
    frozen_parts = ("vae", "text_encoder")

    def __init__(self, pipeline: Any, options: ZeroscopeOptions):
        super().__init__()
        from diffusers import DDPMScheduler

        self.pipeline, self.options = pipeline, options
        self.unet, self.vae, self.text_encoder = pipeline.unet, pipeline.vae, pipeline.text_encoder
        self.tokenizer = pipeline.tokenizer
        self.condition = ConditionSpec(
            tokens=int(self.tokenizer.model_max_length), dim=int(self.text_encoder.config.hidden_size)
        )
        scale = pipeline.vae_scale_factor
        self.height = options.height or self.unet.config.sample_size * scale
        self.width = options.width or self.unet.config.sample_size * scale
        self.train_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self.to(resolve_device(options.device))
        with torch.no_grad():  # the pipeline's unconditional input, for guidance
            self.register_buffer("empty_prompt", self._encode([""]), persistent=False)
        self.set_trainable(options.trainable)
        self.train(False)

    @classmethod
    def from_options(cls, options: ZeroscopeOptions) -> ZeroscopeDecoder:
        from diffusers import TextToVideoSDPipeline

        return cls(cls.load_pipeline(TextToVideoSDPipeline, NAME, options), options)

    def _encode(self, captions: list[str]) -> torch.Tensor:
        embeds, _ = self.pipeline.encode_prompt(captions, self.device, 1, False)
        return embeds

    # --- the Decoder interface ----------------------------------------------------------------

    @torch.no_grad()
    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        """The CLIP text hidden states of each item's ``meta["caption"]`` ``[B, 77, dim]``
        (float32): zeroscope has no video encoder, its conditioning space is text."""
        captions = []
        for item in media:
            check_media(NAME, item, "video")
            caption = item.meta.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise MediaError(
                    f"decoder {NAME!r} needs a caption for target features (zeroscope is conditioned on text): "
                    "set media.meta['caption']",
                    item=item.label,
                )
            captions.append(caption)
        return self._encode(captions).float()

    @torch.no_grad()
    def _latents(self, media: Sequence[Media], generator: torch.Generator | None) -> torch.Tensor:
        """``[B, C, F, h, w]``: every frame through the 2D VAE, as the pipeline decodes them."""
        for item in media:
            check_media(NAME, item, "video")
        count = self.options.num_frames
        frames = torch.stack([video_tensor(m, count, self.height, self.width) for m in media])
        batch = frames.shape[0]
        flat = frames.flatten(0, 1).to(self.device, self.vae.dtype)
        latents = self.vae.encode(flat).latent_dist.sample(generator) * self.vae.config.scaling_factor
        return latents.unflatten(0, (batch, count)).permute(0, 2, 1, 3, 4)

    def diffusion_loss(
        self,
        cond: torch.Tensor,
        media: Sequence[Media],
        reference: Sequence[Media | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoising loss on the targets' frame latents with ``cond`` as the text hidden states."""
        check_no_reference(NAME, reference)
        check_cond(NAME, cond, self.condition.tokens, self.condition.dim, batch=len(media))
        latents = self._latents(media, generator)
        noise, t = noise_and_timesteps(latents, self.train_scheduler.config.num_train_timesteps, generator)
        noisy = self.train_scheduler.add_noise(latents, noise, t)
        cond = cond.to(self.device, self.unet.dtype)
        pred = self.unet(noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
        target = prediction_target(self.train_scheduler, latents, noise, t)
        return F.mse_loss(pred.float(), target.float())

    @torch.no_grad()
    def generate(
        self,
        cond: torch.Tensor,
        reference: Sequence[Media | None] | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        on_step: Any = None,
    ) -> list[Media]:
        """One clip per row of ``cond``: the stock pipeline with ``prompt_embeds=cond`` and the
        empty-prompt encoding as ``negative_prompt_embeds``."""
        check_no_reference(NAME, reference)
        check_cond(NAME, cond, self.condition.tokens, self.condition.dim)
        guidance = self.options.guidance if guidance is None else guidance
        embeds = cond.to(self.device, self.text_encoder.dtype)
        out = self.pipeline(
            prompt_embeds=embeds, negative_prompt_embeds=self.empty_prompt.expand(len(embeds), -1, -1),
            num_frames=self.options.num_frames, height=self.height, width=self.width,
            num_inference_steps=steps or self.options.steps, guidance_scale=guidance, generator=generator,
            output_type="np", **step_callback(on_step, steps or self.options.steps),
        )
        videos = (np.asarray(out.frames) * 255).round().clip(0, 255).astype(np.uint8)
        return [Media("video", v, fps=float(self.options.fps)) for v in videos]
