"""The ``diffusers-pipeline`` decoder component (imported lazily by :mod:`.diffusers_pipeline`).

The pipeline-specific knowledge lives in three places, each keyed by what the pipeline
declares rather than by its name: :meth:`PromptEmbedsDecoder._encode` (what ``encode_prompt``
returns), :meth:`PromptEmbedsDecoder._predict` (how the denoiser is conditioned) and
:meth:`PromptEmbedsDecoder._latents` (how a target becomes latents, by modality).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from codi2.core.types import ConditionSpec, Media
from codi2.errors import ComponentLoadError, MediaError
from codi2.plugins.decoders._audioldm2_impl import MelSettings, log_mel, normalize_wave
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
from codi2.plugins.decoders._zeroscope_impl import video_tensor

if TYPE_CHECKING:
    from codi2.plugins.decoders.diffusers_pipeline import DiffusersPipelineOptions

NAME = "diffusers-pipeline"
_FROZEN = ("vae", "text_encoder", "text_encoder_2", "vocoder")


def _modality_of(pipeline: Any) -> str:
    name = type(pipeline).__name__
    if "Audio" in name or "Music" in name:
        return "audio"
    return "video" if "Video" in name else "image"


class PromptEmbedsDecoder(DiffusersDecoder):
    """A stock diffusers pipeline driven through ``prompt_embeds`` (see the plugin module).

    ``unet`` is the pipeline's denoiser, a UNet or a transformer (the name the shared
    trainable-state policy uses)."""

    name = NAME
    supports_reference = False
    per_item_generators = True  # generate() passes one generator per row to the stock pipeline

    def __init__(self, pipeline: Any, options: DiffusersPipelineOptions):
        super().__init__()
        from diffusers import DDPMScheduler

        self.pipeline, self.options = pipeline, options
        self.modality = options.modality or _modality_of(pipeline)
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        calls = inspect.signature(type(pipeline).__call__).parameters
        if denoiser is None or "prompt_embeds" not in calls or getattr(pipeline, "vae", None) is None:
            raise ComponentLoadError(
                f"decoder {NAME!r}: {type(pipeline).__name__} from {options.model!r} is not a latent-diffusion "
                "pipeline taking prompt_embeds"
            )
        if "FlowMatch" in type(pipeline.scheduler).__name__:
            raise ComponentLoadError(
                f"decoder {NAME!r}: {type(pipeline).__name__} trains by flow matching; this decoder trains "
                "DDPM-style pipelines (SD-1.x/2.x, SDXL, PixArt, AudioLDM, MusicLDM, TextToVideoSD)"
            )
        self.unet = denoiser
        self.frozen_parts = tuple(p for p in _FROZEN if isinstance(getattr(pipeline, p, None), torch.nn.Module))
        for part in self.frozen_parts:
            setattr(self, part, getattr(pipeline, part))
        self.takes_pooled = "pooled_prompt_embeds" in calls
        self.takes_mask = "prompt_attention_mask" in calls
        self.train_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self._size(options)
        self.to(resolve_device(options.device))

        with torch.no_grad():  # the pipeline's unconditional input, and the condition's shape
            empty = self._encode([""])
        if getattr(pipeline.config, "force_zeros_for_empty_prompt", False):
            empty = {k: torch.zeros_like(v) if "embeds" in k else v for k, v in empty.items()}
        self._negative_names = [f"negative_{k}" for k in empty]
        for key, value in empty.items():  # buffers: they move with the module
            self.register_buffer(f"negative_{key}", value, persistent=False)
        embeds = empty["prompt_embeds"]
        tokens, dim = (1, embeds.shape[-1]) if embeds.dim() == 2 else tuple(embeds.shape[1:])
        if self.takes_pooled:
            if empty["pooled_prompt_embeds"].shape[-1] > dim:
                raise ComponentLoadError(f"decoder {NAME!r}: the pooled embedding is wider than the text hidden states")
            tokens += 1  # the pooled embedding, zero-padded, as one more token
        self.condition = ConditionSpec(tokens=int(tokens), dim=int(dim))
        self.set_trainable(options.trainable)
        self.train(False)

    @classmethod
    def from_options(cls, options: DiffusersPipelineOptions) -> PromptEmbedsDecoder:
        import diffusers

        pipeline_cls = diffusers.DiffusionPipeline
        if options.pipeline is not None:
            pipeline_cls = getattr(diffusers, options.pipeline, None)
            if not (isinstance(pipeline_cls, type) and issubclass(pipeline_cls, diffusers.DiffusionPipeline)):
                raise ComponentLoadError(f"decoder {NAME!r}: options pipeline {options.pipeline!r} is no diffusers pipeline class")
        return cls(cls.load_pipeline(pipeline_cls, NAME, options), options)

    def _size(self, options: DiffusersPipelineOptions) -> None:
        pipe = self.pipeline
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        sample = self.unet.config.sample_size
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        self.height = options.height or sample * scale
        self.width = options.width or sample * scale
        if self.modality == "audio":
            self.mel = MelSettings.from_vocoder(pipe.vocoder.config)
            frame_seconds = self.mel.hop / self.mel.sample_rate
            # the pipeline's length arithmetic: whole latent rows of hop-sample mel frames
            self.audio_length_in_s = options.audio_length_in_s or sample * scale * frame_seconds
            self.frames = int(np.ceil(int(self.audio_length_in_s / frame_seconds) / scale)) * scale
            self.register_buffer("mel_filters", self.mel.filters(), persistent=False)

    # --- conditioning ---------------------------------------------------------------------------

    def _encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """The pipeline's own text encoding of ``captions``, as its ``__call__`` keywords."""
        pipe = self.pipeline
        encode = getattr(pipe, "encode_prompt", None) or pipe._encode_prompt
        params = inspect.signature(encode).parameters
        kwargs: dict[str, Any] = {"prompt": captions, "device": self.device, "do_classifier_free_guidance": False}
        kwargs.update({p: 1 for p in params if p.startswith("num_") and p.endswith("_per_prompt")})
        if "clean_caption" in params:
            kwargs["clean_caption"] = False  # PixArt's caption cleaning needs bs4 and ftfy
        out = encode(**{k: v for k, v in kwargs.items() if k in params})
        if isinstance(out, torch.Tensor):
            return {"prompt_embeds": out}
        found = {"prompt_embeds": out[0]}
        if self.takes_pooled:  # SDXL: (embeds, negative, pooled, negative pooled)
            found["pooled_prompt_embeds"] = out[2]
        if self.takes_mask:  # PixArt: (embeds, mask, negative, negative mask)
            found["prompt_attention_mask"] = out[1]
        return found

    @property
    def _negative(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._negative_names}

    def _pack(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = encoded["prompt_embeds"]
        embeds = embeds[:, None] if embeds.dim() == 2 else embeds
        if self.takes_pooled:
            pooled = encoded["pooled_prompt_embeds"]
            embeds = torch.cat([embeds, F.pad(pooled, (0, embeds.shape[-1] - pooled.shape[-1]))[:, None]], 1)
        return embeds

    def _unpack(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cond [B, N, D]`` as the pipeline's keywords (the inverse of :meth:`_pack`)."""
        dtype = self._negative["negative_prompt_embeds"].dtype
        cond = cond.to(self.device, dtype)
        if self._negative["negative_prompt_embeds"].dim() == 2:
            return {"prompt_embeds": cond[:, 0]}
        if self.takes_pooled:
            width = self._negative["negative_pooled_prompt_embeds"].shape[-1]
            return {"prompt_embeds": cond[:, :-1], "pooled_prompt_embeds": cond[:, -1, :width]}
        found = {"prompt_embeds": cond}
        if self.takes_mask:  # every conditioning token is attended
            found["prompt_attention_mask"] = torch.ones(cond.shape[:2], dtype=torch.long, device=self.device)
        return found

    # --- targets as latents ---------------------------------------------------------------------

    def _wave(self, item: Media) -> np.ndarray:
        from codi2.core.audio import resample

        data = np.asarray(item.data, dtype=np.float32)
        if data.ndim != 1 or data.size == 0 or not item.sample_rate:
            raise MediaError(f"audio must be a non-empty 1-D wave with a sample_rate, got shape {data.shape}", item=item.label)
        wave = normalize_wave(resample(data, int(item.sample_rate), self.mel.sample_rate))[: self.frames * self.mel.hop]
        return np.pad(wave, (0, self.frames * self.mel.hop - len(wave)))

    @torch.no_grad()
    def _latents(self, media: Sequence[Media], generator: torch.Generator | None) -> torch.Tensor:
        for item in media:
            check_media(NAME, item, self.modality)
        vae = self.vae
        if self.modality == "audio":  # the VAE's input is the log-mel spectrogram [B, 1, frames, mels]
            waves = torch.from_numpy(np.stack([self._wave(m) for m in media])).to(self.device)
            pixels = log_mel(waves, self.mel, self.mel_filters)[:, None, : self.frames]
        elif self.modality == "video":  # every frame through the 2D VAE, as the pipeline decodes them
            pixels = torch.stack([video_tensor(m, self.options.num_frames, self.height, self.width) for m in media]).flatten(0, 1)
        else:
            from PIL import Image

            for m in media:
                if np.asarray(m.data).dtype != np.uint8 or np.asarray(m.data).ndim != 3:
                    raise MediaError(f"image must be uint8 [H, W, 3], got {np.asarray(m.data).dtype} {np.asarray(m.data).shape}", item=m.label)
            images = [Image.fromarray(np.asarray(m.data)) for m in media]
            pixels = self.pipeline.image_processor.preprocess(images, height=self.height, width=self.width)
        latents = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.sample(generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents - shift) * vae.config.scaling_factor
        if self.modality == "video":
            latents = latents.unflatten(0, (len(media), self.options.num_frames)).permute(0, 2, 1, 3, 4)
        return latents

    def _predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """The denoiser's output, conditioned the way the pipeline's sampling loop conditions it."""
        embeds, dtype = cond["prompt_embeds"], self.unet.dtype
        if self.takes_mask:  # PixArt's transformer, with its micro-conditions at 1024 px
            added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
            if self.unet.config.sample_size == 128:
                rows = len(noisy)
                added = {"resolution": torch.tensor([[self.height, self.width]] * rows, dtype=dtype, device=noisy.device),
                         "aspect_ratio": torch.tensor([[self.height / self.width]] * rows, dtype=dtype, device=noisy.device)}  # fmt: skip
            out = self.unet(noisy, encoder_hidden_states=embeds.to(dtype), encoder_attention_mask=cond["prompt_attention_mask"],
                            timestep=t, added_cond_kwargs=added, return_dict=False)[0]  # fmt: skip
            return out.chunk(2, dim=1)[0] if out.shape[1] == 2 * noisy.shape[1] else out  # learned sigma
        if getattr(self.unet.config, "class_embed_type", None) == "simple_projection":  # AudioLDM, MusicLDM
            return self.unet(noisy, t, encoder_hidden_states=None, class_labels=embeds.to(dtype), return_dict=False)[0]
        kwargs: dict[str, Any] = {}
        if self.takes_pooled:  # SDXL: pooled text embedding and (original size, crop, target size)
            pooled = cond["pooled_prompt_embeds"]
            size = (self.height, self.width)
            time_ids = self.pipeline._get_add_time_ids(size, (0, 0), size, dtype=dtype, text_encoder_projection_dim=pooled.shape[-1])
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(noisy.device).repeat(len(noisy), 1)}
        return self.unet(noisy, t, encoder_hidden_states=embeds.to(dtype), return_dict=False, **kwargs)[0]

    # --- the Decoder interface ------------------------------------------------------------------

    @torch.no_grad()
    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        """The pipeline's encoding of each item's ``meta["caption"]`` ``[B, tokens, dim]`` (float32)."""
        captions = []
        for item in media:
            check_media(NAME, item, self.modality)
            caption = item.meta.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise MediaError(
                    f"decoder {NAME!r} needs a caption for target features (the pipeline is conditioned on text): "
                    "set media.meta['caption']",
                    item=item.label,
                )
            captions.append(caption)
        return self._pack(self._encode(captions)).float()

    def diffusion_loss(
        self,
        cond: torch.Tensor,
        media: Sequence[Media],
        reference: Sequence[Media | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The pipeline's denoising objective on the targets' latents, conditioned on ``cond``."""
        check_no_reference(NAME, reference)
        check_cond(NAME, cond, self.condition.tokens, self.condition.dim, batch=len(media))
        latents = self._latents(media, generator)
        noise, t = noise_and_timesteps(latents, self.train_scheduler.config.num_train_timesteps, generator)
        noisy = self.train_scheduler.add_noise(latents, noise, t)
        pred = self._predict(noisy, t, self._unpack(cond))
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
        """One item per row of ``cond``: the stock pipeline called with ``cond`` as its text
        conditioning and its own empty-prompt encoding as the unconditional input."""
        check_no_reference(NAME, reference)
        check_cond(NAME, cond, self.condition.tokens, self.condition.dim)
        return self.render(self._unpack(cond), steps=steps, guidance=guidance, generator=generator, on_step=on_step)

    def render(self, conditioning: dict[str, torch.Tensor], *, steps: int | None = None, guidance: float | None = None,
               generator: torch.Generator | None = None, on_step: Any = None) -> list[Media]:  # fmt: skip
        """The stock pipeline's call for precomputed keywords (``prompt_embeds`` ...)."""
        rows = len(conditioning["prompt_embeds"])
        kwargs = {**{k: v.expand(rows, *v.shape[1:]) for k, v in self._negative.items()}, **conditioning}
        calls = inspect.signature(type(self.pipeline).__call__).parameters
        guidance = self.options.guidance if guidance is None else guidance
        if guidance is not None:
            kwargs["guidance_scale"] = guidance
        if self.modality == "audio":
            kwargs["audio_length_in_s"] = self.audio_length_in_s
        else:
            kwargs.update(height=self.height, width=self.width)
        if self.modality == "video":
            kwargs["num_frames"] = self.options.num_frames
        if "negative_prompt" in calls:
            kwargs["negative_prompt"] = None  # PixArt defaults it to "", which clashes with the embeddings
        if "use_resolution_binning" in calls:
            kwargs["use_resolution_binning"] = False  # render at the configured size, as trained
        kwargs.update(self.options.call_options)
        kwargs.update(step_callback(on_step, steps or self.options.steps, self.pipeline))
        out = self.pipeline(num_inference_steps=steps or self.options.steps, generator=generator, output_type="np", **kwargs)
        if self.modality == "audio":
            rate = self.mel.sample_rate
            return [Media("audio", np.clip(a, -1, 1).astype(np.float32), sample_rate=rate) for a in out.audios]
        if self.modality == "video":
            videos = (np.asarray(out.frames) * 255).round().clip(0, 255).astype(np.uint8)
            return [Media("video", v, fps=float(self.options.fps)) for v in videos]
        images = (np.asarray(out.images) * 255).round().clip(0, 255).astype(np.uint8)
        return [Media("image", image) for image in images]
